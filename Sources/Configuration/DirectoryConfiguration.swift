import Routing

public struct DirectoryConfiguration: Sendable, Equatable {
    public var uris: [String]
    public var bindDN: String?
    /// Read at start-up; never logged.
    public var bindPassword: String?
    public var base: String
    public var filter: String
    public var backendAttribute: String
    /// Per request, and for connecting.
    public var timeoutSeconds: Double
    /// Requests outstanding on one LDAP connection before more wait in a queue.
    public var maxInFlight: Int
    public var cache = RouteCacheSettings()
    public var changeFeed = ChangeFeedMode.auto
    /// Poll mode: how often the routes of users with open sessions are looked up again.
    public var recheckIntervalSeconds: Double = 60
    /// Keep the whole login → route map in memory from the change feed and answer logins
    /// from it (`DirectoryReplica`).
    public var replica = false
    /// Further attributes every lookup fetches: those the backends' `login_name: { attribute: … }`
    /// name (set from the backends, not a key of its own).
    public var entryAttributes: [String] = []

    public init(uris: [String], bindDN: String?, bindPassword: String?, base: String, filter: String,
                backendAttribute: String, timeoutSeconds: Double, maxInFlight: Int = 100) {
        self.uris = uris
        self.bindDN = bindDN
        self.bindPassword = bindPassword
        self.base = base
        self.filter = filter
        self.backendAttribute = backendAttribute
        self.timeoutSeconds = timeoutSeconds
        self.maxInFlight = maxInFlight
    }
}

/// How the proxy learns that a user's route changed (see the example configuration).
public enum ChangeFeedMode: String, Sendable, CaseIterable {
    /// RFC 4533 when the server offers it, else poll.
    case auto
    /// RFC 4533 refreshAndPersist only.
    case sync
    /// Look up the users with open sessions again every `recheck_interval`.
    case poll
    /// Routes change at the next login only.
    case off
}
