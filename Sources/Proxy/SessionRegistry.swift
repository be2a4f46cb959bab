import Routing
import Synchronization

/// Why a session was ended by the proxy rather than by its client or store.
public enum SessionEndReason: String, Sendable {
    case routeChange = "route change"
    case hold
    case kick
    case shutdown
}

/// What the registry can ask of a live session; the session does it on its own loop.
public protocol SessionControl: AnyObject, Sendable {
    func end(_ reason: SessionEndReason, message: String?)
    /// Bytes relayed so far (client to store, store to client), delivered on any queue.
    func traffic(_ completion: @escaping @Sendable (_ toStore: Int, _ toClient: Int) -> Void)
}

/// Who is connected, as whom, and where to: every session registers when accepted and
/// leaves when closed. Indexed by user, by backend and by directory entry, so that a change
/// to one user ends that user's sessions in O(their sessions), not O(all sessions).
public final class SessionRegistry: Sendable {
    public enum Phase: String, Sendable, Codable {
        case preLogin = "pre-login"
        case loggingIn = "logging-in"
        case relaying
    }

    public struct Entry: Sendable {
        public var id: String
        public var service: String
        public var listener: String
        public var client: String
        /// The client leg's TLS version, nil for plaintext.
        public var tls: String?
        public var user: String?
        public var backend: String?
        public var backendHost: String?
        public var phase: Phase
        public var startedAt: Double   // seconds since the epoch
        /// Where the login was routed, to compare with the user's route after a change.
        public var target: RouteTarget?
        /// The directory entry the route came from, if any.
        public var dn: String?
    }

    public struct Session: Sendable {
        public let entry: Entry
        public let control: any SessionControl
    }

    /// A session's entry by reference: the table's buckets, which it keeps at most three
    /// quarters full, then hold a pointer each rather than the whole entry (about 200 bytes).
    /// Never handed out: callers get `Session` copies.
    private final class Slot {
        var entry: Entry
        let control: any SessionControl
        init(_ entry: Entry, _ control: any SessionControl) {
            self.entry = entry
            self.control = control
        }
        var session: Session { Session(entry: entry, control: control) }
    }

    private struct State {
        var sessions: [String: Slot] = [:]
        var byUser: [String: Set<String>] = [:]
        var byBackend: [String: Set<String>] = [:]
        var byDN: [String: Set<String>] = [:]

        mutating func index(_ entry: Entry, add: Bool) {
            func apply(_ key: String?, _ map: inout [String: Set<String>]) {
                guard let key else { return }
                if add {
                    map[key, default: []].insert(entry.id)
                } else {
                    map[key]?.remove(entry.id)
                    if map[key]?.isEmpty == true { map[key] = nil }
                }
            }
            apply(entry.user.map(UserKey.of), &byUser)
            apply(entry.backend, &byBackend)
            apply(entry.dn?.lowercased(), &byDN)
        }

        func sessions(_ ids: Set<String>?) -> [Session] {
            (ids ?? []).compactMap { sessions[$0]?.session }
        }
    }

    private let state = Mutex(State())

    public init() {}

    func register(_ entry: Entry, control: any SessionControl) {
        state.withLock {
            $0.sessions[entry.id] = Slot(entry, control)
            $0.index(entry, add: true)
        }
    }

    func update(_ id: String, _ change: (inout Entry) -> Void) {
        state.withLock { state in
            guard let slot = state.sessions[id] else { return }
            var entry = slot.entry
            change(&entry)
            // Most updates (phase, TLS, target) leave the indexed keys alone: reindex only when
            // one of them moved.
            let moved = entry.user != slot.entry.user || entry.backend != slot.entry.backend || entry.dn != slot.entry.dn
            if moved { state.index(slot.entry, add: false) }
            slot.entry = entry
            if moved { state.index(entry, add: true) }
        }
    }

    func remove(_ id: String) {
        state.withLock { state in
            guard let slot = state.sessions.removeValue(forKey: id) else { return }
            state.index(slot.entry, add: false)
        }
    }

    public var count: Int { state.withLock { $0.sessions.count } }

    public func snapshot() -> [Session] {
        state.withLock { $0.sessions.values.map(\.session) }.sorted { $0.entry.startedAt < $1.entry.startedAt }
    }

    /// Sessions of a user (any spelling of the login name).
    public func sessions(ofUser user: String) -> [Session] {
        state.withLock { $0.sessions($0.byUser[UserKey.of(user)]) }
    }

    /// How many sessions of a user are logging in or logged in (any spelling of the name).
    public func count(ofUser user: String) -> Int {
        state.withLock { $0.byUser[UserKey.of(user)]?.count ?? 0 }
    }

    /// Sessions of a user by any spelling of the name, or of the directory entry `dn`, each
    /// counted once.
    public func count(ofUser user: String, orEntry dn: String?) -> Int {
        state.withLock { state in
            let byName = state.byUser[UserKey.of(user)] ?? []
            guard let dn, let byEntry = state.byDN[dn.lowercased()] else { return byName.count }
            return byName.union(byEntry).count
        }
    }

    /// Sessions of a user by any spelling of the name, and of the directory entry `dn`.
    public func sessions(ofUser user: String, orEntry dn: String?) -> [Session] {
        state.withLock { state in
            let byName = state.byUser[UserKey.of(user)] ?? []
            return state.sessions(dn.flatMap { state.byDN[$0.lowercased()] }.map(byName.union) ?? byName)
        }
    }

    public func sessions(onBackend backend: String) -> [Session] {
        state.withLock { $0.sessions($0.byBackend[backend]) }
    }

    /// Cache keys of the users whose sessions came from the directory entry `dn`.
    public func userKeys(ofEntry dn: String) -> Set<String> {
        state.withLock { state in
            Set(state.sessions(state.byDN[dn.lowercased()]).compactMap { $0.entry.user.map(UserKey.of) })
        }
    }

    /// Every user with a session, by cache key, with one spelling of the login name each.
    public func users() -> [String: String] {
        state.withLock { state in
            var result: [String: String] = [:]
            for (key, ids) in state.byUser {
                if let id = ids.first, let user = state.sessions[id]?.entry.user { result[key] = user }
            }
            return result
        }
    }

    /// The login name as one of the user's sessions spelled it; nil without sessions.
    public func loginName(userKey: String) -> String? {
        state.withLock { state in state.byUser[userKey]?.first.flatMap { state.sessions[$0]?.entry.user } }
    }

    public func hasSessions(userKey: String) -> Bool {
        state.withLock { $0.byUser[userKey] != nil }
    }
}
