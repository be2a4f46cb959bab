import Configuration
import MailProtocol
import Routing

/// Where a session stands, as far as ending it is concerned.
enum SessionPhase: Equatable {
    case preLogin
    case loggingIn
    /// The login failed and its answer waits for `auth_failure_delay`; the client is not read.
    case answeringLater
    case relaying
    case closed
}

/// How a session the proxy ends (a move, a hold, a kick, a shutdown) is ended, from where it
/// stands. Pure: the session carries it out.
enum SessionEnding: Equatable {
    /// Not this session's business (a route change before login: its login will find the new
    /// route by itself).
    case ignore
    /// Before login: the protocol's temporary goodbye, then close once it is flushed.
    case goodbyeBeforeLogin(text: String)
    /// The login is under way: refuse it as temporary; the client may retry at once and reach
    /// the new route, and nothing was lost.
    case refuseLogin(LoginRefusal)
    /// Relayed, between two of the store's responses, with everything before sent to the
    /// client: the protocol's goodbye (IMAP's `* BYE [UNAVAILABLE]`), then close.
    case goodbyeAndClose([UInt8])
    /// Relayed, anywhere else: a goodbye inside a response or a literal would corrupt it, and
    /// a protocol without an unsolicited goodbye (POP3) has nothing to say.
    case close

    static func decide(_ reason: SessionEndReason, message: String?, phase: SessionPhase,
                       relayGoodbye: ((String) -> [UInt8])?, atResponseBoundary: Bool,
                       clientCaughtUp: Bool) -> SessionEnding {
        let text = message ?? defaultText(reason)
        switch phase {
        case .closed:
            return .ignore
        case .preLogin, .answeringLater:
            return reason == .shutdown ? .goodbyeBeforeLogin(text: text) : .ignore
        case .loggingIn:
            return .refuseLogin(LoginRefusal(.unavailable(text: text), "\(reason.rawValue) during login"))
        case .relaying:
            guard let relayGoodbye, atResponseBoundary, clientCaughtUp else { return .close }
            return .goodbyeAndClose(relayGoodbye(text))
        }
    }

    static func defaultText(_ reason: SessionEndReason) -> String {
        switch reason {
        case .routeChange: return "Your mailbox has moved, please reconnect."
        case .hold: return RoutingTable.defaultHoldMessage
        case .kick: return "Disconnected by the administrator, please reconnect."
        case .shutdown: return "Server shutting down, please reconnect."
        }
    }
}
