/// What the session driver needs from a client-facing pre-login state machine; IMAP and POP3
/// both provide it, so one driver serves both protocols.
public protocol PreLoginMachine: Sendable {
    func greeting() -> [UInt8]
    mutating func receive<C: Collection>(_ bytes: C) -> [ClientAction] where C.Element == UInt8
    mutating func loginAccepted(_ success: BackendLoginSuccess) -> (reply: [UInt8], leftover: [UInt8])
    mutating func loginRejected(_ failure: LoginFailure) -> [ClientAction]
    mutating func tlsEstablished()
    /// The last words before the proxy hangs up on an idle client.
    func goodbye(_ text: String) -> [UInt8]
    /// The same for a reason that passes (a shutdown, a limit): IMAP's `[UNAVAILABLE]`,
    /// POP3's `[SYS/TEMP]` (RFC 5530, RFC 3206).
    func temporaryGoodbye(_ text: String) -> [UInt8]
    /// Which limit ended the session, when one did.
    var limitReached: ProtocolLimit? { get }
}

/// What the driver needs from a backend-facing login state machine.
public protocol BackendLoginMachine: Sendable {
    mutating func receive<C: Collection>(_ bytes: C) -> [BackendAction] where C.Element == UInt8
    mutating func tlsEstablished() -> [BackendAction]
}

extension IMAPPreLogin: PreLoginMachine {
    public func goodbye(_ text: String) -> [UInt8] { Array("* BYE \(text)\r\n".utf8) }
    public func temporaryGoodbye(_ text: String) -> [UInt8] { goodbye("[UNAVAILABLE] \(LoginFailure.lineText(text))") }
}

extension POP3PreLogin: PreLoginMachine {
    public func goodbye(_ text: String) -> [UInt8] { Array("-ERR \(text)\r\n".utf8) }
    public func temporaryGoodbye(_ text: String) -> [UInt8] { goodbye("[SYS/TEMP] \(LoginFailure.lineText(text))") }
}

extension IMAPBackendLogin: BackendLoginMachine {}
extension POP3BackendLogin: BackendLoginMachine {}
