import EventLoop
import MailProtocol
import TLS

/// What one login needs from the client's command to the store's verdict: the credentials,
/// the way to the store and the store-side login machine. The session drops it when the
/// verdict is in, either way, so a session relaying for days holds none of it (and no
/// password).
///
/// Confined to its session's loop, like the session.
final class LoginAttempt {
    let request: LoginRequest
    /// When the login command arrived (monotonic seconds): a failure is answered
    /// `auth_failure_delay` after it.
    let startedAt: Double
    /// Proxy hops the login may still take (`x-proxy-ttl` sent on).
    var hopsLeft = ClientEndpoint.defaultTTL
    /// Backend address (as text) -> the configured host name it came from, for TLS verification.
    var backendNames: [String: String] = [:]
    var connector: Connector?
    /// Covers the store's TLS handshake, greeting and login verdict.
    var backendTimer: LoopTimer?
    var backendMachine: (any BackendLoginMachine)?
    var backendTLS: TLSTransport?

    init(request: LoginRequest, startedAt: Double) {
        self.request = request
        self.startedAt = startedAt
    }

    /// Stops what is still under way (a connect, the verdict's deadline).
    func cancel() {
        backendTimer?.cancel()
        backendTimer = nil
        connector?.cancel()
        connector = nil
    }
}
