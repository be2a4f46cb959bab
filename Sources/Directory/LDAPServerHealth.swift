import Dispatch
import Synchronization

/// How long a directory server that failed is skipped: 1 s after the first failure, doubling
/// with each failure in a row, at most 30 s. Short enough that a restarted slapd is used again
/// within seconds of answering; long enough that a dead server costs one refused connect (or
/// one timeout, on a background attempt) per period instead of one per login.
public struct LDAPBackoff: Sendable, Equatable {
    public var initialSeconds: Double
    public var maximumSeconds: Double

    public init(initialSeconds: Double = 1, maximumSeconds: Double = 30) {
        self.initialSeconds = initialSeconds
        self.maximumSeconds = maximumSeconds
    }

    /// Seconds to skip a server after `failures` failures in a row (0 for none).
    public func delay(afterFailures failures: Int) -> Double {
        guard failures > 0 else { return 0 }
        return min(maximumSeconds, initialSeconds * Double(1 << min(failures - 1, 30)))
    }
}

/// What is known about one configured directory server, for `mailswitch status`.
public struct LDAPServerStatus: Sendable, Equatable, CustomStringConvertible {
    public enum State: String, Sendable {
        case untried = "not tried yet"
        case up
        /// It answered, but refused the bind (wrong bind_dn or password): the configuration's
        /// fault, not the server's. Skipped with the same back-off, but not counted as down.
        case bindRefused = "refusing the bind"
        /// A connect or bind failed or timed out, or the server stopped answering.
        case down
    }

    public var server: String
    public var state: State
    /// The lookup connection of this process uses it.
    public var inUse: Bool
    /// Failed attempts in a row.
    public var failures: Int
    public var lastError: String?
    /// Seconds until it is tried again; nil when it is not being skipped.
    public var retryInSeconds: Double?

    public var description: String {
        var text = "\(server) \(inUse ? "in use" : state.rawValue)"
        if state == .down || state == .bindRefused {
            if let lastError { text += " (\(lastError))" }
            if failures > 1 { text += ", \(failures) failures in a row" }
            if let retryInSeconds { text += ", retried in \(LDAPServerHealth.seconds(retryInSeconds))s" }
        }
        return text
    }
}

/// A change worth a log line. The directory module has no logger: whoever owns one
/// subscribes with `LDAPServerHealth.observe`.
public enum LDAPServerEvent: Sendable, Equatable, CustomStringConvertible {
    /// A connect or bind failed; the server is skipped for `retryInSeconds`.
    case down(server: String, reason: String, failures: Int, retryInSeconds: Double)
    /// The server refused the bind; skipped for `retryInSeconds`.
    case bindRefused(server: String, reason: String, retryInSeconds: Double)
    /// Connected and bound again after failing.
    case back(server: String)
    /// This process's lookups go to another server now (`to` nil: none is bound).
    case lookupsMoved(from: String?, to: String?)

    /// Down, refused, or no server at all (a warning); the rest is good news.
    public var isProblem: Bool {
        switch self {
        case .down, .bindRefused: true
        case .back: false
        case .lookupsMoved(_, let to): to == nil
        }
    }

    public var description: String {
        switch self {
        case .down(let server, let reason, let failures, let retry):
            let repeated = failures > 1 ? ", \(failures) failures in a row" : ""
            return "directory server \(server) is down (\(reason)): skipped for \(LDAPServerHealth.seconds(retry))s\(repeated)"
        case .bindRefused(let server, let reason, let retry):
            return "directory server \(server) refused the bind (\(reason)): check bind_dn and its password; "
                + "skipped for \(LDAPServerHealth.seconds(retry))s"
        case .back(let server):
            return "directory server \(server) answers again"
        case .lookupsMoved(let from, let to):
            switch (from, to) {
            case (_, nil): return "directory lookups: no server bound\(from.map { " (was \($0))" } ?? "")"
            case (nil, let to?): return "directory lookups go to \(to)"
            case (let from?, let to?): return "directory lookups go to \(to) (was \(from))"
            }
        }
    }
}

/// What this process knows about each directory server, by URI, shared by the lookup
/// connection and the change feed: a server one of them found dead is skipped by the other
/// until its back-off runs out, and every configured server keeps its place in the order.
/// Process-wide, because a URI names a server, not a connection (the metrics label it the
/// same way), and a reload that keeps a URI keeps what is known about it.
///
/// Attempts report their outcome with the time they started: an outcome older than one
/// already recorded (two attempts racing on the same server) changes nothing, so a server is
/// not counted down twice for one outage, nor down after a later attempt found it up.
public final class LDAPServerHealth: Sendable {
    public static let shared = LDAPServerHealth()

    private struct Record {
        var state = LDAPServerStatus.State.untried
        var failures = 0
        var lastError: String?
        var retryAt = 0.0
        var concludedAt = -Double.infinity
    }

    /// The gauges are set under the lock too, so they never disagree with the records.
    private struct State {
        var records: [String: Record] = [:]
        /// Which server each lookup connection (by owner) uses.
        var inUse: [ObjectIdentifier: String] = [:]
        var observers: [@Sendable (LDAPServerEvent) -> Void] = []
    }

    public let backoff: LDAPBackoff
    private let state = Mutex(State())

    public init(backoff: LDAPBackoff = LDAPBackoff()) {
        self.backoff = backoff
    }

    /// Monotonic seconds: back-offs must not jump with the wall clock.
    public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// "1", "0.3", "12": enough precision for a log line.
    static func seconds(_ value: Double) -> String {
        let tenths = (value * 10).rounded() / 10
        return value >= 10 || tenths == tenths.rounded() ? "\(Int(value.rounded()))" : "\(tenths)"
    }

    /// Calls `handler` (on any thread) for every event from now on.
    public func observe(_ handler: @escaping @Sendable (LDAPServerEvent) -> Void) {
        state.withLock { $0.observers.append(handler) }
    }

    // MARK: - Choosing

    /// The servers worth trying now, in configuration order: those not skipped, and those
    /// whose back-off has run out.
    public func usable(_ uris: [String], now: Double = now()) -> [String] {
        state.withLock { state in
            uris.filter { uri in
                guard let record = state.records[uri] else { return true }
                return (record.state != .down && record.state != .bindRefused) || now >= record.retryAt
            }
        }
    }

    /// When the first of `uris` that is being skipped now becomes worth trying again.
    func nextRetry(_ uris: [String], now: Double = now()) -> Double? {
        state.withLock { state in
            uris.compactMap { uri -> Double? in
                guard let record = state.records[uri], record.state == .down || record.state == .bindRefused,
                      record.retryAt > now else { return nil }
                return record.retryAt
            }.min()
        }
    }

    // MARK: - Recording

    /// An attempt begun at `startedAt` connected and bound.
    func attemptSucceeded(_ uri: String, startedAt: Double) {
        let (recorded, wasFailing) = state.withLock { state in
            let record = state.records[uri] ?? Record()
            guard record.concludedAt <= startedAt else { return (false, false) }
            state.records[uri] = Record(state: .up, concludedAt: Self.now())
            DirectoryMetrics.serverUp(uri, true)
            return (true, record.state == .down || record.state == .bindRefused)
        }
        if recorded && wasFailing { notify(.back(server: uri)) }
    }

    /// An attempt begun at `startedAt` failed. `serverFault` is false when the server answered
    /// and refused the credentials. Returns how long the server is skipped from now.
    @discardableResult
    func attemptFailed(_ uri: String, reason: String, serverFault: Bool, startedAt: Double) -> Double {
        let now = Self.now()
        let (skipped, event): (Double, LDAPServerEvent?) = state.withLock { state in
            var record = state.records[uri] ?? Record()
            guard record.concludedAt <= startedAt else { return (max(0, record.retryAt - now), nil) }
            record.failures += 1
            record.state = serverFault ? .down : .bindRefused
            record.lastError = reason
            let delay = backoff.delay(afterFailures: record.failures)
            record.retryAt = now + delay
            record.concludedAt = now
            state.records[uri] = record
            DirectoryMetrics.serverUp(uri, !serverFault)
            return (delay, serverFault
                ? .down(server: uri, reason: reason, failures: record.failures, retryInSeconds: delay)
                : .bindRefused(server: uri, reason: reason, retryInSeconds: delay))
        }
        if let event { notify(event) }
        return skipped
    }

    /// The lookup connection of `owner` uses `uri` now (nil: none).
    func setInUse(_ uri: String?, by owner: ObjectIdentifier) {
        let previous = state.withLock { state in
            let before = Set(state.inUse.values)
            let previous = state.inUse[owner]
            state.inUse[owner] = uri
            let after = Set(state.inUse.values)
            for server in before.symmetricDifference(after) { DirectoryMetrics.serverInUse(server, after.contains(server)) }
            return previous
        }
        if previous != uri { notify(.lookupsMoved(from: previous, to: uri)) }
    }

    /// A lookup connection's owner is gone.
    func forget(owner: ObjectIdentifier) {
        state.withLock { state in
            let before = Set(state.inUse.values)
            state.inUse[owner] = nil
            for server in before.subtracting(state.inUse.values) { DirectoryMetrics.serverInUse(server, false) }
        }
    }

    private func notify(_ event: LDAPServerEvent) {
        for observer in state.withLock({ $0.observers }) { observer(event) }
    }

    // MARK: - Reporting

    /// Every server of `uris`, in order, as this process knows it now.
    public func statuses(of uris: [String]) -> [LDAPServerStatus] {
        let now = Self.now()
        return state.withLock { state in
            let inUse = Set(state.inUse.values)
            return uris.map { uri in
                let record = state.records[uri] ?? Record()
                let skipped = (record.state == .down || record.state == .bindRefused) && record.retryAt > now
                return LDAPServerStatus(server: uri, state: record.state, inUse: inUse.contains(uri),
                                        failures: record.failures, lastError: record.lastError,
                                        retryInSeconds: skipped ? record.retryAt - now : nil)
            }
        }
    }
}
