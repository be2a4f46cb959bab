// A backend-login machine (IMAP or POP3), fed a store's bytes in chunks.
//
// Input: byte 0 = setup (bit 0: with a ClientEndpoint; bit 1: STARTTLS towards the store; bits 2-3:
// which of four fixed credentials - plain, a user name with a space and a password to quote, a
// password with CR LF and 8-bit bytes, an authorization identity; bit 4: a tiny line limit),
// bytes 1-2 = seed of the chunk sizes and of when `tlsEstablished()` is called out of turn, the
// rest = what the store sends.
//
// Invariants (fatalError): every `.send` ends in CRLF; `.accepted`/`.rejected` end their batch and
// nothing follows them; `.startTLS` comes at most once, only when asked for, and is last in its
// batch unless a refusal of bytes sent after the store's answer follows it; no credential
// is sent before the handshake; `tlsEstablished()` out of turn (no TLS, or once more after the
// handshake) does nothing; the leftover handed over on acceptance is a suffix of what the store
// sent; a log reason holds the password only if the store sent it.
import FuzzSupport
import MailProtocol

/// The backend-login fuzzers' common run: `make` builds the machine under test from the
/// credentials, the client endpoint (or none), whether STARTTLS is asked for, and the limits.
public func fuzzBackendLogin(_ start: UnsafePointer<UInt8>, _ count: Int, localPort: Int,
                             make: (Credentials, ClientEndpoint?, Bool, ProtocolLimits) -> any BackendLoginMachine) -> CInt {
    let data = UnsafeBufferPointer(start: start, count: count)
    guard data.count >= 3 else { return 0 }
    let flags = data[0]
    var choices = Choices(data[1], data[2])
    let input = Array(data[3...])

    let credentials = fixedCredentials[Int(flags >> 2 & 3)]
    let client = flags & 0x01 != 0 ? ClientEndpoint(remoteAddress: "192.0.2.7", remotePort: 50000, localAddress: "127.0.0.1",
                                                    localPort: localPort, sessionID: "sess\"ion\\1") : nil
    let startTLS = flags & 0x02 != 0
    var limits = ProtocolLimits()
    if flags & 0x10 != 0 { limits.backendLineLength = 128 }
    var machine = make(credentials, client, startTLS, limits)
    let plain = SASL.encodePlain(credentials)

    var fed: [UInt8] = []
    var finished = false
    var startTLSCount = 0
    var tlsDone = !startTLS

    func check(_ batch: [BackendAction]) {
        for (index, action) in batch.enumerated() {
            let isLast = index == batch.count - 1
            switch action {
            case .send(let bytes):
                require(bytes.count >= 2 && bytes.suffix(2).elementsEqual([13, 10]), "send does not end in CRLF: \(bytes)")
                if !tlsDone {
                    require(!contains(bytes, credentials.password) && !contains(bytes, plain),
                            "a credential was sent before the TLS handshake: \(bytes)")
                }
            case .startTLS:
                startTLSCount += 1
                require(startTLS && startTLSCount == 1, "unexpected .startTLS")
                // Only the refusal of plaintext sent after the store's answer may follow it.
                let refusedAfter = index == batch.count - 2 && { if case .rejected = batch[index + 1] { return true }; return false }()
                require(isLast || refusedAfter, ".startTLS is followed by something other than a refusal: \(batch)")
            case .accepted(let success):
                require(isLast, ".accepted is not the last action: \(batch)")
                require(tlsDone, "accepted before the TLS handshake")
                require(success.leftover.count <= fed.count && fed.suffix(success.leftover.count).elementsEqual(success.leftover),
                        "leftover is not what the store sent last")
                finished = true
            case .rejected(_, let reason):
                require(isLast, ".rejected is not the last action: \(batch)")
                require(credentials.password.count < 4 || !contains(Array(reason.utf8), credentials.password)
                            || contains(fed, credentials.password), "the password is in a log reason")
                finished = true
            }
        }
    }

    var offset = 0
    while offset < input.count {
        let size = choices.chunk(input.count - offset)
        let chunk = input[offset..<(offset + size)]
        offset += size
        fed += chunk
        let batch = machine.receive(chunk)
        if finished {
            require(batch.isEmpty, "actions after the verdict: \(batch)")
            continue
        }
        check(batch)
        if batch.last == .startTLS, !finished {
            tlsDone = true
            check(machine.tlsEstablished())
        } else if tlsDone && choices.below(8) == 0 {
            // Once the handshake is done (or when there is none) the call means nothing.
            require(machine.tlsEstablished().isEmpty, "a spurious tlsEstablished() did something")
        }
    }
    return 0
}

let fixedCredentials = [
    Credentials(username: "alice", password: Array("secret".utf8)),
    Credentials(username: "bob smith", password: Array("p@ss \"word\" \\ 100%".utf8)),
    Credentials(username: "carol@example.org", password: [0xC3, 0xA9, 0x74, 0xC3, 0xA9, 13, 10, 0x7B, 0x33, 0x7D]),
    Credentials(authorizationID: "shared", username: "admin", password: Array("admin-secret".utf8)),
]

