import MailProtocol
import XCTest

final class POP3PreLoginTests: XCTestCase {
    func testGreetingAndCapa() {
        XCTAssertEqual(String(decoding: POP3PreLogin().greeting(), as: UTF8.self), "+OK mailswitch ready.\r\n")
        let t = assertSplitInvariant({ POP3PreLogin() }, "CAPA\r\n")
        XCTAssertEqual(t.text, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n")
    }

    func testUserPassKeepsSpacesAndUTF8InThePassword() {
        let t = assertSplitInvariant({ POP3PreLogin() }, "USER carol\r\nPASS pä \"q\" \\ s \r\n")
        XCTAssertEqual(t.text, "+OK\r\n")
        XCTAssertEqual(login(t), Credentials(username: "carol", password: [UInt8]("pä \"q\" \\ s ")))
    }

    func testPassWithoutUserIsRefused() {
        let t = assertSplitInvariant({ POP3PreLogin() }, "PASS x\r\nSTAT\r\nFROB\r\n")
        XCTAssertEqual(t.text, "-ERR No username given.\r\n-ERR [AUTH] Authentication required.\r\n-ERR Unknown command.\r\n")
        XCTAssertNil(login(t))
    }

    func testAuthPlainWithInitialResponseAndWithContinuation() {
        let response = String(decoding: Base64.encode([UInt8]("\0bob\0bob-secret")), as: UTF8.self)
        let initial = assertSplitInvariant({ POP3PreLogin() }, "AUTH PLAIN \(response)\r\n")
        XCTAssertEqual(initial.sent, [])
        XCTAssertEqual(login(initial), Credentials(username: "bob", password: [UInt8]("bob-secret")))
        let continued = assertSplitInvariant({ POP3PreLogin() }, "AUTH PLAIN\r\n\(response)\r\n")
        XCTAssertEqual(continued.text, "+ \r\n")
        XCTAssertEqual(login(continued), login(initial))
    }

    func testAuthCancelledAndBareAuthListsMechanisms() {
        let t = assertSplitInvariant({ POP3PreLogin() }, "AUTH\r\nAUTH LOGIN\r\n*\r\nAUTH CRAM-MD5\r\n")
        XCTAssertEqual(t.text, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n+ VXNlcm5hbWU6\r\n-ERR Authentication cancelled.\r\n-ERR Unsupported authentication mechanism.\r\n")
    }

    func testQuitCloses() {
        let t = assertSplitInvariant({ POP3PreLogin() }, "QUIT\r\nUSER x\r\n")
        XCTAssertEqual(t.text, "+OK Logging out.\r\n")
        XCTAssertEqual(t.events, [.close])
    }

    func testRejectionsKeepTheirResponseCodes() {
        for (failure, expected) in [(LoginFailure.authenticationFailed, "-ERR [AUTH] Authentication failed.\r\n"),
                                    (.temporary, "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n"),
                                    (.backendRefused(code: "IN-USE", text: "Mailbox is locked"), "-ERR [IN-USE] Mailbox is locked\r\n")] {
            var machine = POP3PreLogin()
            _ = machine.receive([UInt8]("USER u\r\nPASS p\r\n"))
            var transcript = Transcript()
            transcript.record(machine.loginRejected(failure))
            XCTAssertEqual(transcript.text, expected)
            // USER must be given again after a failure.
            transcript = Transcript()
            transcript.record(machine.receive([UInt8]("PASS p\r\n")))
            XCTAssertEqual(transcript.text, "-ERR No username given.\r\n")
        }
    }

    func testPipelinedCommandsAfterPassGoToTheBackend() {
        var machine = POP3PreLogin()
        _ = machine.receive([UInt8]("USER u\r\nPASS p\r\nSTAT\r\nLIST\r\n"))
        let (reply, leftover) = machine.loginAccepted(BackendLoginSuccess(capabilities: nil, text: "Logged in."))
        XCTAssertEqual(String(decoding: reply, as: UTF8.self), "+OK Logged in.\r\n")
        XCTAssertEqual(String(decoding: leftover, as: UTF8.self), "STAT\r\nLIST\r\n")
    }

    func testSTLSAndPlaintextRefusal() {
        let make = { POP3PreLogin(configuration: .init(offersStartTLS: true, allowsPlaintextLogin: false)) }
        XCTAssertEqual(make().capabilities, ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS"])
        let t = assertSplitInvariant(make, "USER u\r\nSTLS\r\nPASS injected\r\n")
        XCTAssertEqual(t.text, "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n+OK Begin TLS negotiation now.\r\n")
        XCTAssertEqual(t.events, [.startTLS])
    }
}

final class POP3PreLoginLimitsTests: XCTestCase {
    func testAnEmptyPlainMessageIsAnAuthenticationFailure() {
        let t = assertSplitInvariant({ POP3PreLogin() }, "AUTH PLAIN =\r\nNOOP\r\n")
        XCTAssertEqual(t.text, "-ERR [AUTH] Authentication failed.\r\n-ERR [AUTH] Authentication required.\r\n")
        XCTAssertNil(login(t))
    }

    func testCommandsBeforeLoginAreBounded() {
        var limits = ProtocolLimits()
        limits.commandsBeforeLogin = 3
        let t = assertSplitInvariant({ POP3PreLogin(configuration: .init(limits: limits)) }, "CAPA\r\nNOOP\r\nNOOP\r\nNOOP\r\nUSER a\r\n")
        XCTAssertTrue(t.text.hasSuffix("-ERR [AUTH] Authentication required.\r\n-ERR Too many commands before login.\r\n"), t.text)
        XCTAssertEqual(t.events, [.close])
    }

    func testLimitRefusalAndTemporaryGoodbyeUseSysTemp() {
        var machine = POP3PreLogin()
        _ = machine.receive(Array("USER u\r\nPASS p\r\n".utf8))
        XCTAssertEqual(machine.loginRejected(.limit(text: "Too many sessions for this user.")),
                       [.send(Array("-ERR [SYS/TEMP] Too many sessions for this user.\r\n".utf8))])
        XCTAssertEqual(String(decoding: machine.temporaryGoodbye("Server shutting down."), as: UTF8.self),
                       "-ERR [SYS/TEMP] Server shutting down.\r\n")
    }
}
