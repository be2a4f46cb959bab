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
// Machine invariants: PreLoginHarness's, and: the bearer mechanisms are advertised exactly when a
// login is allowed; a bearer login carries a message that parses to the same login, an empty
// password and its mechanism's method; a bearer login refused as a failed authentication is
// answered first by exactly its mechanism's error challenge, and the next thing sent is the NO /
// -ERR of a failed authentication (or the end of the session at a limit); any other refusal
// answers at once. Every fourth login is accepted, the others refused in a rotation where a
// failed authentication comes often.
import FuzzSupport
import MailProtocol
import PreLoginHarness

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let setup = PreLoginSetup(start, count, oauth: true) else { return 0 }
    checkParser(setup.client)
    let pop3 = setup.flags & 0x10 != 0
    let machine: any InspectablePreLoginMachine = pop3 ? POP3PreLogin(configuration: setup.configuration, secure: setup.secure)
                                                       : IMAPPreLogin(configuration: setup.configuration, secure: setup.secure)
    runPreLogin(machine, setup, checks: BearerChecks(pop3: pop3)) { login in
        login % 4 == 0 ? .accept(BackendLoginSuccess(capabilities: nil, text: "Logged in."))
                       : .reject(failures[(login - 1) % failures.count])
    }
    return 0
}

let failures: [LoginFailure] = [.authenticationFailed, .temporary, .authenticationFailed,
                                .limit(text: "Too many sessions."), .unavailable(text: "Moving\r\n* OK injected")]

/// The bearer mechanisms' rules, on top of the harness's.
struct BearerChecks: PreLoginChecks {
    let pop3: Bool
    /// An error challenge is out: the next thing sent is the failure (or the end at a limit).
    var challengeOut = false

    /// The bearer mechanisms are listed exactly where a login is allowed (after PLAIN and LOGIN).
    func offers(_ machine: some InspectablePreLoginMachine) {
        let allowed = machine.isSecure || machine.configuration.allowsPlaintextLogin
        let capabilities = machine.capabilities
        if pop3 {
            require(capabilities.contains("SASL PLAIN LOGIN OAUTHBEARER XOAUTH2") == allowed,
                    "POP3 advertises \(capabilities) with plaintext login \(allowed)")
        } else {
            require(capabilities.contains("AUTH=OAUTHBEARER") == allowed && capabilities.contains("AUTH=XOAUTH2") == allowed,
                    "IMAP advertises \(capabilities) with plaintext login \(allowed)")
            let greeting = machine.greeting()
            require(contains(greeting, Array("AUTH=OAUTHBEARER AUTH=XOAUTH2".utf8)) == allowed, "greeting \(greeting)")
        }
    }

    mutating func sent(_ bytes: [UInt8]) {
        if challengeOut {
            require(isFinalAnswer(bytes, pop3: pop3),
                    "after the error challenge came \(String(decoding: bytes, as: UTF8.self).debugDescription)")
            challengeOut = false
        }
    }

    func startTLS() {
        require(!challengeOut, "STARTTLS while an error challenge is out")
    }

    func login(_ request: LoginRequest) {
        require(!challengeOut, "a login while an error challenge is out")
        if let bearer = request.credentials.bearer {
            checkBearerRequest(request, bearer, pop3: pop3)
        }
    }

    mutating func rejected(_ request: LoginRequest, _ failure: LoginFailure, answer: inout [ClientAction]) {
        let first: [UInt8] = if case .send(let bytes)? = answer.first { bytes } else { [] }
        if let bearer = request.credentials.bearer, failure == .authenticationFailed {
            let challenge = Array("+ ".utf8) + Base64.encode(bearer.mechanism.errorChallenge) + Array("\r\n".utf8)
            require(first == challenge, "the refused bearer login got \(first) and not its error challenge")
            answer.removeFirst()
            challengeOut = true
        } else {
            require(!first.starts(with: Array("+ ".utf8)), "a challenge for a refusal that has none")
        }
    }
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
