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

/// What `login_timeout` does, from where the session stands when it runs out. Pure.
enum LoginTimeout: Equatable {
    case ignore
    /// Nothing the client sent led to a login in time: the protocol's goodbye, then close.
    case inactive
    /// The store (or the directory) has not decided the replayed login. The client was not
    /// idle: it gets a temporary failure under its own tag, as Dovecot's proxy answers on its
    /// proxy timeout (a store's auth penalty can take longer than any login timeout), then the
    /// session closes; nothing was lost and it may come back at once.
    case refuseLogin(LoginRefusal)
    /// A refused login waits for its delayed answer: it still gets that answer, then the
    /// session closes.
    case closeAfterAnswer
    /// The store accepted, but the client never read the replies queued before the relay.
    case clientNeverRead

    static func decide(_ phase: SessionPhase, waitingForStore: Bool, seconds: Double) -> LoginTimeout {
        switch phase {
        case .preLogin: return .inactive
        case .answeringLater: return .closeAfterAnswer
        case .relaying: return .clientNeverRead
        case .closed: return .ignore
        case .loggingIn:
            let who = waitingForStore ? "store" : "directory"
            return .refuseLogin(LoginRefusal(.temporary, "the \(who) did not answer the login within login_timeout (\(Int(seconds))s)",
                                             outcome: .timeout))
        }
    }
}
