// A backend-login machine (IMAP or POP3), fed a store's bytes in chunks.
//
// Input: byte 0 = setup (bit 0: with a ClientEndpoint; bit 1: STARTTLS towards the store; bits 2-3:
// which of four fixed credentials - plain, a user name with a space and a password to quote, a
// password with CR LF and 8-bit bytes, an authorization identity; bit 4: a tiny line limit; bit 5:
// bits 2-3 pick one of four bearer logins instead - OAUTHBEARER with a short token, with a token
// too long for a POP3 initial response, with an escaped user, and XOAUTH2),
// bytes 1-2 = seed of the chunk sizes and of when `tlsEstablished()` is called out of turn, the
// rest = what the store sends.
//
// Invariants (fatalError): every `.send` ends in CRLF; `.accepted`/`.rejected` end their batch and
// nothing follows them; `.startTLS` comes at most once, only when asked for, and is last in its
// batch unless a refusal of bytes sent after the store's answer follows it; no credential
// is sent before the handshake; `tlsEstablished()` out of turn (no TLS, or once more after the
// handshake) does nothing; the leftover handed over on acceptance is a suffix of what the store
// sent; a log reason holds the password only if the store sent it. A bearer login's message
// goes only whole and unchanged (base64 on a line of its own or after `AUTHENTICATE <mech> ` /
// `AUTH <mech> `), never before the handshake, and no log reason holds its token.
import FuzzSupport
import MailProtocol

/// The backend-login fuzzers' common run: `make` builds the machine under test from the
/// credentials, the client endpoint (or none), whether STARTTLS is asked for, and the limits.
public func fuzzBackendLogin(_ start: UnsafePointer<UInt8>, _ count: Int, localPort: Int,
                             make: (Credentials, ClientEndpoint?, Bool, ProtocolLimits) -> any BackendLoginMachine) -> CInt {
    guard let fuzzInput = FuzzInput(start, count, headerCount: 1) else { return 0 }
    let flags = fuzzInput.header[0]
    var choices = fuzzInput.choices
    let input = fuzzInput.body

    let credentials = (flags & 0x20 != 0 ? bearerCredentials : fixedCredentials)[Int(flags >> 2 & 3)]
    let client = flags & 0x01 != 0 ? ClientEndpoint(remoteAddress: "192.0.2.7", remotePort: 50000, localAddress: "127.0.0.1",
                                                    localPort: localPort, sessionID: "sess\"ion\\1") : nil
    let startTLS = flags & 0x02 != 0
    var limits = ProtocolLimits()
    if flags & 0x10 != 0 { limits.backendLineLength = 128 }
    var machine = make(credentials, client, startTLS, limits)
    let plain = SASL.encodePlain(credentials)
    // What must not leak: the password, or a bearer login's token and its encoded message.
    let secret = credentials.bearer.map { bearerToken($0.message) } ?? credentials.password
    require(!secret.isEmpty, "a fixed credential without a secret")
    let encodedMessage = credentials.bearer.map { Base64.encode($0.message) }

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
                    require(!contains(bytes, secret) && !contains(bytes, plain) && !contains(bytes, encodedMessage ?? plain),
                            "a credential was sent before the TLS handshake: \(bytes)")
                }
                if let encodedMessage, contains(bytes, encodedMessage) {
                    require(sendsMessageWhole(bytes, encodedMessage), "the bearer message went out of shape: \(bytes)")
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
                require(secret.count < 4 || !contains(Array(reason.utf8), secret)
                            || contains(fed, secret), "the password or the token is in a log reason")
                finished = true
            }
        }
    }

    var offset = 0
    while offset < input.count {
        let chunk = choices.chunk(of: input, from: &offset)
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

/// A line that carries the encoded bearer message carries it whole, at its end, after
/// `AUTHENTICATE <mech> `, `AUTH <mech> ` or nothing.
func sendsMessageWhole(_ bytes: [UInt8], _ encoded: [UInt8]) -> Bool {
    var lines: [[UInt8]] = [[]]
    for byte in bytes {
        if byte == 10 { lines.append([]) } else if byte != 13 { lines[lines.count - 1].append(byte) }
    }
    return lines.filter { contains($0, encoded) }.allSatisfy { line in
        guard line.count >= encoded.count, line.suffix(encoded.count).elementsEqual(encoded) else { return false }
        let head = String(decoding: line.dropLast(encoded.count), as: UTF8.self)
        return head.isEmpty || ["OAUTHBEARER", "XOAUTH2"].contains { head.hasSuffix("AUTHENTICATE \($0) ") || head == "AUTH \($0) " }
    }
}

/// The token of a bearer message: what follows `auth=Bearer ` up to the next %x01.
func bearerToken(_ message: [UInt8]) -> [UInt8] {
    let marker = Array("auth=Bearer ".utf8)
    guard let start = (0...(message.count - marker.count)).first(where: { message[$0..<($0 + marker.count)].elementsEqual(marker) })
    else { return [] }
    return Array(message[(start + marker.count)...].prefix { $0 != 1 })
}

let bearerCredentials = [
    "n,a=alice,\u{1}host=store.example.org\u{1}port=143\u{1}auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRh\u{1}\u{1}",
    "n,a=bob@example.org,\u{1}auth=Bearer " + String(repeating: "eyJhbGciOiJSUzI1NiJ9", count: 12) + "\u{1}\u{1}",
    "y,a=c=2Carol=3D,\u{1}auth=Bearer tok-._~+/en==\u{1}\u{1}",
    "user=dave@example.org\u{1}auth=Bearer ya29.a0AfH6SMBx\u{1}\u{1}",
].enumerated().map { index, message in
    Credentials(bearer: BearerLogin(mechanism: index == 3 ? .xoauth2 : .oauthBearer, message: Array(message.utf8))!)
}

let fixedCredentials = [
    Credentials(username: "alice", password: Array("secret".utf8)),
    Credentials(username: "bob smith", password: Array("p@ss \"word\" \\ 100%".utf8)),
    Credentials(username: "carol@example.org", password: [0xC3, 0xA9, 0x74, 0xC3, 0xA9, 13, 10, 0x7B, 0x33, 0x7D]),
    Credentials(authorizationID: "shared", username: "admin", password: Array("admin-secret".utf8)),
]

