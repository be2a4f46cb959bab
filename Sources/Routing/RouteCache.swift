/// Directory answers by login name, with time passed in (no clock here).
///
/// - Answers that name an entry with a route are kept for `ttl`; refusals and "no such
///   entry / no attribute" (which route to the default backend) for `negativeTTL`.
/// - One search per user at a time: a lookup that finds a search in flight waits for it.
/// - While the directory cannot answer, an expired answer younger than `staleTTL` is served.
/// - `invalidate` makes a search already in flight for that user count for nothing: its
///   answer may predate the change, so it is searched again rather than cached or delivered.
///   A cached route never outlives the change that invalidated it.
///
/// `Waiter` is whatever the driver needs to resume a lookup (a completion closure).
public struct RouteCache<Waiter> {
    public struct Entry: Sendable, Equatable {
        public var result: DirectoryResult
        public var storedAt: Double
    }

    public enum Step {
        /// A fresh cached answer: no search.
        case answer(DirectoryResult, RouteSource)
        /// Search the directory now, then call `complete` with the generation given.
        case search(generation: Int)
        /// A search for this user is in flight: the waiter was queued behind it.
        case wait
    }

    public enum Completion {
        /// Hand `result` to every waiter.
        case deliver(DirectoryResult, RouteSource, [Waiter])
        /// The answer predates an invalidation: search again with the new generation; the
        /// waiters stay queued.
        case searchAgain(generation: Int)
    }

    private struct Flight {
        var generation: Int
        var waiters: [Waiter]
        /// An invalidation came while this search was out.
        var invalidated = false
        var retries = 0
    }

    public let settings: RouteCacheSettings
    private var entries: [String: Entry] = [:]
    private var flights: [String: Flight] = [:]
    private var nextGeneration = 1
    /// Entry DN (lower-cased) -> login keys whose cached answer names it.
    private var keysByDN: [String: Set<String>] = [:]

    public init(settings: RouteCacheSettings) {
        self.settings = settings
    }

    public var count: Int { entries.count }

    /// A lookup by `key`, queuing `waiter` unless a fresh answer is at hand.
    public mutating func lookup(_ key: String, now: Double, waiter: Waiter) -> Step {
        if let entry = entries[key], now - entry.storedAt < lifetime(of: entry.result) {
            return .answer(entry.result, .cache(age: now - entry.storedAt))
        }
        if flights[key] != nil {
            flights[key]!.waiters.append(waiter)
            return .wait
        }
        let generation = takeGeneration()
        flights[key] = Flight(generation: generation, waiters: [waiter])
        return .search(generation: generation)
    }

    /// The directory answered the search of `generation` for `key`.
    public mutating func complete(_ key: String, generation: Int, result: DirectoryResult, now: Double) -> Completion {
        guard var flight = flights[key], flight.generation == generation else {
            // A search overtaken by another (after an invalidation): nobody waits for it.
            return .deliver(result, .directory, [])
        }
        // Invalidated while in flight: this answer may predate the change. Bounded, so a
        // storm of changes to one entry cannot keep its logins waiting for ever.
        if flight.invalidated && flight.retries < 3 {
            flight.invalidated = false
            flight.retries += 1
            flight.generation = takeGeneration()
            flights[key] = flight
            return .searchAgain(generation: flight.generation)
        }
        flights[key] = nil
        if case .unavailable = result {
            if let entry = entries[key], now - entry.storedAt < settings.staleTTL {
                return .deliver(entry.result, .stale(age: now - entry.storedAt), flight.waiters)
            }
            return .deliver(result, .directory, flight.waiters)
        }
        if !flight.invalidated { store(key, result, now: now) }
        return .deliver(result, .directory, flight.waiters)
    }

    /// Forgets `key`'s answer; a search in flight for it will be repeated.
    public mutating func invalidate(_ key: String) {
        if let entry = entries.removeValue(forKey: key) { unindex(key, entry.result) }
        flights[key]?.invalidated = true
    }

    /// Forgets every key whose answer named the entry `dn`; returns those keys.
    public mutating func invalidate(dn: String) -> Set<String> {
        let keys = keysByDN[dn.lowercased()] ?? []
        for key in keys { invalidate(key) }
        return keys
    }

    /// Forgets everything (after a change feed reconnects, when changes may have been missed).
    public mutating func invalidateAll() {
        for key in Array(entries.keys) + Array(flights.keys) { invalidate(key) }
    }

    /// The cached answer for `key` and its age, fresh or not (for `mailswitch route`).
    public func peek(_ key: String, now: Double) -> (entry: Entry, fresh: Bool)? {
        guard let entry = entries[key] else { return nil }
        return (entry, now - entry.storedAt < lifetime(of: entry.result))
    }

    public func contains(_ key: String) -> Bool { entries[key] != nil }

    /// Drops entries too old even to stand in for a failed directory.
    public mutating func purge(now: Double) {
        let horizon = max(settings.staleTTL, settings.ttl, settings.negativeTTL)
        for (key, entry) in entries where now - entry.storedAt >= horizon {
            entries[key] = nil
            unindex(key, entry.result)
        }
    }

    // MARK: -

    private func lifetime(of result: DirectoryResult) -> Double {
        if case .found(_, .some, _) = result { return settings.ttl }
        return settings.negativeTTL
    }

    private mutating func takeGeneration() -> Int {
        defer { nextGeneration += 1 }
        return nextGeneration
    }

    private mutating func store(_ key: String, _ result: DirectoryResult, now: Double) {
        if case .unavailable = result { return }
        if let old = entries[key] { unindex(key, old.result) }
        if entries.count >= settings.maxEntries, entries[key] == nil, let oldest = entries.min(by: { $0.value.storedAt < $1.value.storedAt }) {
            entries[oldest.key] = nil
            unindex(oldest.key, oldest.value.result)
        }
        entries[key] = Entry(result: result, storedAt: now)
        if case .found(let dn, _, _) = result { keysByDN[dn.lowercased(), default: []].insert(key) }
    }

    private mutating func unindex(_ key: String, _ result: DirectoryResult) {
        guard case .found(let dn, _, _) = result else { return }
        let index = dn.lowercased()
        keysByDN[index]?.remove(key)
        if keysByDN[index]?.isEmpty == true { keysByDN[index] = nil }
    }
}

/// How long directory answers are kept (see `RouteCache`).
public struct RouteCacheSettings: Sendable, Equatable {
    public var ttl: Double
    public var negativeTTL: Double
    public var staleTTL: Double
    /// Entries kept at most; the oldest go first when full.
    public var maxEntries: Int

    public init(ttl: Double = 60, negativeTTL: Double = 10, staleTTL: Double = 3600, maxEntries: Int = 1_000_000) {
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.staleTTL = staleTTL
        self.maxEntries = maxEntries
    }
}

/// Where an answer came from, for `mailswitch route` and the metrics.
public enum RouteSource: Sendable, Equatable {
    case directory
    case cache(age: Double)
    /// The directory failed; this expired answer stood in.
    case stale(age: Double)
}

/// The key a login name is cached and indexed under: LDAP matches the usual login attributes
/// (uid, mail) without regard to case, so `Alice` and `alice` are one user.
public enum UserKey {
    public static func of(_ user: String) -> String { user.lowercased() }
}
