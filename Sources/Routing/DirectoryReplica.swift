/// The whole login → route map of the directory, kept in memory from the change feed
/// (`directory.replica: true`): only the entries' DNs, their login values (the filter's
/// attributes) and their backend attribute. Logins are answered from it with no LDAP round
/// trip, and every user keeps routing while every LDAP server is down.
///
/// Entries are keyed by what names them for good: the change feed's entryUUID (a rename or a
/// move to another OU arrives as a change of the same UUID under its new DN, with no deletion
/// of the old DN). Login values are compared without case, as `uid` and `mail` are in LDAP
/// (caseIgnore matching); two entries with the same value make the login ambiguous, as a
/// search would. A pure value; the directory keeps one under a lock.
public struct DirectoryReplica: Sendable {
    private struct Entry: Sendable {
        var dn: String
        var loginKeys: [String]
        var backendValue: String?
    }

    /// By entry key (the entryUUID).
    private var entries: [String: Entry] = [:]
    /// Login value -> the key of the one entry holding it.
    private var byLogin: [String: String] = [:]
    /// The rare login values that more than one entry holds, with all of their keys.
    private var shared: [String: Set<String>] = [:]

    public init() {}

    public var count: Int { entries.count }

    /// Adds or replaces the entry `key` names (its DN may have changed).
    public mutating func upsert(key: String, dn: String, loginValues: [String], backendValue: String?) {
        remove(key: key)
        // An entry no login reaches (an organizational unit, a group) is not kept.
        guard !loginValues.isEmpty else { return }
        let logins = Array(Set(loginValues.map { $0.lowercased() })).sorted()
        entries[key] = Entry(dn: dn, loginKeys: logins, backendValue: backendValue)
        for login in logins {
            if var holders = shared[login] {
                holders.insert(key)
                shared[login] = holders
            } else if let other = byLogin[login], other != key {
                shared[login] = [other, key]
                byLogin[login] = nil
            } else {
                byLogin[login] = key
            }
        }
    }

    public mutating func remove(key: String) {
        guard let old = entries.removeValue(forKey: key) else { return }
        for login in old.loginKeys {
            if var holders = shared[login] {
                holders.remove(key)
                if holders.count == 1, let last = holders.first {
                    shared[login] = nil
                    byLogin[login] = last
                } else {
                    shared[login] = holders
                }
            } else if byLogin[login] == key {
                byLogin[login] = nil
            }
        }
    }

    /// What a search with the filter would have answered.
    public func lookup(_ user: String) -> DirectoryResult {
        let login = user.lowercased()
        if let holders = shared[login] { return .ambiguous(count: holders.count) }
        guard let key = byLogin[login], let entry = entries[key] else { return .notFound }
        return .found(dn: entry.dn, backendValue: entry.backendValue)
    }

    /// The login values of an entry (to find the users a change concerns).
    public func loginValues(key: String) -> [String] {
        entries[key]?.loginKeys ?? []
    }
}
