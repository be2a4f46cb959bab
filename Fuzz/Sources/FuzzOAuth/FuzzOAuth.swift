// The bearer-token mechanisms: BearerLogin's parser on raw bytes, and a pre-login machine (IMAP
// or POP3) with `oauth` on, fed a client's bytes in chunks.
//
// Input: byte 0 = configuration (bit 0 offers STARTTLS, bit 1 allows plaintext login, bit 2
// starts secure, bit 3 tiny limits, bit 4 POP3 instead of IMAP), bytes 1-2 = seed of the chunk
// sizes, the rest = what the client sends; the rest is also parsed whole as an OAUTHBEARER and
// as an XOAUTH2 message.
//
// Parser invariants (fatalError): a parsed message is kept byte for byte and ends in %x01 %x01;
// its user is not empty, holds no NUL, and is what the message names (OAUTHBEARER: `n,a=` or
// `y,a=` and the user with `,` and `=` escaped as RFC 5801 says, then `,` %x01; XOAUTH2: `user=`,
// the user, %x01 `auth=`); descriptions are exactly the mechanism and the user.
// Machine invariants: those of FuzzIMAPPreLogin/FuzzPOP3PreLogin (whole CRLF lines; `.login`,
// `.startTLS`, `.close` end their batch; nothing after the end; the leftover is what the client
// sent last), and: the bearer mechanisms are advertised exactly when a login is allowed; a
// bearer login carries a message that parses to the same login, an empty password and its
// mechanism's method; a bearer login refused as a failed authentication is answered first by
// exactly its mechanism's error challenge, and the next thing sent is the NO / -ERR of a failed
// authentication (or the end of the session at a limit); any other refusal answers at once.
import FuzzSupport
import MailProtocol

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = UnsafeBufferPointer(start: start, count: count)
    guard data.count >= 3 else { return 0 }
    let flags = data[0]
    var choices = Choices(data[1], data[2])
    let input = Array(data[3...])

    checkParser(input)

    var limits = ProtocolLimits()
    if flags & 0x08 != 0 {
        limits.lineLength = 64
        limits.literalSize = 32
        limits.commandSize = 128
        limits.invalidCommands = 3
    }
    let configuration = PreLoginConfiguration(offersStartTLS: flags & 0x01 != 0, allowsPlaintextLogin: flags & 0x02 != 0,
                                              oauth: true, limits: limits)
    let pop3 = flags & 0x10 != 0
    var machine: any PreLoginMachine = pop3 ? POP3PreLogin(configuration: configuration, secure: flags & 0x04 != 0)
                                            : IMAPPreLogin(configuration: configuration, secure: flags & 0x04 != 0)
    requireLines(machine.greeting(), "greeting")
    checkAdvertised(machine, configuration)

    let failures: [LoginFailure] = [.authenticationFailed, .temporary, .authenticationFailed,
                                    .limit(text: "Too many sessions."), .unavailable(text: "Moving\r\n* OK injected")]
    var logins = 0
    var finished = false
    var fed: [UInt8] = []
    /// An error challenge is out: the next thing sent is the failure (or the end at a limit).
    var challengeOut = false

    var offset = 0
    while offset < input.count {
        let size = choices.chunk(input.count - offset)
        let chunk = input[offset..<(offset + size)]
        offset += size
        fed += chunk
        var batch = machine.receive(chunk)
        if finished {
            require(batch.isEmpty, "actions after the session ended: \(batch)")
            continue
        }
        while !batch.isEmpty {
            let current = batch
            batch = []
            for (index, action) in current.enumerated() {
                let isLast = index == current.count - 1
                switch action {
                case .send(let bytes):
                    requireLines(bytes, "send")
                    if challengeOut {
                        require(isFinalAnswer(bytes, pop3: pop3),
                                "after the error challenge came \(String(decoding: bytes, as: UTF8.self).debugDescription)")
                        challengeOut = false
                    }
                case .close:
                    require(isLast, ".close is not the last action: \(current)")
                    finished = true
                case .startTLS:
                    require(isLast, ".startTLS is not the last action: \(current)")
                    require(!challengeOut, "STARTTLS while an error challenge is out")
                    machine.tlsEstablished()
                    checkAdvertised(machine, configuration)
                case .login(let request):
                    require(isLast, ".login is not the last action: \(current)")
                    require(!challengeOut, "a login while an error challenge is out")
                    require(!request.credentials.username.isEmpty, "login with an empty user name")
                    let bearer = request.credentials.bearer
                    if let bearer {
                        checkBearerRequest(request, bearer, pop3: pop3)
                    }
                    logins += 1
                    if logins % 4 == 0 {
                        let (reply, leftover) = machine.loginAccepted(BackendLoginSuccess(capabilities: nil, text: "Logged in."))
                        requireLines(reply, "login reply")
                        require(leftover.count <= fed.count && fed.suffix(leftover.count).elementsEqual(leftover),
                                "leftover is not what the client sent last")
                        require(machine.loginRejected(.temporary).isEmpty, "a second verdict was taken")
                        finished = true
                        continue
                    }
                    let failure = failures[(logins - 1) % failures.count]
                    batch = machine.loginRejected(failure)
                    let first: [UInt8] = if case .send(let bytes)? = batch.first { bytes } else { [] }
                    if let bearer, failure == .authenticationFailed {
                        let challenge = Array("+ ".utf8) + Base64.encode(bearer.mechanism.errorChallenge) + Array("\r\n".utf8)
                        require(first == challenge, "the refused bearer login got \(first) and not its error challenge")
                        batch.removeFirst()
                        challengeOut = true
                    } else {
                        require(!first.starts(with: Array("+ ".utf8)), "a challenge for a refusal that has none")
                    }
                }
            }
        }
    }
    return 0
}

/// The failure that ends an exchange after its error challenge: IMAP's tagged NO (the tag is
/// the client's, not known here), POP3's -ERR; or the goodbye of an over-long response line.
func isFinalAnswer(_ bytes: [UInt8], pop3: Bool) -> Bool {
    let text = String(decoding: bytes, as: UTF8.self)
    if pop3 { return text == "-ERR [AUTH] Authentication failed.\r\n" || text == "-ERR Line too long.\r\n" }
    if text == "* BYE [TOOBIG] Command line too long.\r\n" { return true }
    let suffix = " NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    return text.hasSuffix(suffix) && !text.hasPrefix("* ") && !text.hasPrefix("+ ")
        && !text.dropLast(suffix.count).contains(" ") && text.utf8.filter { $0 == 10 }.count == 1
}

/// The bearer mechanisms are listed exactly where a login is allowed (after PLAIN and LOGIN).
func checkAdvertised(_ machine: any PreLoginMachine, _ configuration: PreLoginConfiguration) {
    let greeting = machine.greeting()
    if let imap = machine as? IMAPPreLogin {
        let allowed = imap.isSecure || configuration.allowsPlaintextLogin
        require(imap.capabilities.contains("AUTH=OAUTHBEARER") == allowed && imap.capabilities.contains("AUTH=XOAUTH2") == allowed,
                "IMAP advertises \(imap.capabilities) with plaintext login \(allowed)")
        require(contains(greeting, Array("AUTH=OAUTHBEARER AUTH=XOAUTH2".utf8)) == allowed, "greeting \(greeting)")
    } else if let pop3 = machine as? POP3PreLogin {
        let allowed = pop3.isSecure || configuration.allowsPlaintextLogin
        require(pop3.capabilities.contains("SASL PLAIN LOGIN OAUTHBEARER XOAUTH2") == allowed,
                "POP3 advertises \(pop3.capabilities) with plaintext login \(allowed)")
    }
}

func checkBearerRequest(_ request: LoginRequest, _ bearer: BearerLogin, pop3: Bool) {
    let credentials = request.credentials
    require(credentials.username == bearer.user && credentials.password.isEmpty && credentials.authorizationID.isEmpty,
            "bearer credentials \(credentials) do not hold what the message says")
    require(BearerLogin(mechanism: bearer.mechanism, message: bearer.message) == bearer, "the message does not parse again")
    require(request.method == (pop3 ? "AUTH " : "AUTHENTICATE ") + bearer.mechanism.rawValue, "method \(request.method)")
    require(credentials.description == "user=\(bearer.user) sasl=\(bearer.mechanism.rawValue)", "description \(credentials)")
}

func checkParser(_ message: [UInt8]) {
    for mechanism in BearerLogin.Mechanism.allCases {
        guard let login = BearerLogin(mechanism: mechanism, message: message) else { continue }
        require(login.message == message, "the message was not kept")
        require(message.suffix(2).elementsEqual([1, 1]), "parsed without the final %x01 %x01")
        let user = Array(login.user.utf8)
        require(!user.isEmpty && !user.contains(0), "user \(user)")
        require(login.description == "\(mechanism.rawValue) user=\(login.user)", "description \(login.description)")
        switch mechanism {
        case .oauthBearer:
            var escaped: [UInt8] = []
            for byte in user {
                switch byte {
                case UInt8(ascii: ","): escaped += Array("=2C".utf8)
                case UInt8(ascii: "="): escaped += Array("=3D".utf8)
                default: escaped.append(byte)
                }
            }
            let header = Array(",a=".utf8) + escaped + [UInt8(ascii: ","), 1]
            require((message.first == UInt8(ascii: "n") || message.first == UInt8(ascii: "y"))
                        && message.dropFirst().starts(with: header), "OAUTHBEARER user \(login.user) is not the message's a=")
            require(contains(message, Array("\u{1}auth=".utf8)), "OAUTHBEARER without auth")
        case .xoauth2:
            require(message.starts(with: Array("user=".utf8) + user + Array("\u{1}auth=".utf8)), "XOAUTH2 user \(login.user)")
        }
    }
}
