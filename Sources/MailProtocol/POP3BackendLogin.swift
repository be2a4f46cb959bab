/// Logs in to a POP3 backend on the client's behalf: greeting, XCLIENT when the store
/// offers it (Dovecot does to trusted peers), then USER/PASS, or AUTH PLAIN when the
/// credentials cannot travel on a command line (authorization identity, CR, LF, NUL).
/// A bearer-token login goes as the client sent it, if the store lists the mechanism in its
/// CAPA `SASL` line: AUTH with the same mechanism and the same message.
///
/// To a store whose greeting offers XCLIENT, XCLIENT and the first login command (USER, or
/// AUTH PLAIN) go in one write, as Dovecot's own proxy sends them: `[XCLIENT]` in a greeting
/// is Dovecot's, and Dovecot takes pipelined commands in order (it advertises PIPELINING,
/// RFC 2449), so its answers come back in order and the login saves a round trip. PASS still
/// waits for USER's answer: sending it early too was measured (`scripts/bench profile`, POP3
/// at c32) and saved no CPU or system calls. To any other store, each command waits.
public struct POP3BackendLogin: Sendable {
    public enum TLSMode: Sendable, Equatable { case none, startTLS }

    private enum Phase: Sendable, Equatable {
        case greeting, startTLS, xclient, user, pass, auth, done
        /// The store said OK to STLS: nothing more may come before the handshake.
        case handshaking
        /// A bearer login asks CAPA first: the mechanism goes only to a store that lists it.
        case capa
        /// CAPA's lines up to the final ".".
        case capaList
        /// `AUTH <mechanism>` without the message, waiting for the store's empty challenge.
        case authChallenge
        /// The store answered a bearer login with its error challenge and got the dummy
        /// response: its -ERR is a refused token.
        case bearerRefused(challenge: String)
    }

    private let credentials: Credentials
    private let client: ClientEndpoint?
    private let tls: TLSMode
    private var phase: Phase = .greeting
    private var offersXCLIENT = false
    /// Where the login goes once the store has said OK to XCLIENT (its command is already sent).
    private var phaseAfterXCLIENT: Phase = .user
    /// The store's CAPA `SASL` line lists the bearer login's mechanism.
    private var offersBearerMechanism = false
    var input: LineBuffer

    public init(credentials: Credentials, client: ClientEndpoint?, tls: TLSMode = .none,
                limits: ProtocolLimits = ProtocolLimits()) {
        self.credentials = credentials
        self.client = client
        self.tls = tls
        self.input = LineBuffer(limit: limits.backendLineLength)
    }

    public mutating func receive<C: Collection>(_ bytes: C) -> [BackendAction] where C.Element == UInt8 {
        receiveLines(bytes)
    }

    public mutating func tlsEstablished() -> [BackendAction] {
        guard phase == .handshaking else { return [] }
        return afterGreeting()
    }

    mutating func fail(_ failure: LoginFailure, _ reason: String) -> BackendAction {
        phase = .done
        return .rejected(failure, reason: reason)
    }

    private func line(_ text: String) -> [UInt8] { Array((text + "\r\n").utf8) }

    mutating func handle(_ line: ArraySlice<UInt8>) -> [BackendAction] {
        if phase == .capaList { return capabilityLine(line) }
        let (status, rest) = splitWord(line)
        let ok = status.elementsEqual("+OK".utf8)
        let text = rest ?? [][...]
        guard ok || status.elementsEqual("-ERR".utf8) else {
            if let bearer = credentials.bearer, status.elementsEqual("+".utf8) {
                switch phase {
                case .authChallenge:
                    phase = .auth
                    return [.send(Base64.encode(bearer.message) + Array("\r\n".utf8))]
                case .auth:
                    // RFC 7628 §3.2.2: a challenge after the whole message is the store's error
                    // challenge; the exchange ends with the dummy response and the store's -ERR.
                    phase = .bearerRefused(challenge: BearerLogin.challengeText(text))
                    return [.send(Base64.encode(BearerLogin.dummyResponse) + Array("\r\n".utf8))]
                default:
                    break
                }
            }
            if phase == .auth, status.elementsEqual("+".utf8) {
                return [fail(.temporary, "backend ignored the AUTH PLAIN initial response")]
            }
            return [fail(.temporary, "unexpected backend response: \(string(line.prefix(200)))")]
        }
        switch phase {
        case .greeting:
            guard ok else { return [fail(.temporary, "backend greeting: \(string(text))")] }
            offersXCLIENT = text.starts(with: "[XCLIENT]".utf8)
            if tls == .startTLS {
                phase = .startTLS
                return [.send(self.line("STLS"))]
            }
            return afterGreeting()
        case .startTLS:
            guard ok else { return [fail(.temporary, "backend refused STLS: \(string(text))")] }
            phase = .handshaking
            return [.startTLS]
        case .xclient:
            guard ok else { return [fail(.temporary, "backend refused XCLIENT: \(string(text))")] }
            phase = phaseAfterXCLIENT
            return []
        case .user:
            guard ok else { return [refusal(text)] }
            phase = .pass
            return [.send(Array("PASS ".utf8) + credentials.password + Array("\r\n".utf8))]
        case .pass, .auth:
            guard ok else { return [refusal(text)] }
            phase = .done
            return [.accepted(BackendLoginSuccess(capabilities: nil, text: string(text), leftover: input.takeAll()))]
        case .bearerRefused(let challenge):
            guard ok else { return [fail(.authenticationFailed, "backend refused the token (\(challenge)): \(string(text))")] }
            phase = .done
            return [.accepted(BackendLoginSuccess(capabilities: nil, text: string(text), leftover: input.takeAll()))]
        case .capa:
            // A store without CAPA lists no SASL mechanism either.
            guard ok else { return [notOffered()] }
            phase = .capaList
            return []
        case .authChallenge:
            // Refused before the message was sent (an unknown mechanism after all).
            guard ok else { return [refusal(text)] }
            return [fail(.temporary, "unexpected backend response: \(string(line.prefix(200)))")]
        case .done, .handshaking, .capaList:
            return []
        }
    }

    /// One line of the store's CAPA answer (RFC 2449): `SASL` names its mechanisms; the final
    /// "." decides whether the bearer login goes.
    private mutating func capabilityLine(_ line: ArraySlice<UInt8>) -> [BackendAction] {
        guard let bearer = credentials.bearer else { return [] }
        if line.elementsEqual(".".utf8) {
            guard offersBearerMechanism else { return [notOffered()] }
            let response = Base64.encode(bearer.message)
            let command = Array("AUTH \(bearer.mechanism.rawValue) ".utf8) + response + Array("\r\n".utf8)
            // RFC 5034 §4: an AUTH command longer than 255 octets must not carry the initial
            // response (a store may refuse the long line); the message then follows the store's
            // empty challenge. Most tokens are that long.
            if command.count <= 255 {
                phase = .auth
                return [.send(command)]
            }
            phase = .authChallenge
            return [.send(self.line("AUTH \(bearer.mechanism.rawValue)"))]
        }
        let (keyword, mechanisms) = splitWord(line)
        if asciiEqualsIgnoringCase(keyword, "SASL".utf8), let mechanisms {
            offersBearerMechanism = offersBearerMechanism || mechanisms.split(separator: .space).contains {
                asciiEqualsIgnoringCase($0, bearer.mechanism.rawValue.utf8)
            }
        }
        return []
    }

    private mutating func notOffered() -> BackendAction {
        fail(.authenticationFailed, "store does not offer \(credentials.bearer?.mechanism.rawValue ?? "the mechanism")")
    }

    /// `-ERR [CODE] text`: an authentication refusal (no code, or [AUTH]) stays one; any other
    /// code (IN-USE, SYS/TEMP, SYS/PERM, LOGIN-DELAY...) reaches the client unchanged.
    private mutating func refusal(_ text: ArraySlice<UInt8>) -> BackendAction {
        let (code, message) = IMAPSyntax.splitResponseCode(text)
        guard let code, uppercasedASCII(code) != "AUTH" else {
            return fail(.authenticationFailed, "backend refused the login: \(string(text))")
        }
        return fail(.backendRefused(code: string(code), text: string(message)),
                    "backend refused the login with [\(string(code))]: \(string(message))")
    }

    private mutating func afterGreeting() -> [BackendAction] {
        let (loginPhase, command) = loginCommand()
        if offersXCLIENT, let client {
            phase = .xclient
            phaseAfterXCLIENT = loginPhase
            return [.send(line("XCLIENT ADDR=\(client.remoteAddress) PORT=\(client.remotePort) SESSION=\(client.sessionID) TTL=\(client.ttl)") + command)]
        }
        phase = loginPhase
        return [.send(command)]
    }

    private func loginCommand() -> (Phase, [UInt8]) {
        if credentials.bearer != nil { return (.capa, line("CAPA")) }
        let unsafe: (UInt8) -> Bool = { $0 == .cr || $0 == .lf || $0 == 0 }
        let user = Array(credentials.username.utf8)
        if credentials.authorizationID.isEmpty && !user.contains(where: unsafe) && !user.contains(.space)
            && !credentials.password.contains(where: unsafe) {
            return (.user, Array("USER ".utf8) + user + Array("\r\n".utf8))
        }
        return (.auth, Array("AUTH PLAIN ".utf8) + SASL.encodePlain(credentials) + Array("\r\n".utf8))
    }
}

extension POP3BackendLogin: LineDrivenStoreLogin {
    static var startTLSCommand: String { "STLS" }
    var isDecided: Bool { phase == .done }
    var awaitsHandshake: Bool { phase == .handshaking }
}
