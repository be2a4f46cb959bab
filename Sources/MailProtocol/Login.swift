/// What a client proved it knows. The password stays bytes: it is replayed to the backend
/// exactly as received (8-bit UTF-8, quotes, backslashes and all), never decoded or logged.
public struct Credentials: Sendable, Equatable, CustomStringConvertible {
    /// SASL authorization identity; empty when the client gave none (always, for LOGIN/USER).
    public var authorizationID: String
    public var username: String
    public var password: [UInt8]
    /// A bearer-token login (OAUTHBEARER, XOAUTH2): then `username` is the user its message
    /// names, `password` is empty, and the store is sent the message itself.
    public var bearer: BearerLogin?

    public init(authorizationID: String = "", username: String, password: [UInt8]) {
        self.authorizationID = authorizationID
        self.username = username
        self.password = password
        self.bearer = nil
    }

    public init(bearer: BearerLogin) {
        self.authorizationID = ""
        self.username = bearer.user
        self.password = []
        self.bearer = bearer
    }

    /// Whose mailbox this login opens: the authorization identity when one is given.
    public var mailboxUser: String { authorizationID.isEmpty ? username : authorizationID }

    /// Names the user and, for a bearer login, the mechanism; never a password or a token.
    public var description: String {
        var text = authorizationID.isEmpty ? "user=\(username)" : "user=\(username) authzid=\(authorizationID)"
        if let bearer { text += " sasl=\(bearer.mechanism.rawValue)" }
        return text
    }
}

/// A login the client asked for, as the pre-login state machine hands it to the driver.
public struct LoginRequest: Sendable, Equatable {
    public var credentials: Credentials
    /// For logs and metrics only: "LOGIN", "AUTHENTICATE PLAIN", "USER", "AUTH LOGIN"...
    public var method: String
    /// The hop count a proxy in front of us sent (IMAP ID `x-proxy-ttl`, as Dovecot's proxy
    /// sends it): a routing loop through proxies runs it down to zero.
    public var proxyTTL: Int?

    public init(credentials: Credentials, method: String, proxyTTL: Int? = nil) {
        self.credentials = credentials
        self.method = method
        self.proxyTTL = proxyTTL
    }
}

/// Why a login did not happen, in terms both protocols can phrase for the client.
public enum LoginFailure: Sendable, Equatable {
    /// Wrong password, unknown user, or anything that must look exactly like them.
    case authenticationFailed
    /// Our side failed (directory or backend unreachable): the client may retry later.
    case temporary
    /// Temporarily refused for a reason the client is told (a hold during a mailbox move).
    case unavailable(text: String)
    /// Refused by a limit of the proxy's (too many sessions of this user): IMAP's `[LIMIT]`
    /// (RFC 5530), POP3's `[SYS/TEMP]`.
    case limit(text: String)
    /// The backend refused with a response code of its own (e.g. UNAVAILABLE, IN-USE, EXPIRED):
    /// passed through so the client sees what the store meant.
    case backendRefused(code: String, text: String)
}

extension LoginFailure {
    /// Text for a response line: control characters (a CR/LF would end the line early and
    /// let the rest pass for a response of its own) become spaces.
    public static func lineText(_ text: String) -> String {
        String(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : Character($0) })
    }
}

/// What the backend said once the replayed login was accepted.
public struct BackendLoginSuccess: Sendable, Equatable {
    /// The store's post-login capabilities (IMAP), when it told us.
    public var capabilities: [String]?
    /// The text of the backend's success reply.
    public var text: String
    /// Bytes the backend sent after its success reply, to be passed to the client untouched.
    public var leftover: [UInt8]

    public init(capabilities: [String]?, text: String, leftover: [UInt8] = []) {
        self.capabilities = capabilities
        self.text = text
        self.leftover = leftover
    }
}

/// Outputs of a client-facing pre-login state machine.
public enum ClientAction: Sendable, Equatable {
    case send([UInt8])
    /// Look the user up and log in to the backend; call `loginAccepted` or `loginRejected`.
    case login(LoginRequest)
    /// The "go ahead" reply is already in an earlier `.send`; start the TLS handshake,
    /// then call `tlsEstablished()`. Anything buffered before the handshake was discarded.
    case startTLS
    /// Flush what was sent, then close.
    case close
}

/// The address of the real client, forwarded to trusted backends (IMAP ID x-* fields,
/// POP3 XCLIENT) so the store's logs and brute-force protection see the real peer.
public struct ClientEndpoint: Sendable, Equatable {
    public var remoteAddress: String
    public var remotePort: Int
    public var localAddress: String
    public var localPort: Int
    public var sessionID: String
    /// Hops a login may still take through proxies (`x-proxy-ttl`, XCLIENT `TTL`).
    public var ttl: Int

    /// Dovecot's proxy starts at 5 too.
    public static let defaultTTL = 5

    public init(remoteAddress: String, remotePort: Int, localAddress: String, localPort: Int, sessionID: String,
                ttl: Int = ClientEndpoint.defaultTTL) {
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.localAddress = localAddress
        self.localPort = localPort
        self.sessionID = sessionID
        self.ttl = ttl
    }
}

/// Outputs of a backend-facing login state machine.
public enum BackendAction: Sendable, Equatable {
    case send([UInt8])
    case startTLS
    case accepted(BackendLoginSuccess)
    /// `reason` is for the log: it names what went wrong and never holds a credential.
    case rejected(LoginFailure, reason: String)
}
