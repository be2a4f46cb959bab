import Foundation
import Routing
import Synchronization

/// Users an operator put on hold with `mailswitch hold`: their logins are refused with the
/// hold's reason and no store is contacted. Kept in a small JSON file so that a hold survives
/// reloads and restarts (a migration's final copy pass may outlast either).
public final class HoldBook: Sendable {
    public struct Hold: Codable, Sendable, Equatable {
        public var user: String
        public var reason: String
        /// Seconds since the epoch.
        public var since: Double
        /// A read-only hold: the store the user stays on (nil: a full hold).
        public var readOnlyStore: String?
        /// The user's directory entry when the hold was set: the hold applies to every login
        /// name that reaches it (`alice` and `alice@example.org` alike). Nil when the directory
        /// could not tell (then the name alone is held).
        public var dn: String?

        public var operatorHold: OperatorHold { OperatorHold(message: reason, readOnlyStore: readOnlyStore) }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The holds by user key, and the same holds indexed by entry (lower-cased DN -> user
    /// key), changed together under one lock.
    private struct Book {
        var byUser: [String: Hold]
        var byEntry: [String: String]

        init(_ byUser: [String: Hold]) {
            self.byUser = byUser
            byEntry = Dictionary(byUser.compactMap { key, hold in hold.dn.map { ($0.lowercased(), key) } },
                                 uniquingKeysWith: { first, _ in first })
        }
    }

    private let file: String
    private let holds: Mutex<Book>
    /// Read without the lock on every login: most of the time there is no hold at all.
    private let isEmpty: Atomic<Bool>

    /// Reads the state file; a missing file is an empty book, an unreadable one an error.
    public init(file: String) throws(Failure) {
        self.file = file
        var loaded: [String: Hold] = [:]
        if FileManager.default.fileExists(atPath: file) {
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: file))
                for hold in try JSONDecoder().decode([Hold].self, from: data) { loaded[UserKey.of(hold.user)] = hold }
            } catch {
                throw Failure(description: "cannot read the hold state file \(file): \(error)")
            }
        }
        holds = Mutex(Book(loaded))
        isEmpty = Atomic(loaded.isEmpty)
    }

    /// The hold on this login name, or on the directory entry it reached.
    public func hold(for user: String, entry dn: String? = nil) -> Hold? {
        if isEmpty.load(ordering: .relaxed) { return nil }
        return holds.withLock { book in
            book.byUser[UserKey.of(user)] ?? dn.flatMap { book.byEntry[$0.lowercased()] }.flatMap { book.byUser[$0] }
        }
    }

    public var all: [Hold] {
        holds.withLock { Array($0.byUser.values) }.sorted { $0.since < $1.since }
    }

    public func add(user: String, reason: String, readOnlyStore: String? = nil, dn: String? = nil) throws(Failure) -> Hold {
        let hold = Hold(user: user, reason: reason, since: Date().timeIntervalSince1970, readOnlyStore: readOnlyStore, dn: dn)
        try change { $0[UserKey.of(user)] = hold }
        return hold
    }

    /// False when the user was not held.
    public func remove(user: String) throws(Failure) -> Bool {
        var removed = false
        try change { removed = $0.removeValue(forKey: UserKey.of(user)) != nil }
        return removed
    }

    /// Applies the change and writes the file (atomically: a crash leaves the old or the new
    /// book, never half of one); the change is kept in memory only if the file was written.
    private func change(_ body: (inout [String: Hold]) -> Void) throws(Failure) {
        let result: Result<Void, Failure> = holds.withLock { current in
            var next = current.byUser
            body(&next)
            do {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let data = try encoder.encode(next.values.sorted { $0.since < $1.since })
                try data.write(to: URL(fileURLWithPath: file), options: .atomic)
            } catch {
                return .failure(Failure(description: "cannot write the hold state file \(file): \(error.localizedDescription)"))
            }
            current = Book(next)
            isEmpty.store(next.isEmpty, ordering: .relaxed)
            return .success(())
        }
        try result.get()
    }
}
