import Logging
import Routing
import Synchronization

/// The limits every loop shares: open connections overall and per client address, each
/// store's sessions and login rate, and failed logins per address and per user. One per
/// running service, kept across reloads (a reload changes the limits, not the counts).
///
/// Each check takes one short lock; a login takes at most four (connection, failure
/// counters, backend, and the registry's user count).
final class Admission: Sendable {
    private let connections = Mutex(ConnectionBudget())
    private let backends = Mutex(BackendBudget())
    private let failures = Mutex(AuthFailureTracker())
    private let refusals: RefusalLog

    init(logger: Logger) {
        refusals = RefusalLog(logger: logger)
    }

    func admitConnection(_ address: String, limits: Limits) -> ConnectionBudget.Refusal? {
        let refusal = connections.withLock { $0.admit(address, limits: limits) }
        if let refusal {
            ProxyMetrics.limitReached(.init(refusal))
            refusals.note(refusal.rawValue, "connection from \(address) refused: \(refusal.rawValue) reached")
        }
        return refusal
    }

    /// A connection to a `proxy_protocol` listener from outside `trusted_proxies`: closed.
    func untrustedProxy(_ address: String) {
        ProxyMetrics.limitReached(.untrustedProxy)
        refusals.note("untrusted_proxy", "connection from \(address) closed: not in trusted_proxies, on a proxy_protocol listener")
    }

    func releaseConnection(_ address: String) {
        connections.withLock { $0.release(address) }
    }

    var openConnections: Int { connections.withLock { $0.total } }

    func admitBackend(_ backend: Backend, now: Double) -> BackendBudget.Refusal? {
        backends.withLock { $0.admit(backend, now: now) }
    }

    func releaseBackend(named name: String) {
        backends.withLock { $0.release(backendNamed: name) }
    }

    /// Whether failed logins refuse this attempt; the settings are the running configuration's.
    func checkLogin(address: String, user: String, settings: AuthFailureTracker.Settings,
                    now: Double) -> AuthFailureTracker.Refusal? {
        failures.withLock { tracker in
            if tracker.settings != settings { tracker.settings = settings }
            return tracker.check(address: address, user: user, now: now)
        }
    }

    func loginFailed(address: String, user: String, now: Double) {
        failures.withLock { $0.failed(address: address, user: user, now: now) }
    }

    func loginSucceeded(address: String, user: String, now: Double) {
        failures.withLock { $0.succeeded(address: address, user: user, now: now) }
    }
}

/// Connections refused by a limit, in the log without flooding it: the first of each limit
/// in a 10-second window is logged with its address, the rest are counted into the next
/// line. The metric counts every one.
final class RefusalLog: Sendable {
    private struct Window {
        var startedAt = -Double.infinity
        var suppressed = 0
    }

    private static let window = 10.0
    private let logger: Logger
    private let windows = Mutex<[String: Window]>([:])

    init(logger: Logger) {
        self.logger = logger
    }

    func note(_ limit: String, _ message: String, now: Double = Router.now()) {
        let suppressedBefore: Int? = windows.withLock { windows in
            var window = windows[limit, default: Window()]
            defer { windows[limit] = window }
            guard now - window.startedAt >= Self.window else {
                window.suppressed += 1
                return nil
            }
            let before = window.suppressed
            window = Window(startedAt: now, suppressed: 0)
            return before
        }
        guard let suppressedBefore else { return }
        let more = suppressedBefore > 0 ? " (and \(suppressedBefore) more for \(limit) in the window before)" : ""
        logger.notice("\(message)\(more)")
    }
}
