import MailProtocol
import Routing

/// What one login needs from the client's command to the store's verdict: the credentials,
/// the route the gate admitted and the store leg. The session drops it when the verdict is
/// in, either way, so a session relaying for days holds none of it (and no password).
///
/// Confined to its session's loop, like the session.
final class LoginAttempt {
    let request: LoginRequest
    /// When the login command arrived (monotonic seconds): a failure is answered
    /// `auth_failure_delay` after it.
    let startedAt: Double
    /// Proxy hops the login may still take (`x-proxy-ttl` sent on).
    let hopsLeft: Int
    var route: LoginRoute?
    var store: StoreLeg?

    init(request: LoginRequest, startedAt: Double, hopsLeft: Int) {
        self.request = request
        self.startedAt = startedAt
        self.hopsLeft = hopsLeft
    }

    var user: String { request.credentials.mailboxUser }
}
