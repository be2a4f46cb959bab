/// One protocol as the session driver sees it: which machines speak it before login, towards
/// the client and towards the store, how it says goodbye to a session that is already relayed,
/// how a read-only session is filtered, and its ports. The driver asks the descriptor and never
/// switches on the protocol, so a new protocol is one more descriptor plus its pure machines
/// (nginx's mail module is built the same way: one `ngx_mail_protocol_t` per protocol).
public struct ProtocolDescriptor: Sendable {
    /// The listener settings a protocol has a use for; the configuration refuses the others.
    public struct ListenerOptions: Sendable, Equatable {
        /// `tls: starttls`: the protocol has a command that starts TLS before login.
        public var startTLS: Bool
        /// `tls: implicit`: TLS from the first byte, on a port of the protocol's own (RFC 8314).
        public var implicitTLS: Bool
        /// `proxy_protocol: true`: a load balancer's PROXY header first.
        public var proxyProtocol: Bool

        public init(startTLS: Bool, implicitTLS: Bool, proxyProtocol: Bool) {
            self.startTLS = startTLS
            self.implicitTLS = implicitTLS
            self.proxyProtocol = proxyProtocol
        }
    }

    /// What the store-facing machine replays.
    public struct BackendLoginSettings: Sendable, Equatable {
        public var credentials: Credentials
        /// Forwarded to the store when given (ID `x-*` fields, XCLIENT).
        public var client: ClientEndpoint?
        /// STARTTLS (or STLS) before the login.
        public var startTLS: Bool
        public var limits: ProtocolLimits

        public init(credentials: Credentials, client: ClientEndpoint?, startTLS: Bool, limits: ProtocolLimits) {
            self.credentials = credentials
            self.client = client
            self.startTLS = startTLS
            self.limits = limits
        }
    }

    /// The name in the configuration (`protocol: imap`), the logs and the metrics' labels.
    public let name: String
    public let standardPort: Int
    /// RFC 8314's implicit-TLS port.
    public let implicitTLSPort: Int
    /// The protocol's ALPN identifier (RFC 7301's registry), offered to clients.
    public let alpn: String
    public let listenerOptions: ListenerOptions
    /// The client-facing machine; `secure`: the connection is already TLS (implicit TLS).
    public let makePreLogin: @Sendable (PreLoginConfiguration, _ secure: Bool) -> any PreLoginMachine
    public let makeBackendLogin: @Sendable (BackendLoginSettings) -> any BackendLoginMachine
    /// The command filter of a read-only session; refused commands are answered with the text.
    public let makeReadOnlyFilter: @Sendable (_ message: String, ProtocolLimits) -> any ReadOnlySessionFilter
    /// Follows the store's responses when the protocol can say goodbye between two of them
    /// (`relayGoodbye`); nil when it cannot, and the session is closed instead.
    public let makeResponseFraming: (@Sendable () -> any ResponseFraming)?
    /// The unsolicited goodbye to a relayed session the proxy ends (a move, a kick), sent only
    /// at a response boundary.
    public let relayGoodbye: (@Sendable (_ text: String) -> [UInt8])?

    public init(name: String, standardPort: Int, implicitTLSPort: Int, alpn: String, listenerOptions: ListenerOptions,
                makePreLogin: @escaping @Sendable (PreLoginConfiguration, Bool) -> any PreLoginMachine,
                makeBackendLogin: @escaping @Sendable (BackendLoginSettings) -> any BackendLoginMachine,
                makeReadOnlyFilter: @escaping @Sendable (String, ProtocolLimits) -> any ReadOnlySessionFilter,
                makeResponseFraming: (@Sendable () -> any ResponseFraming)?,
                relayGoodbye: (@Sendable (String) -> [UInt8])?) {
        self.name = name
        self.standardPort = standardPort
        self.implicitTLSPort = implicitTLSPort
        self.alpn = alpn
        self.listenerOptions = listenerOptions
        self.makePreLogin = makePreLogin
        self.makeBackendLogin = makeBackendLogin
        self.makeReadOnlyFilter = makeReadOnlyFilter
        self.makeResponseFraming = makeResponseFraming
        self.relayGoodbye = relayGoodbye
    }
}

extension ProtocolDescriptor {
    /// IMAP4rev1/rev2 (RFC 3501, RFC 9051).
    public static let imap = ProtocolDescriptor(
        name: "imap", standardPort: 143, implicitTLSPort: 993, alpn: "imap",
        listenerOptions: .init(startTLS: true, implicitTLS: true, proxyProtocol: true),
        makePreLogin: { configuration, secure in IMAPPreLogin(configuration: configuration, secure: secure) },
        makeBackendLogin: { settings in
            IMAPBackendLogin(credentials: settings.credentials, client: settings.client,
                             tls: settings.startTLS ? .startTLS : .none, limits: settings.limits)
        },
        makeReadOnlyFilter: { message, limits in IMAPReadOnlyFilter(reason: message, limits: limits) },
        makeResponseFraming: { IMAPResponseFraming() },
        // RFC 5530: the client may come back at once and reach the new route.
        relayGoodbye: { text in Array("* BYE [UNAVAILABLE] \(LoginFailure.lineText(text))\r\n".utf8) })

    /// POP3 (RFC 1939, RFC 2449, RFC 5034).
    public static let pop3 = ProtocolDescriptor(
        name: "pop3", standardPort: 110, implicitTLSPort: 995, alpn: "pop3",
        listenerOptions: .init(startTLS: true, implicitTLS: true, proxyProtocol: true),
        makePreLogin: { configuration, secure in POP3PreLogin(configuration: configuration, secure: secure) },
        makeBackendLogin: { settings in
            POP3BackendLogin(credentials: settings.credentials, client: settings.client,
                             tls: settings.startTLS ? .startTLS : .none, limits: settings.limits)
        },
        makeReadOnlyFilter: { message, limits in POP3ReadOnlyFilter(reason: message, limits: limits) },
        // POP3 has no unsolicited response: a session the proxy ends is closed, and since it
        // sent no QUIT, the store commits no DELE of a mailbox the user is leaving.
        makeResponseFraming: nil,
        relayGoodbye: nil)
}
