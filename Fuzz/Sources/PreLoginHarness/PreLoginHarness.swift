// A pre-login machine (IMAP or POP3), fed a client's bytes in chunks and answered the way the
// proxy answers it: `.login` gets the verdict the fuzzer picks, `.startTLS` is followed by
// `tlsEstablished()`.
//
// Input: byte 0 = configuration (bit 0 offers STARTTLS/STLS, bit 1 allows plaintext login, bit 2
// starts secure, bit 3 tiny limits so that every limit is reachable within -max_len; bits 4-7 are
// the fuzzer's own), bytes 1-2 = seed of the chunk sizes, the rest = what the client sends.
//
// Invariants (fatalError): the greeting, the goodbye, every `.send` and every login reply are
// whole CRLF lines; `.login`, `.startTLS` and `.close` end their batch; the machine is secure
// after `tlsEstablished()`; a login never has an empty user name nor goes through in plaintext
// when that is not allowed; nothing comes after `.close` or an accepted login, and a second
// verdict is not taken; the leftover handed over on acceptance is a suffix of what the client
// sent. A fuzzer adds its own checks through `PreLoginChecks`.
import FuzzSupport
import MailProtocol

/// A pre-login machine whose state the checks can read besides driving it.
public protocol InspectablePreLoginMachine: PreLoginMachine {
    var configuration: PreLoginConfiguration { get }
    var isSecure: Bool { get }
    var capabilities: [String] { get }
}

extension IMAPPreLogin: InspectablePreLoginMachine {}
extension POP3PreLogin: InspectablePreLoginMachine {}

/// The proxy's answer to a login.
public enum ProxyVerdict {
    case accept(BackendLoginSuccess)
    case reject(LoginFailure)
}

/// What a fuzzer checks beyond the common invariants, told of each step of the run (after the
/// common checks of that step). Every step is optional: the defaults check nothing.
public protocol PreLoginChecks {
    /// What the machine offers: at the start, and again after the TLS handshake, which changes it.
    mutating func offers(_ machine: some InspectablePreLoginMachine)
    /// Bytes sent to the client.
    mutating func sent(_ bytes: [UInt8])
    /// The machine asks for the TLS handshake.
    mutating func startTLS()
    /// A login, before its verdict.
    mutating func login(_ request: LoginRequest)
    /// The machine's answer to a refused login, before the run goes through it. A reply that
    /// only this fuzzer knows how to check (a bearer login's error challenge) may be checked and
    /// taken off its front, so that the rest meets the common checks and `sent`.
    mutating func rejected(_ request: LoginRequest, _ failure: LoginFailure, answer: inout [ClientAction])
}

extension PreLoginChecks {
    public mutating func offers(_ machine: some InspectablePreLoginMachine) {}
    public mutating func sent(_ bytes: [UInt8]) {}
    public mutating func startTLS() {}
    public mutating func login(_ request: LoginRequest) {}
    public mutating func rejected(_ request: LoginRequest, _ failure: LoginFailure, answer: inout [ClientAction]) {}
}

/// The common invariants alone.
public struct NoExtraChecks: PreLoginChecks {
    public init() {}
}

/// What byte 0 sets up, with the seed and the client's bytes.
public struct PreLoginSetup {
    /// Byte 0 whole, for the fuzzer's own bits (4-7).
    public let flags: UInt8
    public let configuration: PreLoginConfiguration
    /// The connection starts secure (TLS from the first byte).
    public let secure: Bool
    public let choices: Choices
    public let client: [UInt8]

    /// nil when the input is too short. `oauth` offers the bearer-token mechanisms.
    public init?(_ start: UnsafePointer<UInt8>, _ count: Int, oauth: Bool = false) {
        guard let input = FuzzInput(start, count, headerCount: 1) else { return nil }
        flags = input.header[0]
        var limits = ProtocolLimits()
        if flags & 0x08 != 0 {
            // Small enough for every limit to be reached within -max_len (POP3 has only the
            // line length and the invalid commands).
            limits.lineLength = 64
            limits.literalSize = 32
            limits.commandSize = 128
            limits.idPairs = 2
            limits.invalidCommands = 3
        }
        configuration = PreLoginConfiguration(offersStartTLS: flags & 0x01 != 0, allowsPlaintextLogin: flags & 0x02 != 0,
                                              oauth: oauth, limits: limits)
        secure = flags & 0x04 != 0
        choices = input.choices
        client = input.body
    }
}

/// The pre-login fuzzers' common run: feeds `machine` the client's bytes in the chunks the seed
/// picks, answers its `login`th login (from 1) with `verdict(login)`, and checks the invariants
/// above and `checks`.
public func runPreLogin<Checks: PreLoginChecks>(_ machine: some InspectablePreLoginMachine, _ setup: PreLoginSetup,
                                                checks: Checks = NoExtraChecks(),
                                                verdict: (_ login: Int) -> ProxyVerdict) {
    var machine = machine
    var checks = checks
    var choices = setup.choices
    let input = setup.client
    requireLines(machine.greeting(), "greeting")
    requireLines(machine.goodbye("Server shutting down."), "goodbye")
    _ = machine.capabilities
    checks.offers(machine)

    var logins = 0
    var finished = false    // closed, or logged in: the machine is out of the picture
    var fed: [UInt8] = []

    var offset = 0
    while offset < input.count {
        let chunk = choices.chunk(of: input, from: &offset)
        fed += chunk
        var batch = machine.receive(chunk)
        if finished {
            require(batch.isEmpty, "actions after the session ended: \(batch)")
            continue
        }
        // A refused login's answer is a batch of its own, checked like the client's.
        while !batch.isEmpty {
            let current = batch
            batch = []
            for (index, action) in current.enumerated() {
                let isLast = index == current.count - 1
                switch action {
                case .send(let bytes):
                    requireLines(bytes, "send")
                    checks.sent(bytes)
                case .close:
                    require(isLast, ".close is not the last action: \(current)")
                    finished = true
                case .startTLS:
                    require(isLast, ".startTLS is not the last action: \(current)")
                    checks.startTLS()
                    machine.tlsEstablished()
                    require(machine.isSecure, "not secure after tlsEstablished()")
                    checks.offers(machine)
                case .login(let request):
                    require(isLast, ".login is not the last action: \(current)")
                    require(!request.credentials.username.isEmpty, "login with an empty user name")
                    require(machine.isSecure || machine.configuration.allowsPlaintextLogin, "plaintext login went through")
                    checks.login(request)
                    logins += 1
                    switch verdict(logins) {
                    case .accept(let success):
                        let (reply, leftover) = machine.loginAccepted(success)
                        requireLines(reply, "login reply")
                        require(leftover.count <= fed.count && fed.suffix(leftover.count).elementsEqual(leftover),
                                "leftover is not what the client sent last")
                        require(machine.loginRejected(.temporary).isEmpty, "a second verdict was taken")
                        finished = true
                    case .reject(let failure):
                        batch = machine.loginRejected(failure)
                        checks.rejected(request, failure, answer: &batch)
                    }
                }
            }
        }
    }
}
