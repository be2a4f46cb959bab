import Synchronization

/// Who is connected, as whom, and where to. The seam for the admin socket's `sessions`,
/// `kick` and `hold`: every session registers when accepted and leaves when closed.
public final class SessionRegistry: Sendable {
    public enum Phase: String, Sendable {
        case preLogin = "pre-login"
        case loggingIn = "logging-in"
        case relaying
    }

    public struct Entry: Sendable {
        public var id: String
        public var service: String
        public var client: String
        public var user: String?
        public var backend: String?
        public var backendHost: String?
        public var phase: Phase
        public var startedAt: Double   // seconds since the epoch
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    func register(_ entry: Entry) {
        entries.withLock { $0[entry.id] = entry }
    }

    func update(_ id: String, _ change: @Sendable (inout Entry) -> Void) {
        entries.withLock { all in
            if var entry = all[id] {
                change(&entry)
                all[id] = entry
            }
        }
    }

    func remove(_ id: String) {
        _ = entries.withLock { $0.removeValue(forKey: id) }
    }

    public var count: Int { entries.withLock { $0.count } }

    public func snapshot() -> [Entry] {
        entries.withLock { Array($0.values) }.sorted { $0.startedAt < $1.startedAt }
    }
}
