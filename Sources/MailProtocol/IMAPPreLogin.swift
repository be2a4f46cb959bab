/// The client side of an IMAP session before login (RFC 9051 / RFC 3501 not-authenticated
/// state): greeting, CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and AUTHENTICATE.
///
/// A pure value: bytes in, actions out. Once the backend accepts the login the proxy stops
/// parsing; whatever the client pipelined after its login command is handed back untouched.
public struct IMAPPreLogin: Sendable {
    public typealias Configuration = PreLoginConfiguration

    private enum Phase: Sendable, Equatable {
        case commands
        case authenticating(tag: [UInt8], SASLExchange)
        /// A login is out; `bearer` when it came through a bearer-token mechanism.
        case awaitingVerdict(tag: [UInt8], bearer: BearerLogin.Mechanism?)
        /// A bearer login failed and its error challenge is out (RFC 7628 §3.2.2): the client's
        /// one response line, whatever it holds, then the tagged NO.
        case bearerFailure(tag: [UInt8])
        /// After STARTTLS: plaintext bytes are dropped until the handshake is done.
        case awaitingTLS
        case done
    }

    public let configuration: Configuration
    public private(set) var isSecure: Bool
    /// ID fields the client sent, for the log (RFC 2971 limits them to 30 short pairs).
    public private(set) var clientID: [(field: String, value: String?)] = []

    private var phase: Phase = .commands
    private var input: LineBuffer
    private var parts: [IMAPCommandPart] = []
    private var commandBytes = 0
    private var pendingLiteral: Int?
    private var askedForCapability = false
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
        var caps = ["IMAP4rev1", "SASL-IR", "LOGIN-REFERRALS", "ID", "ENABLE", "IDLE", "LITERAL+"]
        if configuration.offersStartTLS && !isSecure { caps.append("STARTTLS") }
        if plaintextAllowed {
            caps += configuration.saslMechanisms.map { "AUTH=\($0.rawValue)" }
        } else {
            caps.append("LOGINDISABLED")
        }
        return caps
    }

    public func greeting() -> [UInt8] {
        Array("* OK [CAPABILITY \(capabilities.joined(separator: " "))] \(configuration.greetingText)\r\n".utf8)
    }

    public mutating func receive<C: Collection>(_ bytes: C) -> [ClientAction] where C.Element == UInt8 {
        guard phase != .done, phase != .awaitingTLS else { return [] }
        input.append(bytes)
        if case .awaitingVerdict = phase { return [] }
        return process()
    }

    /// The backend accepted: the reply for the client, and the bytes it pipelined after its
    /// login command, which belong to the backend now.
    public mutating func loginAccepted(_ success: BackendLoginSuccess) -> (reply: [UInt8], leftover: [UInt8]) {
        guard case .awaitingVerdict(let tag, _) = phase else { return ([], []) }
        phase = .done
        var reply = ""
        let text = success.text.isEmpty ? "Logged in" : success.text
        if let caps = success.capabilities {
            let list = caps.joined(separator: " ")
            // Some clients ignore the code in the tagged OK; one that asked before
            // login gets the untagged form too (Dovecot's proxy does the same).
            if askedForCapability { reply += "* CAPABILITY \(list)\r\n" }
            reply += "\(string(tag)) OK [CAPABILITY \(list)] \(text)\r\n"
        } else {
            reply += "\(string(tag)) OK \(text)\r\n"
        }
        return (Array(reply.utf8), input.takeAll())
    }

    public mutating func loginRejected(_ failure: LoginFailure) -> [ClientAction] {
        guard case .awaitingVerdict(let tag, let bearer) = phase else { return [] }
        phase = .commands
        let line: String
        switch failure {
        case .authenticationFailed:
            if let bearer {
                // The NO waits for the client's response to the error challenge.
                phase = .bearerFailure(tag: tag)
                return [.send(continuation(bearer.errorChallenge))] + process()
            }
            line = Self.authenticationFailed
        case .temporary:
            line = "NO [UNAVAILABLE] Account is temporarily unavailable."
        case .unavailable(let text):
            line = "NO [UNAVAILABLE] \(LoginFailure.lineText(text))"
        case .limit(let text):
            line = "NO [LIMIT] \(LoginFailure.lineText(text))"
        case .backendRefused(let code, let text):
            line = "NO [\(code)] \(text.isEmpty ? "Login refused." : text)"
        }
        return [.send(tagged(tag, line))] + process()
    }

    /// The handshake finished; the client starts over with CAPABILITY (RFC 9051 §6.2.1).
    public mutating func tlsEstablished() {
        guard phase == .awaitingTLS else { return }
        phase = .commands
        isSecure = true
        askedForCapability = false
    }

    // MARK: - Command assembly

    private mutating func process() -> [ClientAction] {
        var actions: [ClientAction] = []
        while true {
            switch phase {
            case .done, .awaitingVerdict, .awaitingTLS:
                return actions
            case .bearerFailure(let tag):
                switch input.nextLine() {
                case .incomplete: return actions
                case .tooLong: return actions + lineTooLong()
                case .line:
                    // RFC 7628 asks for a single %x01; a cancellation or anything else ends
                    // the exchange just as well, and the answer is the same.
                    phase = .commands
                    actions.append(.send(tagged(tag, Self.authenticationFailed)))
                }
            case .authenticating(let tag, var exchange):
                switch input.nextLine() {
                case .incomplete: return actions
                case .tooLong: return actions + lineTooLong()
                case .line(let line):
                    phase = .commands
                    switch SASL.parseResponse(line) {
                    case .cancelled:
                        actions += bad(tag, "Authentication cancelled.")
                    case .invalid:
                        actions += bad(tag, "Invalid base64 data in SASL response.")
                    case .data(let data):
                        actions += saslStep(tag: tag, exchange.respond(data), exchange)
                    }
                }
            case .commands:
                if let needed = pendingLiteral {
                    guard let payload = input.take(needed) else { return actions }
                    parts.append(.literal(Array(payload)))
                    pendingLiteral = nil
                    continue
                }
                switch input.nextLine() {
                case .incomplete:
                    return actions
                case .tooLong:
                    return actions + lineTooLong()
                case .line(let line):
                    commandBytes += line.count
                    if let marker = IMAPLiteralMarker(endOf: line) {
                        parts.append(.text(line[line.startIndex..<marker.textEnd]))
                        commandBytes += marker.count
                        if marker.count > configuration.limits.literalSize
                            || commandBytes > configuration.limits.commandSize {
                            let tag = commandTag() ?? Array("*".utf8)
                            resetCommand()
                            if marker.synchronizing {
                                actions += bad(tag, "[TOOBIG] Literal too large.")
                                continue
                            }
                            // The client is already sending the payload: there is no way
                            // to resynchronise with it, so end the session (RFC 7888 §4).
                            phase = .done
                            limitReached = .literalSize
                            return actions + [.send(tagged(tag, "BAD [TOOBIG] Literal too large.")),
                                              .send(Array("* BYE Too large literal.\r\n".utf8)), .close]
                        }
                        if marker.synchronizing {
                            // Only LOGIN and ID take strings before login: a continuation
                            // for anything else (APPEND) would invite a payload that ends
                            // in BAD anyway.
                            guard literalAllowed() else {
                                let tag = commandTag() ?? Array("*".utf8)
                                resetCommand()
                                actions += bad(tag, "Command not permitted before login.")
                                continue
                            }
                            actions.append(.send(Array("+ Ready for literal data\r\n".utf8)))
                        }
                        pendingLiteral = marker.count
                        continue
                    }
                    parts.append(.text(line))
                    let command = parts
                    resetCommand()
                    actions += handle(command)
                }
            }
        }
    }

    private mutating func resetCommand() {
        parts = []
        commandBytes = 0
        pendingLiteral = nil
    }

    private func literalAllowed() -> Bool {
        guard case .text(let first)? = parts.first, let afterTag = splitWord(first).rest else { return false }
        let name = uppercasedASCII(splitWord(afterTag).word)
        return name == "LOGIN" || name == "ID"
    }

    private func commandTag() -> [UInt8]? {
        guard case .text(let first)? = parts.first else { return nil }
        let tag = splitWord(first).word
        return IMAPSyntax.isValidTag(tag) ? Array(tag) : nil
    }

    private mutating func lineTooLong() -> [ClientAction] {
        phase = .done
        limitReached = .lineLength
        return [.send(Array("* BYE [TOOBIG] Command line too long.\r\n".utf8)), .close]
    }

    private func tagged(_ tag: [UInt8], _ text: String) -> [UInt8] {
        tag + Array(" \(text)\r\n".utf8)
    }

    private static let authenticationFailed = "NO [AUTHENTICATIONFAILED] Authentication failed."

    /// A SASL challenge: `+ base64` (an empty one is `+ ` and nothing more).
    private func continuation(_ challenge: [UInt8]) -> [UInt8] {
        Array("+ ".utf8) + Base64.encode(challenge) + Array("\r\n".utf8)
    }

    private mutating func bad(_ tag: [UInt8], _ text: String) -> [ClientAction] {
        invalidCommands += 1
        if invalidCommands >= configuration.limits.invalidCommands {
            phase = .done
            limitReached = .invalidCommands
            return [.send(tagged(tag, "BAD \(text)")),
                    .send(Array("* BYE Too many invalid commands.\r\n".utf8)), .close]
        }
        return [.send(tagged(tag, "BAD \(text)"))]
    }

    // MARK: - Commands

    private mutating func handle(_ command: [IMAPCommandPart]) -> [ClientAction] {
        guard case .text(let first) = command[0] else { return [] }
        if command.count == 1 && first.allSatisfy({ $0 == .space }) { return [] } // stray CRLF
        commands += 1
        if commands > configuration.limits.commandsBeforeLogin {
            phase = .done
            limitReached = .commandsBeforeLogin
            return [.send(Array("* BYE Too many commands before login.\r\n".utf8)), .close]
        }
        let (tagBytes, afterTag) = splitWord(first)
        guard IMAPSyntax.isValidTag(tagBytes) else { return bad(Array("*".utf8), "Invalid tag.") }
        let tag = Array(tagBytes)
        guard let afterTag, !afterTag.isEmpty else { return bad(tag, "Missing command.") }
        let (name, afterName) = splitWord(afterTag)
        var argumentParts = command
        argumentParts[0] = .text(afterName ?? [][...])
        guard let arguments = IMAPSyntax.tokenize(argumentParts) else {
            return bad(tag, "Syntax error in arguments.")
        }

        switch uppercasedASCII(name) {
        case "CAPABILITY":
            guard arguments.isEmpty else { return bad(tag, "CAPABILITY takes no arguments.") }
            askedForCapability = true
            return [.send(Array("* CAPABILITY \(capabilities.joined(separator: " "))\r\n".utf8)
                          + tagged(tag, "OK Pre-login capabilities listed, post-login capabilities have more."))]
        case "NOOP":
            guard arguments.isEmpty else { return bad(tag, "NOOP takes no arguments.") }
            return [.send(tagged(tag, "OK NOOP completed."))]
        case "LOGOUT":
            guard arguments.isEmpty else { return bad(tag, "LOGOUT takes no arguments.") }
            phase = .done
            return [.send(Array("* BYE Logging out\r\n".utf8) + tagged(tag, "OK Logout completed.")), .close]
        case "ID":
            return id(tag: tag, arguments)
        case "STARTTLS":
            guard arguments.isEmpty else { return bad(tag, "STARTTLS takes no arguments.") }
            guard configuration.offersStartTLS, !isSecure else {
                return bad(tag, isSecure ? "TLS is already active." : "STARTTLS is not available.")
            }
            // Whatever the client pipelined after STARTTLS arrived in plaintext and must
            // never be executed after the handshake (the CVE-2011-0411 class).
            input.removeAll()
            phase = .awaitingTLS
            return [.send(tagged(tag, "OK Begin TLS negotiation now.")), .startTLS]
        case "LOGIN":
            guard arguments.count == 2, let user = arguments[0].astring, let password = arguments[1].astring else {
                return bad(tag, "LOGIN expects a user name and a password.")
            }
            guard plaintextAllowed else {
                return [.send(tagged(tag, "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections."))]
            }
            return login(tag: tag, Credentials(username: string(user), password: password), method: "LOGIN")
        case "AUTHENTICATE":
            return authenticate(tag: tag, arguments)
        case "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB",
             "NAMESPACE", "STATUS", "APPEND", "IDLE", "ENABLE", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE",
             "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID", "GETQUOTA", "GETQUOTAROOT", "GETACL",
             "SETACL", "MYRIGHTS", "LISTRIGHTS", "GETMETADATA", "SETMETADATA", "COMPRESS", "NOTIFY":
            return bad(tag, "Command not permitted before login.")
        default:
            return bad(tag, "Unknown command.")
        }
    }

    private mutating func id(tag: [UInt8], _ arguments: [IMAPToken]) -> [ClientAction] {
        let limits = configuration.limits
        var fields: [(field: String, value: String?)] = []
        if arguments.count == 1, arguments[0].isNIL {
            // ID NIL: the client tells nothing.
        } else {
            guard arguments.count >= 2, arguments.first == .listOpen, arguments.last == .listClose else {
                return bad(tag, "Invalid ID parameters.")
            }
            // Beyond RFC 2971's limits (30 pairs, 30-byte fields, 1024-byte values) the client is
            // wrong, but a BAD here breaks real clients (OfflineIMAP, Roundcube behind nginx):
            // keep what is within the limits, ignore the rest, and answer as usual.
            let inner = Array(arguments.dropFirst().dropLast())
            var index = 0
            while index + 1 < inner.count, fields.count < limits.idPairs {
                defer { index += 2 }
                guard case .string(let field) = inner[index], field.count <= 30 else { continue }
                switch inner[index + 1] {
                case .string(let value) where value.count <= 1024:
                    fields.append((string(field), string(value)))
                case let token where token.isNIL:
                    fields.append((string(field), nil))
                default:
                    continue
                }
            }
        }
        clientID = fields
        return [.send(Array("* ID (\"name\" \"mailswitch\")\r\n".utf8) + tagged(tag, "OK ID completed."))]
    }

    private mutating func authenticate(tag: [UInt8], _ arguments: [IMAPToken]) -> [ClientAction] {
        guard (1...2).contains(arguments.count), case .atom(let mechanismName) = arguments[0] else {
            return bad(tag, "AUTHENTICATE expects a mechanism name.")
        }
        guard let mechanism = SASL.Mechanism(name: mechanismName), configuration.saslMechanisms.contains(mechanism) else {
            return [.send(tagged(tag, "NO [CANNOT] Unsupported authentication mechanism."))]
        }
        guard plaintextAllowed else {
            return [.send(tagged(tag, "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections."))]
        }
        var exchange = SASLExchange(mechanism: mechanism)
        guard arguments.count == 2 else {
            return saslStep(tag: tag, exchange.start(initialResponse: nil), exchange)
        }
        guard case .atom(let initial) = arguments[1] else { return bad(tag, "Invalid initial response.") }
        switch SASL.parseInitialResponse(initial[...]) {
        case .data(let data):
            return saslStep(tag: tag, exchange.start(initialResponse: data), exchange)
        case .cancelled, .invalid:
            return bad(tag, "Invalid base64 data in initial response.")
        }
    }

    private mutating func saslStep(tag: [UInt8], _ step: SASLExchange.Step, _ exchange: SASLExchange) -> [ClientAction] {
        switch step {
        case .challenge(let challenge):
            phase = .authenticating(tag: tag, exchange)
            return [.send(continuation(challenge))]
        case .failed:
            // It decoded, but is no valid message of the mechanism (an empty PLAIN message):
            // a failed authentication, as a store says it, not a protocol error.
            phase = .commands
            return [.send(tagged(tag, Self.authenticationFailed))]
        case .done(let credentials):
            phase = .commands
            return login(tag: tag, credentials, method: "AUTHENTICATE \(exchange.mechanism.rawValue)")
        }
    }

    private mutating func login(tag: [UInt8], _ credentials: Credentials, method: String) -> [ClientAction] {
        guard !credentials.username.isEmpty else {
            return [.send(tagged(tag, Self.authenticationFailed))]
        }
        phase = .awaitingVerdict(tag: tag, bearer: credentials.bearer?.mechanism)
        let ttl = clientID.first { $0.field.lowercased() == "x-proxy-ttl" }?.value.flatMap { Int($0) }
        return [.login(LoginRequest(credentials: credentials, method: method, proxyTTL: ttl))]
    }
}
