/// The client side of a POP3 session in the AUTHORIZATION state (RFC 1939, RFC 2449 CAPA,
/// RFC 5034 AUTH, RFC 2595 STLS): greeting, CAPA, USER/PASS, AUTH PLAIN/LOGIN (and the
/// bearer-token mechanisms when offered), STLS, QUIT.
/// A pure value like `IMAPPreLogin`, with the same contract.
public struct POP3PreLogin: Sendable {
    public typealias Configuration = PreLoginConfiguration

    private enum Phase: Sendable, Equatable {
        case commands
        case authenticating(SASLExchange)
        /// A login is out; `bearer` when it came through a bearer-token mechanism.
        case awaitingVerdict(bearer: BearerLogin.Mechanism?)
        /// A bearer login failed and its error challenge is out (RFC 7628 §3.2.2): the client's
        /// one response line, whatever it holds, then the -ERR.
        case bearerFailure
        /// After STLS: plaintext bytes are dropped until the handshake is done.
        case awaitingTLS
        case done
    }

    public let configuration: Configuration
    public private(set) var isSecure: Bool
    private var phase: Phase = .commands
    private var input: LineBuffer
    private var user: String?
    private var invalidCommands = 0
    private var commands = 0
    /// Set when a limit ended the session (its last action is `.close`).
    public private(set) var limitReached: ProtocolLimit?

    public init(configuration: Configuration = Configuration(), secure: Bool = false) {
        self.configuration = configuration
        self.isSecure = secure
        self.input = LineBuffer(limit: configuration.limits.lineLength)
    }

    private var plaintextAllowed: Bool { isSecure || configuration.allowsPlaintextLogin }

    public var capabilities: [String] {
        var caps = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        if configuration.offersStartTLS && !isSecure { caps.append("STLS") }
        if plaintextAllowed {
            caps.append("USER")
            caps.append("SASL " + configuration.saslMechanisms.map(\.rawValue).joined(separator: " "))
        }
        return caps
    }

    public func greeting() -> [UInt8] {
        Array("+OK \(configuration.greetingText)\r\n".utf8)
    }

    public mutating func receive<C: Collection>(_ bytes: C) -> [ClientAction] where C.Element == UInt8 {
        guard phase != .done, phase != .awaitingTLS else { return [] }
        input.append(bytes)
        if case .awaitingVerdict = phase { return [] }
        return process()
    }

    public mutating func loginAccepted(_ success: BackendLoginSuccess) -> (reply: [UInt8], leftover: [UInt8]) {
        guard case .awaitingVerdict = phase else { return ([], []) }
        phase = .done
        let text = success.text.isEmpty ? "Logged in." : success.text
        return (Array("+OK \(text)\r\n".utf8), input.takeAll())
    }

    public mutating func loginRejected(_ failure: LoginFailure) -> [ClientAction] {
        guard case .awaitingVerdict(let bearer) = phase else { return [] }
        phase = .commands
        user = nil
        let line: String
        switch failure {
        case .authenticationFailed:
            if let bearer {
                // The -ERR waits for the client's response to the error challenge.
                phase = .bearerFailure
                return [.send(continuation(bearer.errorChallenge))] + process()
            }
            line = Self.authenticationFailed
        case .temporary: line = "-ERR [SYS/TEMP] Account is temporarily unavailable."
        case .unavailable(let text), .limit(let text): line = "-ERR [SYS/TEMP] \(LoginFailure.lineText(text))"
        case .backendRefused(let code, let text): line = "-ERR [\(code)] \(text.isEmpty ? "Login refused." : text)"
        }
        return [.send(Array((line + "\r\n").utf8))] + process()
    }

    public mutating func tlsEstablished() {
        guard phase == .awaitingTLS else { return }
        phase = .commands
        isSecure = true
        user = nil
    }

    private mutating func process() -> [ClientAction] {
        var actions: [ClientAction] = []
        while true {
            switch phase {
            case .commands, .authenticating, .bearerFailure: break
            case .awaitingVerdict, .awaitingTLS, .done: return actions
            }
            switch input.nextLine() {
            case .incomplete:
                return actions
            case .tooLong:
                phase = .done
                limitReached = .lineLength
                return actions + [.send(Array("-ERR Line too long.\r\n".utf8)), .close]
            case .line(let line):
                if phase == .bearerFailure {
                    // RFC 7628 asks for a single %x01; a cancellation or anything else ends
                    // the exchange just as well, and the answer is the same.
                    phase = .commands
                    actions.append(reply(Self.authenticationFailed))
                } else if case .authenticating(var exchange) = phase {
                    phase = .commands
                    switch SASL.parseResponse(line) {
                    case .cancelled: actions += err("Authentication cancelled.")
                    case .invalid: actions += err("Invalid base64 data in SASL response.")
                    case .data(let data): actions += saslStep(exchange.respond(data), exchange)
                    }
                } else {
                    actions += handle(line)
                }
            }
        }
    }

    private func reply(_ line: String) -> ClientAction { .send(Array((line + "\r\n").utf8)) }

    private static let authenticationFailed = "-ERR [AUTH] Authentication failed."

    /// A SASL challenge: `+ base64` (an empty one is `+ ` and nothing more).
    private func continuation(_ challenge: [UInt8]) -> [UInt8] {
        Array("+ ".utf8) + Base64.encode(challenge) + Array("\r\n".utf8)
    }

    private mutating func err(_ text: String) -> [ClientAction] {
        invalidCommands += 1
        if invalidCommands >= configuration.limits.invalidCommands {
            phase = .done
            limitReached = .invalidCommands
            return [reply("-ERR \(text)"), reply("-ERR Too many bad commands."), .close]
        }
        return [reply("-ERR \(text)")]
    }

    private mutating func handle(_ line: ArraySlice<UInt8>) -> [ClientAction] {
        if line.isEmpty { return [] }
        commands += 1
        if commands > configuration.limits.commandsBeforeLogin {
            phase = .done
            limitReached = .commandsBeforeLogin
            return [reply("-ERR Too many commands before login."), .close]
        }
        let (name, argument) = splitWord(line)
        switch uppercasedASCII(name) {
        case "CAPA":
            return [.send(Array(("+OK Capability list follows\r\n" + capabilities.map { $0 + "\r\n" }.joined() + ".\r\n").utf8))]
        case "QUIT":
            phase = .done
            return [reply("+OK Logging out."), .close]
        case "STLS":
            guard configuration.offersStartTLS, !isSecure else {
                return err(isSecure ? "TLS is already active." : "STLS is not available.")
            }
            input.removeAll()   // pipelined plaintext must never run after the handshake
            phase = .awaitingTLS
            return [reply("+OK Begin TLS negotiation now."), .startTLS]
        case "USER":
            guard plaintextAllowed else {
                return [reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")]
            }
            guard let argument, !argument.isEmpty, !argument.contains(0) else { return err("No username given.") }
            user = string(argument)
            return [reply("+OK")]
        case "PASS":
            guard plaintextAllowed else {
                return [reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")]
            }
            guard let user else { return err("No username given.") }
            self.user = nil
            // The password is the rest of the line: spaces are part of it.
            let password = Array(argument ?? [][...])
            phase = .awaitingVerdict(bearer: nil)
            return [.login(LoginRequest(credentials: Credentials(username: user, password: password), method: "USER"))]
        case "AUTH":
            return auth(argument)
        case "APOP", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST":
            return err("[AUTH] Authentication required.")
        default:
            return err("Unknown command.")
        }
    }

    private mutating func auth(_ argument: ArraySlice<UInt8>?) -> [ClientAction] {
        guard let argument, !argument.isEmpty else {
            // RFC 5034 leaves bare AUTH undefined; Outlook and others expect this listing.
            return [.send(Array(("+OK\r\n" + configuration.saslMechanisms.map { $0.rawValue + "\r\n" }.joined() + ".\r\n").utf8))]
        }
        let (name, initial) = splitWord(argument)
        guard let mechanism = SASL.Mechanism(name: name), configuration.saslMechanisms.contains(mechanism) else {
            return err("Unsupported authentication mechanism.")
        }
        guard plaintextAllowed else {
            return [reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")]
        }
        var exchange = SASLExchange(mechanism: mechanism)
        guard let initial else { return saslStep(exchange.start(initialResponse: nil), exchange) }
        switch SASL.parseInitialResponse(initial) {
        case .data(let data): return saslStep(exchange.start(initialResponse: data), exchange)
        case .cancelled, .invalid: return err("Invalid base64 data in initial response.")
        }
    }

    private mutating func saslStep(_ step: SASLExchange.Step, _ exchange: SASLExchange) -> [ClientAction] {
        switch step {
        case .challenge(let challenge):
            phase = .authenticating(exchange)
            return [.send(continuation(challenge))]
        case .failed:
            // It decoded, but is no valid message of the mechanism (an empty PLAIN message):
            // a failed authentication, as a store says it, not a protocol error.
            phase = .commands
            return [reply(Self.authenticationFailed)]
        case .done(let credentials):
            phase = .awaitingVerdict(bearer: credentials.bearer?.mechanism)
            return [.login(LoginRequest(credentials: credentials, method: "AUTH \(exchange.mechanism.rawValue)"))]
        }
    }
}
