/// `routing.verify_credentials`: whether mailswitch checks a password itself before any store
/// sees it. With it on, a wrong password never reaches a store (whose own lockout and
/// per-address penalty would otherwise punish every good user behind the same address), and a
/// store may be logged in to with master credentials (`login: master`).
public struct CredentialCheck: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// The store checks the password, as before mailswitch.
        case none
        /// A simple bind as the user's directory entry, on connections of a pool of its own.
        case ldapBind = "ldap_bind"
    }

    public var mode = Mode.none
    /// `verify_cache_ttl`: how long a password the directory accepted is taken again without a
    /// bind (0, the default: always bind). Only a salted hash is kept, never the password.
    public var cacheTTL: Double = 0
    /// `verify_connections`: binds in flight at once (LDAP allows one per connection).
    public var connections = 4
    /// `oauth_introspection_url`: bearer tokens are checked here (RFC 7662) before routing;
    /// nil leaves them to the store.
    public var introspectionURL: String?
    /// `oauth_client_id` and the contents of `oauth_client_secret_file`: how mailswitch
    /// authenticates to the introspection endpoint (HTTP Basic), when it asks.
    public var introspectionClientID: String?
    public var introspectionClientSecret: String?

    public init() {}

    public var isOn: Bool { mode != .none }
}

/// What the directory said about a password.
public enum CredentialVerdict: Sendable, Equatable {
    case accepted
    /// The directory refused it (wrong password, or an entry that cannot bind): a failed login.
    case refused(reason: String)
    /// The directory could not say: a temporary failure, never a refusal.
    case unavailable(reason: String)
}

/// Passwords the directory accepted recently, by entry, as a keyed hash of the password
/// (`verify_cache_ttl`). Pure, with time passed in; the proxy computes the hash with a key
/// made at start-up, so the cache holds nothing a password can be read back from, and a
/// restart forgets it all.
public struct VerifiedPasswords: Sendable {
    private struct Entry: Sendable {
        var digest: [UInt8]
        var expiresAt: Double
    }

    public let ttl: Double
    public let maxEntries: Int
    private var entries: [String: Entry] = [:]

    public init(ttl: Double, maxEntries: Int = 200_000) {
        self.ttl = ttl
        self.maxEntries = maxEntries
    }

    public var count: Int { entries.count }

    /// Whether this entry's password, hashed to `digest`, was accepted within the TTL.
    public func accepts(dn: String, digest: [UInt8], now: Double) -> Bool {
        guard let entry = entries[dn.lowercased()], now < entry.expiresAt else { return false }
        return entry.digest == digest
    }

    public mutating func remember(dn: String, digest: [UInt8], now: Double) {
        guard ttl > 0 else { return }
        if entries.count >= maxEntries, entries[dn.lowercased()] == nil { purge(now: now) }
        // Still full of live entries: the oldest-expiring goes (a burst of new users costs
        // binds, never memory).
        if entries.count >= maxEntries, let soonest = entries.min(by: { $0.value.expiresAt < $1.value.expiresAt }) {
            entries[soonest.key] = nil
        }
        entries[dn.lowercased()] = Entry(digest: digest, expiresAt: now + ttl)
    }

    /// The entry changed (a new password, say): bind again next time.
    public mutating func forget(dn: String) {
        entries[dn.lowercased()] = nil
    }

    public mutating func purge(now: Double) {
        entries = entries.filter { now < $0.value.expiresAt }
    }
}
