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

/// How a listener runs its client-facing machine, whatever the protocol.
public struct PreLoginConfiguration: Sendable, Equatable {
    public var greetingText: String
    /// The listener offers STARTTLS (STLS) and the connection is not yet encrypted.
    public var offersStartTLS: Bool
    /// A login allowed before TLS (false gives IMAP's LOGINDISABLED, RFC 9051 §6.2.3, and
    /// POP3 without USER and SASL in CAPA).
    public var allowsPlaintextLogin: Bool
    /// The listener offers the bearer-token mechanisms OAUTHBEARER and XOAUTH2 (its stores
    /// check the tokens). They follow the plaintext rule like PLAIN: a token is as good as a
    /// password to whoever reads it.
    public var oauth: Bool
    public var limits: ProtocolLimits

    public init(greetingText: String = "mailswitch ready.", offersStartTLS: Bool = false,
                allowsPlaintextLogin: Bool = true, oauth: Bool = false, limits: ProtocolLimits = ProtocolLimits()) {
        self.greetingText = greetingText
        self.offersStartTLS = offersStartTLS
        self.allowsPlaintextLogin = allowsPlaintextLogin
        self.oauth = oauth
        self.limits = limits
    }

    /// The SASL mechanisms this listener offers, in the order they are listed; any other is
    /// answered as unsupported.
    public var saslMechanisms: [SASL.Mechanism] {
        SASL.Mechanism.allCases.filter { oauth || $0.bearer == nil }
    }
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

extension BackendAction {
    /// The actions of one batch in the order the driver carries them out. A refusal in the
    /// same batch as a STARTTLS (plaintext the store sent after its answer to STARTTLS: the
    /// injection class of CVE-2011-0411) wins: no handshake is started for a login that is
    /// already refused, and what was to be sent before it still goes.
    public static func effective(_ actions: [BackendAction]) -> [BackendAction] {
        guard actions.contains(where: { if case .rejected = $0 { return true } else { return false } }) else {
            return actions
        }
        return actions.filter { $0 != .startTLS }
    }
}

/// What a read-only session's command filter does to each direction's bytes: commands that
/// would change the mailbox are answered here and never reach the store.
public protocol ReadOnlySessionFilter: Sendable {
    mutating func fromClient(_ bytes: UnsafeRawBufferPointer) -> (toStore: [UInt8], toClient: [UInt8])
    /// `toStore`: what the filter still owes the store (the rest of a literal it held back).
    mutating func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8])
}

extension IMAPReadOnlyFilter: ReadOnlySessionFilter {
    public mutating func fromClient(_ bytes: UnsafeRawBufferPointer) -> (toStore: [UInt8], toClient: [UInt8]) {
        let output: Output = fromClient(bytes)
        return (output.toStore, output.toClient)
    }

    public mutating func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8]) {
        let output: Output = fromStore(bytes)
        return (output.toClient, output.toStore)
    }
}

extension POP3ReadOnlyFilter: ReadOnlySessionFilter {
    /// POP3 has no literals: nothing is ever held for the store.
    public mutating func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8]) {
        let toClient: [UInt8] = fromStore(bytes)
        return (toClient, [])
    }
}

/// Where a store's stream of responses stands, seen as it passes to the client, so that a
/// goodbye can be put between two responses and never inside one.
public protocol ResponseFraming: Sendable {
    mutating func consume(_ bytes: UnsafeRawBufferPointer)
    /// Bytes of a literal still to come: they may pass without being looked at.
    var literalRemaining: Int { get }
    mutating func skipLiteral(_ count: Int)
    var isAtResponseBoundary: Bool { get }
}

extension IMAPResponseFraming: ResponseFraming {}
