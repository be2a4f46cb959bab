import Routing
import Synchronization

/// `directory.replica: true`: logins are answered from a `DirectoryReplica` the change feed
/// keeps, with no LDAP round trip; until the feed's first full refresh is complete (and if the
/// server offers no feed), the LDAP directory answers as usual.
///
/// The feed rebuilds the replica from a full refresh at every (re)connect, into a second copy
/// that replaces the first when the refresh is complete: entries deleted while the feed was
/// away cannot linger, and logins keep being answered from the old copy meanwhile (memory is
/// twice the replica's for the length of a refresh).
public final class ReplicaDirectory: Directory, Sendable {
    private struct State {
        var current: DirectoryReplica?
        var building: DirectoryReplica?
    }

    private let state = Mutex(State())
    private let fallback: any Directory
    private let filter: ReplicaFilter
    /// Every attribute the replica needs of an entry: the filter's, the login ones first.
    /// Worked out once: the feed asks for it with every entry of a full refresh.
    public let filterAttributes: [String]

    public init(fallback: any Directory, filter: ReplicaFilter) {
        self.fallback = fallback
        self.filter = filter
        filterAttributes = filter.loginAttributes + filter.fixedAttributes
    }

    public func lookup(_ user: String, completion: @escaping @Sendable (DirectoryResult) -> Void) {
        if let answer = state.withLock({ $0.current?.lookup(user) }) {
            completion(answer)
        } else {
            fallback.lookup(user, completion: completion)
        }
    }

    /// Entries in the replica that answers logins; nil before the first refresh completed.
    public var entryCount: Int? { state.withLock { $0.current?.count } }

    // MARK: - Fed by the change feed, on its thread

    /// A full refresh begins: entries go into a new copy.
    func refreshBegan() {
        state.withLock { [filter] in $0.building = DirectoryReplica(filter: filter) }
    }

    /// The refresh is complete: the new copy answers logins from now on. The old copy is
    /// freed after the lock is let go: freeing 100,000 entries must not stall the loops'
    /// lookups.
    func refreshCompleted() {
        let old: DirectoryReplica? = state.withLock { state in
            guard let building = state.building else { return nil }
            defer {
                state.current = building
                state.building = nil
            }
            return state.current
        }
        withExtendedLifetime(old) {}
    }

    /// An entry added, modified or renamed (during a refresh: into the new copy); `key` is its
    /// entryUUID.
    func upsert(key: String, dn: String, attributes: [String: [String]], backendValue: String?,
                entryAttributes: [String: String]) {
        state.withLock { state in
            if state.building != nil {
                state.building?.upsert(key: key, dn: dn, attributes: attributes, backendValue: backendValue,
                                       entryAttributes: entryAttributes)
            } else {
                state.current?.upsert(key: key, dn: dn, attributes: attributes, backendValue: backendValue,
                                      entryAttributes: entryAttributes)
            }
        }
    }

    func remove(key: String) {
        state.withLock { state in
            if state.building != nil { state.building?.remove(key: key) } else { state.current?.remove(key: key) }
        }
    }
}
