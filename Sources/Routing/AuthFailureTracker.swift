/// Failed logins per client address and per user over a sliding window, so password guessing
/// is refused before it reaches a store (`NO [UNAVAILABLE]` / `-ERR [SYS/TEMP]`).
///
/// - An address with `maxPerAddress` failures within `window` is refused until the oldest of
///   them leaves the window.
/// - A user with `maxPerUser` failures within `window` is refused likewise, except from an
///   address the user logged in from successfully within `trustedFor`: a bot guessing one
///   user's password from many addresses must not lock the real user out of the client that
///   already knows the password. Refused attempts are not failures (no password was tried),
///   so a lock ends at most `window` after the last counted failure.
///
/// Memory is bounded: each key keeps at most its limit's timestamps, and each table at most
/// `maxKeys` keys (beyond that, keys whose failures all left the window are dropped first,
/// then the oldest). A pure value with time passed in; the proxy keeps one under a lock.
public struct AuthFailureTracker: Sendable {
    public struct Settings: Sendable, Equatable {
        public var maxPerAddress: Int
        public var maxPerUser: Int
        public var window: Double
        public var trustedFor: Double
        public var maxKeys: Int

        public init(maxPerAddress: Int = 20, maxPerUser: Int = 10, window: Double = 300, trustedFor: Double = 86_400,
                    maxKeys: Int = 100_000) {
            self.maxPerAddress = maxPerAddress
            self.maxPerUser = maxPerUser
            self.window = window
            self.trustedFor = trustedFor
            self.maxKeys = maxKeys
        }
    }

    public enum Refusal: String, Sendable, CaseIterable {
        case address = "auth_failures_per_ip"
        case user = "auth_failures_per_user"
    }

    /// Timestamps of recent failures, oldest first, at most `limit` of them.
    private struct Failures {
        var times: [Double] = []
        mutating func add(_ now: Double, limit: Int) {
            times.append(now)
            if times.count > limit { times.removeFirst(times.count - limit) }
        }
        func count(since start: Double) -> Int { times.reduce(0) { $0 + ($1 > start ? 1 : 0) } }
        var last: Double { times.last ?? -.infinity }
    }

    private struct GoodLogins {
        /// Address -> when the user last logged in from it; at most `goodAddressesPerUser`.
        var addresses: [String: Double] = [:]
    }

    private static let goodAddressesPerUser = 8

    public var settings: Settings
    private var byAddress: [String: Failures] = [:]
    private var byUser: [String: Failures] = [:]
    private var good: [String: GoodLogins] = [:]

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// Whether a login attempt by `user` from `address` is refused now.
    public func check(address: String, user: String, now: Double) -> Refusal? {
        let start = now - settings.window
        if let failures = byAddress[address], failures.count(since: start) >= settings.maxPerAddress { return .address }
        let key = Self.userKey(user)
        if let failures = byUser[key], failures.count(since: start) >= settings.maxPerUser {
            if let at = good[key]?.addresses[address], now - at <= settings.trustedFor { return nil }
            return .user
        }
        return nil
    }

    /// A login failed because the password (or the user) was wrong.
    public mutating func failed(address: String, user: String, now: Double) {
        Self.record(&byAddress, address, now, limit: settings.maxPerAddress, settings: settings)
        Self.record(&byUser, Self.userKey(user), now, limit: settings.maxPerUser, settings: settings)
    }

    /// A login succeeded: the address is trusted for this user. Its failures are not
    /// forgiven: one account of its own would otherwise let a sprayer guess on without end.
    public mutating func succeeded(address: String, user: String, now: Double) {
        let key = Self.userKey(user)
        var entry = good[key] ?? GoodLogins()
        entry.addresses[address] = now
        if entry.addresses.count > Self.goodAddressesPerUser,
           let oldest = entry.addresses.min(by: { $0.value < $1.value })?.key {
            entry.addresses[oldest] = nil
        }
        if good[key] == nil, good.count >= settings.maxKeys {
            Self.evict(&good, keep: settings.maxKeys * 9 / 10) { entry in entry.addresses.values.max() ?? -.infinity }
        }
        good[key] = entry
    }

    /// Keys tracked (for tests and the bound).
    public var trackedKeys: (addresses: Int, users: Int, good: Int) { (byAddress.count, byUser.count, good.count) }

    /// Logins compare user names without case, as the directory does; a name longer than any
    /// real one is cut, so a table of attackers' inventions stays small.
    private static func userKey(_ user: String) -> String { String(user.lowercased().prefix(256)) }

    private static func record(_ table: inout [String: Failures], _ key: String, _ now: Double, limit: Int,
                               settings: Settings) {
        if table[key] == nil, table.count >= settings.maxKeys {
            // Down to 90 % at once, so that a flood of new keys costs one pass per 10 % of
            // the table, not one per key.
            let start = now - settings.window
            table = table.filter { $0.value.last > start }
            let keep = settings.maxKeys * 9 / 10
            if table.count > keep { evict(&table, keep: keep) { $0.last } }
        }
        table[key, default: Failures()].add(now, limit: max(1, limit))
    }

    /// Keeps the `keep` entries of youngest `age`. Rare (once per 10 % of a full table), so
    /// a sort is fine.
    private static func evict<V>(_ table: inout [String: V], keep: Int, age: (V) -> Double) {
        let sorted = table.sorted { age($0.value) > age($1.value) }
        table = Dictionary(uniqueKeysWithValues: sorted.prefix(max(0, keep)).map { ($0.key, $0.value) })
    }
}
