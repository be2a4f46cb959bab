/// Logs in to an IMAP backend on the client's behalf, the way Dovecot's proxy does: read the
/// greeting (asking CAPABILITY if it carries none), forward the client's address in ID when
/// the store speaks ID, then AUTHENTICATE PLAIN (SASL-IR when offered) or LOGIN with each
/// argument quoted or sent as a literal as its bytes require. A bearer-token login is sent
/// as the client sent it: AUTHENTICATE with the same mechanism and the same message.
public struct IMAPBackendLogin: Sendable {
    public enum TLSMode: Sendable, Equatable { case none, startTLS }

    private enum Phase: Sendable, Equatable {
        case greeting
        case startTLS
        /// The store said OK to STARTTLS: nothing more may come before the handshake.
        case handshaking
        case capability(afterLogin: Bool)
        case loginContinuation   // waiting for "+" before sending the next chunk
        case loginResult
        /// The store answered a bearer login with its error challenge and got the dummy
        /// response: its NO is a refused token.
        case bearerRefused(challenge: String)
        case done
    }

    private static let capabilityTag = "M1"
    private static let idTag = "M2"
    private static let loginTag = "M3"
    private static let startTLSTag = "M4"

    private let credentials: Credentials
    private let client: ClientEndpoint?
    private let tls: TLSMode
    private var phase: Phase = .greeting
    var input: LineBuffer
    private var capabilities: [String]?
    private var pendingChunks: [[UInt8]] = []
    private var loginCapabilities: [String]?
    private var successText = ""

    /// - Parameter client: forwarded in ID `x-*` fields when given.
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

    /// After `.startTLS`: the handshake with the backend is done.
    public mutating func tlsEstablished() -> [BackendAction] {
        guard phase == .handshaking else { return [] }
        capabilities = nil
        phase = .capability(afterLogin: false)
        return [.send(Array("\(Self.capabilityTag) CAPABILITY\r\n".utf8))]
    }

    mutating func fail(_ failure: LoginFailure, _ reason: String) -> BackendAction {
        phase = .done
        return .rejected(failure, reason: reason)
    }

    private static func parseCapabilities(_ list: ArraySlice<UInt8>) -> [String] {
        list.split(separator: .space).map { string($0) }
    }

    private func has(_ capability: String) -> Bool {
        capabilities?.contains { $0.uppercased() == capability } ?? false
    }

    mutating func handle(_ line: ArraySlice<UInt8>) -> [BackendAction] {
        let (first, rest) = splitWord(line)
        let body = rest ?? [][...]

        if first.elementsEqual("*".utf8) {
            let (kind, afterKind) = splitWord(body)
            let kindName = uppercasedASCII(kind)
            let payload = afterKind ?? [][...]
            if kindName == "BYE" {
                return [fail(.temporary, "backend said BYE: \(string(payload))")]
            }
            if kindName == "CAPABILITY" {
                if phase == .greeting || phase == .capability(afterLogin: false) {
                    capabilities = Self.parseCapabilities(payload)
                } else {
                    loginCapabilities = Self.parseCapabilities(payload)
                }
                return []
            }
            if phase == .greeting {
                guard kindName == "OK" else {
                    return [fail(.temporary, "unexpected backend greeting: \(string(line.prefix(200)))")]
                }
                let (code, _) = IMAPSyntax.splitResponseCode(payload)
                if let code, code.count > 11, uppercasedASCII(code.prefix(11)) == "CAPABILITY " {
                    capabilities = Self.parseCapabilities(code.dropFirst(11))
                }
                if tls == .startTLS {
                    phase = .startTLS
                    return [.send(Array("\(Self.startTLSTag) STARTTLS\r\n".utf8))]
                }
                if capabilities == nil {
                    phase = .capability(afterLogin: false)
                    return [.send(Array("\(Self.capabilityTag) CAPABILITY\r\n".utf8))]
                }
                return startLogin()
            }
            return []   // other untagged data (ID replies and the like) is not ours to judge
        }

        if first.elementsEqual("+".utf8) {
            if phase == .loginResult, credentials.bearer != nil {
                // RFC 7628 §3.2.2: a continuation after the whole message is the store's error
                // challenge; the exchange ends with the dummy response and the store's NO.
                phase = .bearerRefused(challenge: BearerLogin.challengeText(body))
                return [.send(Base64.encode(BearerLogin.dummyResponse) + Array("\r\n".utf8))]
            }
            guard phase == .loginContinuation, !pendingChunks.isEmpty else {
                return [fail(.temporary, "unexpected continuation from backend")]
            }
            let chunk = pendingChunks.removeFirst()
            if pendingChunks.isEmpty { phase = .loginResult }
            return [.send(chunk)]
        }

        let tag = string(first)
        let (status, afterStatus) = splitWord(body)
        let statusName = uppercasedASCII(status)
        let (code, text) = IMAPSyntax.splitResponseCode(afterStatus ?? [][...])

        switch (phase, tag) {
        case (.startTLS, Self.startTLSTag):
            guard statusName == "OK" else {
                return [fail(.temporary, "backend refused STARTTLS: \(string(text))")]
            }
            phase = .handshaking
            return [.startTLS]
        case (.capability(let afterLogin), Self.capabilityTag):
            guard statusName == "OK" else {
                return [fail(.temporary, "backend refused CAPABILITY: \(string(text))")]
            }
            if afterLogin {
                phase = .done
                return [.accepted(BackendLoginSuccess(capabilities: loginCapabilities, text: successText,
                                                      leftover: input.takeAll()))]
            }
            return startLogin()
        case (.loginContinuation, Self.loginTag), (.loginResult, Self.loginTag):
            return loginResult(statusName, code: code, text: text)
        case (.bearerRefused(let challenge), Self.loginTag) where statusName == "NO":
            return [fail(.authenticationFailed, "backend refused the token (\(challenge)): \(string(text))")]
        case (.bearerRefused, Self.loginTag):
            return loginResult(statusName, code: code, text: text)
        case (_, Self.idTag):
            return []   // the store may refuse our ID; the login decides
        default:
            return [fail(.temporary, "unexpected backend response: \(string(line.prefix(200)))")]
        }
    }

    private mutating func loginResult(_ status: String, code: ArraySlice<UInt8>?, text: ArraySlice<UInt8>) -> [BackendAction] {
        switch status {
        case "OK":
            successText = string(text)
            if let code, code.count > 11, uppercasedASCII(code.prefix(11)) == "CAPABILITY " {
                loginCapabilities = Self.parseCapabilities(code.dropFirst(11))
            }
            if loginCapabilities == nil {
                phase = .capability(afterLogin: true)
                return [.send(Array("\(Self.capabilityTag) CAPABILITY\r\n".utf8))]
            }
            phase = .done
            return [.accepted(BackendLoginSuccess(capabilities: loginCapabilities, text: successText,
                                                  leftover: input.takeAll()))]
        case "NO":
            let codeName = code.map { uppercasedASCII(splitWord($0).word) }
            if codeName == nil || codeName == "AUTHENTICATIONFAILED" {
                return [fail(.authenticationFailed, "backend refused the login: \(string(text))")]
            }
            return [fail(.backendRefused(code: string(code!), text: string(text)),
                         "backend refused the login with [\(string(code!))]: \(string(text))")]
        default:
            return [fail(.temporary, "backend answered the login with \(status): \(string(text))")]
        }
    }

    /// AUTHENTICATE with the whole base64 response: inline when the store offers SASL-IR
    /// (RFC 4959), else after its empty challenge.
    private mutating func authenticate(_ mechanism: String, _ response: [UInt8]) -> [UInt8] {
        if has("SASL-IR") {
            phase = .loginResult
            return Array("\(Self.loginTag) AUTHENTICATE \(mechanism) ".utf8) + response + Array("\r\n".utf8)
        }
        pendingChunks = [response + Array("\r\n".utf8)]
        phase = .loginContinuation
        return Array("\(Self.loginTag) AUTHENTICATE \(mechanism)\r\n".utf8)
    }

    private mutating func startLogin() -> [BackendAction] {
        // Checked first: a store that cannot take the token gets neither it nor our ID.
        if let bearer = credentials.bearer, !has("AUTH=\(bearer.mechanism.rawValue)") {
            return [fail(.authenticationFailed, "store does not offer \(bearer.mechanism.rawValue)")]
        }
        var output: [UInt8] = []
        if has("ID"), let client {
            let fields = [("x-originating-ip", client.remoteAddress), ("x-originating-port", String(client.remotePort)),
                          ("x-connected-ip", client.localAddress), ("x-connected-port", String(client.localPort)),
                          ("x-session-id", client.sessionID), ("x-proxy-ttl", String(client.ttl))]
            let list = fields.map { "\(IMAPSyntax.quoted($0.0)) \(IMAPSyntax.quoted($0.1))" }.joined(separator: " ")
            output += Array("\(Self.idTag) ID (\(list))\r\n".utf8)
        }
        if let bearer = credentials.bearer {
            output += authenticate(bearer.mechanism.rawValue, Base64.encode(bearer.message))
            return [.send(output)]
        }
        if has("AUTH=PLAIN") {
            output += authenticate("PLAIN", SASL.encodePlain(credentials))
            return [.send(output)]
        }
        if has("LOGINDISABLED") {
            return [fail(.temporary, "backend advertises LOGINDISABLED and no AUTH=PLAIN")]
        }
        guard credentials.authorizationID.isEmpty else {
            return [fail(.temporary, "backend lacks AUTH=PLAIN, needed to pass an authorization identity")]
        }
        // LOGIN user password, each argument atom/quoted inline or as a literal.
        let nonSynchronizing = has("LITERAL+")
        var chunks: [[UInt8]] = []
        var current = Array("\(Self.loginTag) LOGIN".utf8)
        for argument in [Array(credentials.username.utf8), credentials.password] {
            current.append(.space)
            switch IMAPSyntax.encodeAString(argument) {
            case .inline(let encoded):
                current += encoded
            case .literal(let payload):
                current += Array("{\(payload.count)\(nonSynchronizing ? "+" : "")}\r\n".utf8)
                if nonSynchronizing {
                    current += payload
                } else {
                    chunks.append(current)
                    current = payload
                }
            }
        }
        current += Array("\r\n".utf8)
        chunks.append(current)
        output += chunks.removeFirst()
        pendingChunks = chunks
        phase = chunks.isEmpty ? .loginResult : .loginContinuation
        return [.send(output)]
    }
}

extension IMAPBackendLogin: LineDrivenStoreLogin {
    static var startTLSCommand: String { "STARTTLS" }
    var isDecided: Bool { phase == .done }
    var awaitsHandshake: Bool { phase == .handshaking }
}
