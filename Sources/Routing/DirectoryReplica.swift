/// The whole login → route map of the directory, kept in memory from the change feed
/// (`directory.replica: true`): only the entries' DNs, their login values (the filter's
/// attributes compared with `%u`), which of the filter's fixed equalities they meet (a bit
/// each: `(objectClass=inetOrgPerson)`), and their backend attribute. Logins are answered from it with no LDAP round
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
        /// Each login value, lower-cased, with the index of the attribute it is a value of.
        var logins: [(attribute: UInt8, value: String)]
        /// Bit i: the entry meets the filter's i-th fixed equality.
        var fixed: UInt64
        var backendValue: String?
        /// The attributes a store's `login_name` names (`DirectoryResult.attributes`).
        var extra: [String: String]

        var loginKeys: [String] { Array(Set(logins.map(\.value))).sorted() }
    }

    /// The filter with its attributes numbered: what `lookup` evaluates per candidate entry.
    private indirect enum Compiled: Sendable {
        case login(Int)
        case fixed(Int)
        case and([Compiled])
        case or([Compiled])

        func matches(logins: UInt64, fixed: UInt64) -> Bool {
            switch self {
            case .login(let index): return logins & (1 << UInt64(index)) != 0
            case .fixed(let index): return fixed & (1 << UInt64(index)) != 0
            case .and(let parts): return parts.allSatisfy { $0.matches(logins: logins, fixed: fixed) }
            case .or(let parts): return parts.contains { $0.matches(logins: logins, fixed: fixed) }
            }
        }
    }

    /// Lower-cased login attribute names, in the order their indexes follow.
    private let loginAttributes: [String]
    /// The fixed equalities (attribute lower-cased, value lower-cased), one bit each.
    private let fixedEqualities: [(attribute: String, value: String)]
    private let compiled: Compiled

    /// By entry key (the entryUUID).
    private var entries: [String: Entry] = [:]
    /// Login value -> the key of the one entry holding it.
    private var byLogin: [String: String] = [:]
    /// The rare login values that more than one entry holds, with all of their keys.
    private var shared: [String: Set<String>] = [:]

    /// At most 64 fixed equalities and 255 login attributes (`ConfigLoader` refuses more).
    public init(filter: ReplicaFilter) {
        loginAttributes = filter.loginAttributes.map { $0.lowercased() }
        var fixed: [(attribute: String, value: String)] = []
        func compile(_ filter: ReplicaFilter, _ logins: [String]) -> Compiled {
            switch filter {
            case .equalsLogin(let attribute):
                return .login(logins.firstIndex(of: attribute.lowercased()) ?? 0)
            case .equals(let attribute, let value):
                let equality = (attribute.lowercased(), value.lowercased())
                if let index = fixed.firstIndex(where: { $0 == equality }) { return .fixed(index) }
                fixed.append(equality)
                return .fixed(fixed.count - 1)
            case .and(let parts): return .and(parts.map { compile($0, logins) })
            case .or(let parts): return .or(parts.map { compile($0, logins) })
            }
        }
        compiled = compile(filter, loginAttributes)
        fixedEqualities = fixed
    }

    public var count: Int { entries.count }

    /// Adds or replaces the entry `key` names (its DN may have changed). `attributes`: the
    /// entry's values of the filter's attributes, by name in any case; `entryAttributes`: the
    /// first value of each further attribute a lookup answers with, keyed in lower case.
    public mutating func upsert(key: String, dn: String, attributes: [String: [String]], backendValue: String?,
                                entryAttributes: [String: String] = [:]) {
        remove(key: key)
        var values: [String: Set<String>] = [:]
        for (name, list) in attributes { values[name.lowercased(), default: []].formUnion(list.map { $0.lowercased() }) }
        var logins: [(attribute: UInt8, value: String)] = []
        for (index, name) in loginAttributes.enumerated() {
            for value in (values[name] ?? []).sorted() { logins.append((UInt8(truncatingIfNeeded: index), value)) }
        }
        // An entry no login reaches (an organizational unit, a group) is not kept.
        guard !logins.isEmpty else { return }
        var fixed: UInt64 = 0
        for (index, equality) in fixedEqualities.enumerated() where values[equality.attribute]?.contains(equality.value) == true {
            fixed |= 1 << UInt64(index)
        }
        let entry = Entry(dn: dn, logins: logins, fixed: fixed, backendValue: backendValue, extra: entryAttributes)
        entries[key] = entry
        for login in entry.loginKeys {
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

    /// What a search with the filter would have answered: the entries holding the login
    /// value are the candidates, and each is matched against the whole filter.
    public func lookup(_ user: String) -> DirectoryResult {
        let login = user.lowercased()
        let candidates = shared[login].map(Array.init) ?? byLogin[login].map { [$0] } ?? []
        let matching = candidates.compactMap { entries[$0] }.filter { entry in
            var holding: UInt64 = 0
            for (attribute, value) in entry.logins where value == login { holding |= 1 << UInt64(attribute) }
            return compiled.matches(logins: holding, fixed: entry.fixed)
        }
        switch matching.count {
        case 0: return .notFound
        case 1: return .found(dn: matching[0].dn, backendValue: matching[0].backendValue, attributes: matching[0].extra)
        default: return .ambiguous(count: matching.count)
        }
    }

    /// The login values of an entry (to find the users a change concerns).
    public func loginValues(key: String) -> [String] {
        entries[key]?.loginKeys ?? []
    }
}
