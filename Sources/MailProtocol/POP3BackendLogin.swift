/// Logs in to a POP3 backend on the client's behalf: greeting, XCLIENT when the store
/// offers it (Dovecot does to trusted peers), then USER/PASS, or AUTH PLAIN when the
/// credentials cannot travel on a command line (authorization identity, CR, LF, NUL).
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
    }

    private let credentials: Credentials
    private let client: ClientEndpoint?
    private let tls: TLSMode
    private var phase: Phase = .greeting
    private var offersXCLIENT = false
    /// Where the login goes once the store has said OK to XCLIENT (its command is already sent).
    private var phaseAfterXCLIENT: Phase = .user
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
        let (status, rest) = splitWord(line)
        let ok = status.elementsEqual("+OK".utf8)
        let text = rest ?? [][...]
        guard ok || status.elementsEqual("-ERR".utf8) else {
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
        case .done, .handshaking:
            return []
        }
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
