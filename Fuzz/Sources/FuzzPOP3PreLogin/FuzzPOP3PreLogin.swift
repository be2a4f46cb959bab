// POP3PreLogin, fed a client's bytes in chunks.
//
// Input: byte 0 = configuration (bit 0 offers STLS, bit 1 allows plaintext login, bit 2 starts
// secure, bit 3 tiny limits so that every limit is reachable within -max_len), bytes 1-2 = seed
// of the chunk sizes, the rest = what the client sends.
//
// The driver answers the machine the way the proxy does: `.login` is rejected and accepted in
// turn (the failure kind rotating), `.startTLS` is followed by `tlsEstablished()`.
// Invariants (fatalError): every `.send` is whole CRLF lines; `.login`, `.startTLS` and `.close`
// end their batch; a login never has an empty user name nor goes through in plaintext when that
// is not allowed; nothing comes after `.close` or an accepted login; the leftover handed over on
// acceptance is a suffix of what the client sent.
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

    var limits = ProtocolLimits()
    if flags & 0x08 != 0 {
        limits.lineLength = 64
        limits.invalidCommands = 3
    }
    let configuration = POP3PreLogin.Configuration(offersStartTLS: flags & 0x01 != 0,
                                                   allowsPlaintextLogin: flags & 0x02 != 0, limits: limits)
    var machine = POP3PreLogin(configuration: configuration, secure: flags & 0x04 != 0)
    requireLines(machine.greeting(), "greeting")
    requireLines(machine.goodbye("Server shutting down."), "goodbye")
    _ = machine.capabilities

    let failures: [LoginFailure] = [
        .authenticationFailed, .temporary, .unavailable(text: "Mailbox is being moved\r\n+OK injected"),
        .backendRefused(code: "IN-USE", text: "Mailbox in use."), .backendRefused(code: "SYS/PERM", text: ""),
    ]
    var logins = 0
    var finished = false    // closed, or logged in: the machine is out of the picture
    var fed: [UInt8] = []

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
                case .close:
                    require(isLast, ".close is not the last action: \(current)")
                    finished = true
                case .startTLS:
                    require(isLast, ".startTLS is not the last action: \(current)")
                    machine.tlsEstablished()
                    require(machine.isSecure, "not secure after tlsEstablished()")
                case .login(let request):
                    require(isLast, ".login is not the last action: \(current)")
                    require(!request.credentials.username.isEmpty, "login with an empty user name")
                    require(machine.isSecure || configuration.allowsPlaintextLogin, "plaintext login went through")
                    logins += 1
                    if logins % 2 == 1 {
                        batch = machine.loginRejected(failures[(logins / 2) % failures.count])
                    } else {
                        let (reply, leftover) = machine.loginAccepted(
                            BackendLoginSuccess(capabilities: nil, text: logins % 4 == 0 ? "" : "Logged in."))
                        requireLines(reply, "login reply")
                        require(leftover.count <= fed.count && fed.suffix(leftover.count).elementsEqual(leftover),
                                "leftover is not what the client sent last")
                        require(machine.loginRejected(.temporary).isEmpty, "a second verdict was taken")
                        finished = true
                    }
                }
            }
        }
    }
    return 0
}
