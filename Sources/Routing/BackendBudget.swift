/// What one store may take: `max_sessions` open at once and `max_logins_per_second`, so a
/// fragile store during a migration (Exchange throttles IMAP per user and per server) is not
/// overrun. A refused login never reaches the store. A pure value with time passed in; the
/// proxy keeps one under a lock, shared by every loop.
public struct BackendBudget: Sendable {
    public enum Refusal: String, Sendable, CaseIterable {
        case maxSessions = "backend_max_sessions"
        case maxLoginsPerSecond = "backend_max_logins_per_second"
    }

    private struct Load {
        var sessions = 0
        /// Token bucket: up to one second's worth of logins may come at once.
        var tokens = 0.0
        var refilledAt = 0.0
        var started = false
    }

    private var loads: [String: Load] = [:]

    public init() {}

    /// Takes a session slot and a login token on `backend`, or says which limit refused.
    /// A backend without limits is not tracked at all.
    public mutating func admit(_ backend: Backend, now: Double) -> Refusal? {
        guard backend.hasLimits else { return nil }
        var load = loads[backend.name, default: Load()]
        if let max = backend.maxSessions, load.sessions >= max { return .maxSessions }
        if let rate = backend.maxLoginsPerSecond {
            let capacity = Swift.max(1, rate)
            if !load.started {
                load.tokens = capacity
                load.started = true
            } else {
                load.tokens = Swift.min(capacity, load.tokens + (now - load.refilledAt) * rate)
            }
            load.refilledAt = now
            guard load.tokens >= 1 else {
                loads[backend.name] = load
                return .maxLoginsPerSecond
            }
            load.tokens -= 1
        }
        load.sessions += 1
        loads[backend.name] = load
        return nil
    }

    /// Gives back the session slot `admit` took on a store with limits (the login failed, or
    /// the session ended). By name: a session keeps no copy of its store's settings.
    public mutating func release(backendNamed name: String) {
        guard var load = loads[name], load.sessions > 0 else { return }
        load.sessions -= 1
        loads[name] = load
    }

    public func sessions(on backend: String) -> Int { loads[backend]?.sessions ?? 0 }
}
