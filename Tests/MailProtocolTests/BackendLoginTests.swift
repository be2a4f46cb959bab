import MailProtocol
import XCTest

private func text(_ actions: [BackendAction]) -> String {
    actions.compactMap { if case .send(let bytes) = $0 { return String(decoding: bytes, as: UTF8.self) } else { return nil } }.joined()
}

private let endpoint = ClientEndpoint(remoteAddress: "192.0.2.7", remotePort: 50000, localAddress: "127.0.0.1",
                                      localPort: 143, sessionID: "s1")

final class IMAPBackendLoginTests: XCTestCase {
    func testForwardsClientInIDAndUsesPlainWithSASLIR() {
        var machine = IMAPBackendLogin(credentials: Credentials(username: "alice", password: [UInt8]("secret")), client: endpoint)
        let actions = machine.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] ready\r\n"))
        let plain = String(decoding: Base64.encode([UInt8]("\0alice\0secret")), as: UTF8.self)
        XCTAssertEqual(text(actions), #"M2 ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "50000" "x-connected-ip" "127.0.0.1" "x-connected-port" "143" "x-session-id" "s1" "x-proxy-ttl" "5")"# + "\r\nM3 AUTHENTICATE PLAIN \(plain)\r\n")
        let done = machine.receive([UInt8]("* ID NIL\r\nM2 OK ID done\r\nM3 OK [CAPABILITY IMAP4rev1 IDLE X-STORE-NEW] Logged in\r\n* 1 EXISTS\r\n"))
        XCTAssertEqual(done, [.accepted(BackendLoginSuccess(capabilities: ["IMAP4rev1", "IDLE", "X-STORE-NEW"],
                                                           text: "Logged in", leftover: [UInt8]("* 1 EXISTS\r\n")))])
    }

    func testAsksCapabilityWhenTheGreetingHasNoneAndWaitsForPlainContinuation() {
        var machine = IMAPBackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil)
        XCTAssertEqual(text(machine.receive([UInt8]("* OK hello\r\n"))), "M1 CAPABILITY\r\n")
        XCTAssertEqual(text(machine.receive([UInt8]("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nM1 OK done\r\n"))), "M3 AUTHENTICATE PLAIN\r\n")
        XCTAssertEqual(text(machine.receive([UInt8]("+ \r\n"))), String(decoding: Base64.encode([UInt8]("\0u\0p")), as: UTF8.self) + "\r\n")
        // No capabilities in the OK: ask for them after login.
        XCTAssertEqual(text(machine.receive([UInt8]("M3 OK Logged in\r\n"))), "M1 CAPABILITY\r\n")
        XCTAssertEqual(machine.receive([UInt8]("* CAPABILITY IMAP4rev1 MOVE\r\nM1 OK\r\n")),
                       [.accepted(BackendLoginSuccess(capabilities: ["IMAP4rev1", "MOVE"], text: "Logged in"))])
    }

    func testLoginQuotesOrSendsLiteralsAsTheBytesRequire() {
        var quoted = IMAPBackendLogin(credentials: Credentials(username: "carol", password: [UInt8](#"a "q" \b"#)), client: nil)
        XCTAssertEqual(text(quoted.receive([UInt8]("* OK [CAPABILITY IMAP4rev1] hi\r\n"))), #"M3 LOGIN carol "a \"q\" \\b""# + "\r\n")

        var literal = IMAPBackendLogin(credentials: Credentials(username: "erin", password: [UInt8]("ünï {5}")), client: nil)
        XCTAssertEqual(text(literal.receive([UInt8]("* OK [CAPABILITY IMAP4rev1] hi\r\n"))), "M3 LOGIN erin {9}\r\n")
        XCTAssertEqual(text(literal.receive([UInt8]("+ go ahead\r\n"))), "ünï {5}\r\n")
        XCTAssertEqual(literal.receive([UInt8]("M3 OK [CAPABILITY IMAP4rev1] ok\r\n")),
                       [.accepted(BackendLoginSuccess(capabilities: ["IMAP4rev1"], text: "ok"))])

        var plus = IMAPBackendLogin(credentials: Credentials(username: "erin", password: [UInt8]("ü")), client: nil)
        XCTAssertEqual(text(plus.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n"))), "M3 LOGIN erin {2+}\r\nü\r\n")
    }

    func testRefusalsKeepTheirMeaning() {
        func verdict(_ reply: String, caps: String = "IMAP4rev1 AUTH=PLAIN SASL-IR") -> [BackendAction] {
            var machine = IMAPBackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil)
            _ = machine.receive([UInt8]("* OK [CAPABILITY \(caps)] hi\r\n"))
            return machine.receive([UInt8](reply))
        }
        XCTAssertEqual(verdict("M3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
                       [.rejected(.authenticationFailed, reason: "backend refused the login: Authentication failed.")])
        XCTAssertEqual(verdict("M3 NO bad password\r\n"),
                       [.rejected(.authenticationFailed, reason: "backend refused the login: bad password")])
        XCTAssertEqual(verdict("M3 NO [UNAVAILABLE] Maintenance\r\n"),
                       [.rejected(.backendRefused(code: "UNAVAILABLE", text: "Maintenance"), reason: "backend refused the login with [UNAVAILABLE]: Maintenance")])
        guard case .rejected(.temporary, _)? = verdict("M3 BAD what\r\n").first else { return XCTFail("BAD must be temporary") }
        guard case .rejected(.temporary, _)? = verdict("* BYE shutting down\r\n").first else { return XCTFail("BYE must be temporary") }
        var disabled = IMAPBackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil)
        guard case .rejected(.temporary, _)? = disabled.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n")).first
        else { return XCTFail("LOGINDISABLED without AUTH=PLAIN must be temporary") }
    }
}

final class POP3BackendLoginTests: XCTestCase {
    func testUserPass() {
        var machine = POP3BackendLogin(credentials: Credentials(username: "bob", password: [UInt8]("pw with spaces")), client: endpoint)
        XCTAssertEqual(text(machine.receive([UInt8]("+OK Dovecot ready.\r\n"))), "USER bob\r\n")
        XCTAssertEqual(text(machine.receive([UInt8]("+OK\r\n"))), "PASS pw with spaces\r\n")
        XCTAssertEqual(machine.receive([UInt8]("+OK Logged in.\r\n")), [.accepted(BackendLoginSuccess(capabilities: nil, text: "Logged in."))])
    }

    func testXCLIENTWhenOfferedGoesInOneWriteWithTheLoginCommand() {
        var machine = POP3BackendLogin(credentials: Credentials(username: "bob", password: [UInt8]("pw")), client: endpoint)
        XCTAssertEqual(machine.receive([UInt8]("+OK [XCLIENT] Dovecot ready.\r\n")),
                       [.send([UInt8]("XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=s1 TTL=5\r\nUSER bob\r\n"))])
        XCTAssertEqual(machine.receive([UInt8]("+OK\r\n")), [])
        XCTAssertEqual(text(machine.receive([UInt8]("+OK\r\n"))), "PASS pw\r\n")
        XCTAssertEqual(machine.receive([UInt8]("+OK Logged in.\r\n")), [.accepted(BackendLoginSuccess(capabilities: nil, text: "Logged in."))])

        // Both pipelined answers in one read, then a refused password: the login's refusal.
        var refused = POP3BackendLogin(credentials: Credentials(username: "bob", password: [UInt8]("pw")), client: endpoint)
        _ = refused.receive([UInt8]("+OK [XCLIENT] Dovecot ready.\r\n"))
        XCTAssertEqual(text(refused.receive([UInt8]("+OK\r\n+OK\r\n"))), "PASS pw\r\n")
        XCTAssertEqual(refused.receive([UInt8]("-ERR [AUTH] Authentication failed.\r\n")),
                       [.rejected(.authenticationFailed, reason: "backend refused the login: [AUTH] Authentication failed.")])

        // Both answers in one read, and AUTH PLAIN in place of USER.
        var auth = POP3BackendLogin(credentials: Credentials(authorizationID: "bob", username: "admin", password: [UInt8]("pw")), client: endpoint)
        let plain = "AUTH PLAIN " + String(decoding: Base64.encode([UInt8]("bob\0admin\0pw")), as: UTF8.self) + "\r\n"
        XCTAssertEqual(text(auth.receive([UInt8]("+OK [XCLIENT] ready\r\n"))), "XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=s1 TTL=5\r\n" + plain)
        XCTAssertEqual(auth.receive([UInt8]("+OK\r\n+OK Logged in.\r\n")), [.accepted(BackendLoginSuccess(capabilities: nil, text: "Logged in."))])
    }

    func testARefusedXCLIENTEndsTheAttemptAsTemporaryWhateverTheLoginAnswer() {
        var machine = POP3BackendLogin(credentials: Credentials(username: "bob", password: [UInt8]("pw")), client: endpoint)
        _ = machine.receive([UInt8]("+OK [XCLIENT] Dovecot ready.\r\n"))
        XCTAssertEqual(machine.receive([UInt8]("-ERR You are not from trusted IP\r\n+OK\r\n")),
                       [.rejected(.temporary, reason: "backend refused XCLIENT: You are not from trusted IP")])
    }

    func testAuthPlainWhenCredentialsCannotTravelOnALine() {
        var machine = POP3BackendLogin(credentials: Credentials(authorizationID: "bob", username: "admin", password: [UInt8]("pw")), client: nil)
        XCTAssertEqual(text(machine.receive([UInt8]("+OK hi\r\n"))), "AUTH PLAIN " + String(decoding: Base64.encode([UInt8]("bob\0admin\0pw")), as: UTF8.self) + "\r\n")
    }

    func testRefusals() {
        func verdict(_ reply: String) -> [BackendAction] {
            var machine = POP3BackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil)
            _ = machine.receive([UInt8]("+OK hi\r\n+OK\r\n"))
            return machine.receive([UInt8](reply))
        }
        XCTAssertEqual(verdict("-ERR [AUTH] Authentication failed.\r\n"),
                       [.rejected(.authenticationFailed, reason: "backend refused the login: [AUTH] Authentication failed.")])
        XCTAssertEqual(verdict("-ERR [IN-USE] Mailbox locked\r\n"),
                       [.rejected(.backendRefused(code: "IN-USE", text: "Mailbox locked"), reason: "backend refused the login with [IN-USE]: Mailbox locked")])
        XCTAssertEqual(verdict("-ERR [SYS/TEMP] Try later\r\n"),
                       [.rejected(.backendRefused(code: "SYS/TEMP", text: "Try later"), reason: "backend refused the login with [SYS/TEMP]: Try later")])
        var greeting = POP3BackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil)
        guard case .rejected(.temporary, _)? = greeting.receive([UInt8]("-ERR go away\r\n")).first else { return XCTFail("bad greeting is temporary") }
    }
}

final class Base64AndSASLTests: XCTestCase {
    func testRoundTripAndStrictness() {
        for sample in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "\0alice\0pässwörd"] {
            let encoded = Base64.encode([UInt8](sample))
            XCTAssertEqual(Base64.decode(encoded), [UInt8](sample))
        }
        XCTAssertEqual(String(decoding: Base64.encode([UInt8]("foobar")), as: UTF8.self), "Zm9vYmFy")
        XCTAssertNil(Base64.decode([UInt8]("Zm9v YmFy")))
        XCTAssertNil(Base64.decode([UInt8]("Zm9")))
        XCTAssertNil(Base64.decode([UInt8]("Z===")))
        XCTAssertNil(Base64.decode([UInt8]("Zg==Zg==")))
    }

    func testPlainMessageShape() {
        XCTAssertNil(SASL.decodePlain([UInt8]("alice\0pw")))
        XCTAssertNil(SASL.decodePlain([UInt8]("\0\0pw")))
        XCTAssertEqual(SASL.decodePlain([UInt8]("\0alice\0")), Credentials(username: "alice", password: []))
    }
}

/// Bytes a store (or someone in between) sends after its OK to STARTTLS/STLS and before the
/// handshake would otherwise be read as the store's word once TLS is up.
final class BackendStartTLSInjectionTests: XCTestCase {
    func testIMAPRefusesPlaintextAfterTheSTARTTLSAnswerAndStartsCleanAfterTheHandshake() {
        var clean = IMAPBackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil, tls: .startTLS)
        XCTAssertEqual(text(clean.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"))), "M4 STARTTLS\r\n")
        XCTAssertEqual(clean.receive([UInt8]("M4 OK Begin TLS\r\n")), [.startTLS])
        XCTAssertEqual(text(clean.tlsEstablished()), "M1 CAPABILITY\r\n")

        var injected = IMAPBackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil, tls: .startTLS)
        _ = injected.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"))
        let actions = injected.receive([UInt8]("M4 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 X-INJECTED\r\n"))
        XCTAssertEqual(actions.count, 2, "\(actions)")
        XCTAssertEqual(actions.first, .startTLS)
        guard case .rejected(.temporary, let reason)? = actions.last else { return XCTFail("\(actions)") }
        XCTAssertTrue(reason.contains("after its STARTTLS answer"), reason)
        XCTAssertEqual(injected.tlsEstablished(), [], "no login after a refusal")

        // Split: the extra bytes come in a later read, still before the handshake.
        var late = IMAPBackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil, tls: .startTLS)
        _ = late.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\nM4 OK go\r\n"))
        guard case .rejected? = late.receive([UInt8]("x")).last else { return XCTFail("late plaintext is refused too") }
    }

    func testPOP3RefusesPlaintextAfterTheSTLSAnswer() {
        var machine = POP3BackendLogin(credentials: Credentials(username: "u", password: [UInt8]("p")), client: nil, tls: .startTLS)
        XCTAssertEqual(text(machine.receive([UInt8]("+OK ready\r\n"))), "STLS\r\n")
        let actions = machine.receive([UInt8]("+OK Begin TLS\r\n+OK\r\n"))
        XCTAssertEqual(actions.first, .startTLS)
        guard case .rejected(.temporary, _)? = actions.last, actions.count == 2 else { return XCTFail("\(actions)") }
    }
}

final class ProxyHopTests: XCTestCase {
    func testTheClientsHopCountReachesTheLoginRequestAndTheStore() {
        var client = IMAPPreLogin()
        let actions = client.receive(Array("a ID (\"x-proxy-ttl\" \"3\")\r\nb LOGIN u p\r\n".utf8))
        let request = actions.compactMap { if case .login(let request) = $0 { request } else { nil } }.first
        XCTAssertEqual(request?.proxyTTL, 3)
        var store = IMAPBackendLogin(credentials: Credentials(username: "u", password: Array("p".utf8)),
                                     client: ClientEndpoint(remoteAddress: "192.0.2.7", remotePort: 1, localAddress: "198.51.100.1",
                                                            localPort: 143, sessionID: "s", ttl: 2))
        let sent = store.receive(Array("* OK [CAPABILITY IMAP4rev1 ID] hi\r\n".utf8)).compactMap { action -> String? in
            if case .send(let bytes) = action { String(decoding: bytes, as: UTF8.self) } else { nil }
        }.joined()
        XCTAssertTrue(sent.contains("\"x-proxy-ttl\" \"2\""), sent)
    }
}
