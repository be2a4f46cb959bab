import MailProtocol
import XCTest

final class IMAPPreLoginTests: XCTestCase {
    func testGreetingAdvertisesPreLoginCapabilities() {
        let greeting = String(decoding: IMAPPreLogin().greeting(), as: UTF8.self)
        XCTAssertTrue(greeting.hasPrefix("* OK [CAPABILITY IMAP4rev1 "), greeting)
        for capability in ["SASL-IR", "ID", "LITERAL+", "AUTH=PLAIN", "AUTH=LOGIN"] {
            XCTAssertTrue(greeting.contains(" \(capability)"), "\(capability) missing from \(greeting)")
        }
        XCTAssertFalse(greeting.contains("STARTTLS"))
        XCTAssertTrue(greeting.hasSuffix("\r\n"))
    }

    func testCapabilityNoopAndLogout() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a1 CAPABILITY\r\na2 noop\r\na3 LOGOUT\r\n")
        XCTAssertTrue(t.text.hasPrefix("* CAPABILITY IMAP4rev1 "), t.text)
        XCTAssertTrue(t.text.contains("\r\na1 OK "))
        XCTAssertTrue(t.text.contains("a2 OK NOOP completed.\r\n"))
        XCTAssertTrue(t.text.hasSuffix("* BYE Logging out\r\na3 OK Logout completed.\r\n"))
        XCTAssertEqual(t.events, [.close])
    }

    func testLoginWithAtoms() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "A001 LOGIN alice secret\r\n")
        XCTAssertEqual(t.sent, [])
        XCTAssertEqual(login(t), Credentials(username: "alice", password: [UInt8]("secret")))
    }

    func testLoginWithQuotedStringsKeepsEscapedQuotesAndBackslashes() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, #"a LOGIN "carol" "p\"q\\r s ü"\#r\#n"#)
        XCTAssertEqual(login(t), Credentials(username: "carol", password: [UInt8](#"p"q\r s ü"#)))
    }

    func testSynchronizingLiteralsGetContinuations() {
        let input = "a LOGIN {5}\r\nalice {11}\r\npä\"ss\\ {5}\r\n"
        let t = assertSplitInvariant({ IMAPPreLogin() }, input)
        XCTAssertEqual(t.text, "+ Ready for literal data\r\n+ Ready for literal data\r\n")
        XCTAssertEqual(login(t), Credentials(username: "alice", password: [UInt8]("pä\"ss\\ {5}")))
    }

    func testNonSynchronizingLiteralsNeedNoContinuation() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
        XCTAssertEqual(t.sent, [])
        XCTAssertEqual(login(t), Credentials(username: "alice", password: [UInt8]("secret")))
    }

    func testOversizedSynchronizingLiteralIsRefusedAndSessionContinues() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a LOGIN {99999}\r\nb NOOP\r\n")
        XCTAssertEqual(t.text, "a BAD [TOOBIG] Literal too large.\r\nb OK NOOP completed.\r\n")
        XCTAssertEqual(t.events, [])
    }

    func testOversizedNonSynchronizingLiteralEndsTheSession() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a LOGIN {99999+}\r\nxxxx")
        XCTAssertEqual(t.text, "a BAD [TOOBIG] Literal too large.\r\n* BYE Too large literal.\r\n")
        XCTAssertEqual(t.events, [.close])
    }

    func testAuthenticatePlainWithInitialResponse() {
        let response = String(decoding: Base64.encode([UInt8]("\0alice\0sec ret")), as: UTF8.self)
        let t = assertSplitInvariant({ IMAPPreLogin() }, "x AUTHENTICATE PLAIN \(response)\r\n")
        XCTAssertEqual(t.sent, [])
        XCTAssertEqual(login(t), Credentials(username: "alice", password: [UInt8]("sec ret")))
    }

    func testAuthenticatePlainWithContinuationAndAuthorizationIdentity() {
        let response = String(decoding: Base64.encode([UInt8]("bob\0admin\0pw")), as: UTF8.self)
        let t = assertSplitInvariant({ IMAPPreLogin() }, "x authenticate plain\r\n\(response)\r\n")
        XCTAssertEqual(t.text, "+ \r\n")
        let credentials = login(t)
        XCTAssertEqual(credentials, Credentials(authorizationID: "bob", username: "admin", password: [UInt8]("pw")))
        XCTAssertEqual(credentials?.mailboxUser, "bob")
    }

    func testAuthenticateLoginWithAndWithoutInitialResponse() {
        let user = String(decoding: Base64.encode([UInt8]("alice")), as: UTF8.self)
        let password = String(decoding: Base64.encode([UInt8]("pässword")), as: UTF8.self)
        let without = assertSplitInvariant({ IMAPPreLogin() }, "x AUTHENTICATE LOGIN\r\n\(user)\r\n\(password)\r\n")
        XCTAssertEqual(without.text, "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n")
        XCTAssertEqual(login(without), Credentials(username: "alice", password: [UInt8]("pässword")))
        let with = assertSplitInvariant({ IMAPPreLogin() }, "x AUTHENTICATE LOGIN \(user)\r\n\(password)\r\n")
        XCTAssertEqual(with.text, "+ UGFzc3dvcmQ6\r\n")
        XCTAssertEqual(login(with), login(without))
    }

    func testAuthenticateCancelAndBadBase64GiveBAD() {
        let cancelled = assertSplitInvariant({ IMAPPreLogin() }, "x AUTHENTICATE PLAIN\r\n*\r\n")
        XCTAssertEqual(cancelled.text, "+ \r\nx BAD Authentication cancelled.\r\n")
        let invalid = assertSplitInvariant({ IMAPPreLogin() }, "x AUTHENTICATE PLAIN\r\n!!!!\r\n")
        XCTAssertEqual(invalid.text, "+ \r\nx BAD Invalid base64 data in SASL response.\r\n")
        let unsupported = assertSplitInvariant({ IMAPPreLogin() }, "x AUTHENTICATE GSSAPI\r\n")
        XCTAssertEqual(unsupported.text, "x NO [CANNOT] Unsupported authentication mechanism.\r\n")
        XCTAssertEqual(login(cancelled), nil)
    }

    func testIDIsAnsweredLocally() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, #"i1 ID ("name" "Thunderbird" "version" NIL)\#r\#ni2 ID NIL\#r\#n"#)
        XCTAssertEqual(t.text, "* ID (\"name\" \"mailswitch\")\r\ni1 OK ID completed.\r\n* ID (\"name\" \"mailswitch\")\r\ni2 OK ID completed.\r\n")
        var machine = IMAPPreLogin()
        _ = machine.receive([UInt8](#"i ID ("name" "mutt")\#r\#n"#))
        XCTAssertEqual(machine.clientID.first?.field, "name")
        XCTAssertEqual(machine.clientID.first?.value, "mutt")
        // Out of RFC 2971's bounds: still answered (a BAD breaks OfflineIMAP and Roundcube), what
        // is out of bounds is ignored.
        let pairs = (1...31).map { "\"f\($0)\" \"v\($0)\"" }.joined(separator: " ")
        let long = String(repeating: "x", count: 1025)
        let lenient = "i ID (\(pairs))\r\nj ID (\"name\")\r\nk ID (\"name\" \"\(long)\" \"os\" \"linux\")\r\n"
        let answered = assertSplitInvariant({ IMAPPreLogin() }, lenient)
        XCTAssertEqual(answered.text, ["i", "j", "k"].map { "* ID (\"name\" \"mailswitch\")\r\n\($0) OK ID completed.\r\n" }.joined())
        var counted = IMAPPreLogin()
        _ = counted.receive([UInt8]("i ID (\(pairs))\r\n".utf8))
        XCTAssertEqual(counted.clientID.count, 30)
        var skipped = IMAPPreLogin()
        _ = skipped.receive([UInt8]("k ID (\"name\" \"\(long)\" \"os\" \"linux\")\r\n".utf8))
        XCTAssertEqual(skipped.clientID.map(\.field), ["os"])
        // Not a list at all is a syntax error.
        let bad = assertSplitInvariant({ IMAPPreLogin() }, "i ID name\r\n")
        XCTAssertEqual(bad.text, "i BAD Invalid ID parameters.\r\n")
    }

    func testNULInALiteralIsRefused() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a LOGIN {5+}\r\nal\0ce secret\r\n")
        XCTAssertTrue(t.text.hasPrefix("a BAD "), t.text)
        XCTAssertNil(login(t))
    }

    func testUnknownAndPostLoginCommandsGetBADWithTheirTag() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "t1 FROB\r\nt2 SELECT INBOX\r\n+x NOOP\r\nt3\r\nt4 LOGIN onlyuser\r\n")
        XCTAssertEqual(t.text, "t1 BAD Unknown command.\r\nt2 BAD Command not permitted before login.\r\n"
                       + "* BAD Invalid tag.\r\nt3 BAD Missing command.\r\nt4 BAD LOGIN expects a user name and a password.\r\n")
    }

    func testMalformedQuotedStringIsASyntaxError() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a LOGIN \"alice secret\r\na LOGIN \"a\\x\" b\r\n")
        XCTAssertEqual(t.text, "a BAD Syntax error in arguments.\r\na BAD Syntax error in arguments.\r\n")
    }

    func testTooManyInvalidCommandsDisconnect() {
        let input = String(repeating: "x FROB\r\n", count: 12)
        let t = assertSplitInvariant({ IMAPPreLogin() }, input)
        XCTAssertEqual(t.text.components(separatedBy: "x BAD").count - 1, 10)
        XCTAssertTrue(t.text.hasSuffix("* BYE Too many invalid commands.\r\n"))
        XCTAssertEqual(t.events, [.close])
    }

    func testOverlongLineIsRefusedWithoutBufferingIt() {
        var machine = IMAPPreLogin()
        var transcript = Transcript()
        transcript.record(machine.receive([UInt8](repeating: UInt8(ascii: "a"), count: 9000)))
        XCTAssertEqual(transcript.text, "* BYE [TOOBIG] Command line too long.\r\n")
        XCTAssertEqual(transcript.events, [.close])
        XCTAssertEqual(machine.receive([UInt8]("a NOOP\r\n")), [])
    }

    func testPipelinedBytesAfterLoginGoToTheBackend() {
        var machine = IMAPPreLogin()
        let actions = machine.receive([UInt8]("a CAPABILITY\r\nb LOGIN alice secret\r\nc SELECT INBOX\r\n"))
        XCTAssertEqual(actions.last, .login(LoginRequest(credentials: Credentials(username: "alice", password: [UInt8]("secret")), method: "LOGIN")))
        XCTAssertEqual(machine.receive([UInt8]("d NOOP\r\n")), [], "nothing is parsed while the login is pending")
        let (reply, leftover) = machine.loginAccepted(BackendLoginSuccess(capabilities: ["IMAP4rev1", "IDLE", "X-STORE"], text: "Logged in"))
        XCTAssertEqual(String(decoding: reply, as: UTF8.self),
                       "* CAPABILITY IMAP4rev1 IDLE X-STORE\r\nb OK [CAPABILITY IMAP4rev1 IDLE X-STORE] Logged in\r\n")
        XCTAssertEqual(String(decoding: leftover, as: UTF8.self), "c SELECT INBOX\r\nd NOOP\r\n")
    }

    func testRejectionsArePhrasedPerRFC5530AndTheSessionGoesOn() {
        for (failure, expected) in [(LoginFailure.authenticationFailed, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
                                    (.temporary, "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"),
                                    (.backendRefused(code: "INUSE", text: "Mailbox locked"), "a NO [INUSE] Mailbox locked\r\n")] {
            var machine = IMAPPreLogin()
            _ = machine.receive([UInt8]("a LOGIN u p\r\nb LOGOUT\r\n"))
            var transcript = Transcript()
            transcript.record(machine.loginRejected(failure))
            XCTAssertEqual(transcript.text, expected + "* BYE Logging out\r\nb OK Logout completed.\r\n")
            XCTAssertEqual(transcript.events, [.close])
        }
    }

    func testLoginDisabledWithoutTLS() {
        let make = { IMAPPreLogin(configuration: .init(offersStartTLS: true, allowsPlaintextLogin: false)) }
        let greeting = String(decoding: make().greeting(), as: UTF8.self)
        XCTAssertTrue(greeting.contains("STARTTLS LOGINDISABLED]"), greeting)
        XCTAssertFalse(greeting.contains("AUTH="))
        let t = assertSplitInvariant(make, "a LOGIN u p\r\nb AUTHENTICATE PLAIN\r\n")
        XCTAssertEqual(t.text, "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n"
                       + "b NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n")
    }

    func testStartTLSDiscardsPipelinedPlaintext() {
        var machine = IMAPPreLogin(configuration: .init(offersStartTLS: true, allowsPlaintextLogin: false))
        var transcript = Transcript()
        transcript.record(machine.receive([UInt8]("a STARTTLS\r\nb LOGIN alice secret\r\n")))
        XCTAssertEqual(transcript.text, "a OK Begin TLS negotiation now.\r\n")
        XCTAssertEqual(transcript.events, [.startTLS])
        machine.tlsEstablished()
        XCTAssertEqual(machine.receive([UInt8]()), [], "the injected LOGIN must not run after the handshake")
        XCTAssertFalse(machine.capabilities.contains("STARTTLS"))
        XCTAssertTrue(machine.capabilities.contains("AUTH=PLAIN"))
    }

    func testEmptyLinesAreIgnoredAndBareLFIsAccepted() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "\r\n\na NOOP\n")
        XCTAssertEqual(t.text, "a OK NOOP completed.\r\n")
    }
}

final class IMAPPreLoginLimitsTests: XCTestCase {
    func testATagAsLongAsTheLineAllowsIsAccepted() {
        let tag = String(repeating: "t", count: 4000)
        let t = assertSplitInvariant({ IMAPPreLogin() }, "\(tag) NOOP\r\n")
        XCTAssertEqual(t.text, "\(tag) OK NOOP completed.\r\n")
    }

    func testAnEmptyPlainMessageIsAnAuthenticationFailureNotBAD() {
        // "=" is an empty initial response; an empty PLAIN message lacks its two NULs.
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a AUTHENTICATE PLAIN =\r\nb AUTHENTICATE PLAIN\r\n\r\nc NOOP\r\n")
        XCTAssertEqual(t.text, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n+ \r\n"
                           + "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\nc OK NOOP completed.\r\n")
        XCTAssertNil(login(t))
    }

    func testSynchronizingLiteralOfACommandThatTakesNoneBeforeLoginGetsNoContinuation() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a APPEND INBOX {30}\r\nb NOOP\r\n")
        XCTAssertEqual(t.text, "a BAD Command not permitted before login.\r\nb OK NOOP completed.\r\n")
        // ID takes strings, so its literal is invited.
        let id = assertSplitInvariant({ IMAPPreLogin() }, "c ID ({4}\r\nname NIL)\r\n")
        XCTAssertTrue(id.text.hasPrefix("+ Ready for literal data\r\n* ID "), id.text)
    }

    func testCommandsBeforeLoginAreBounded() {
        var limits = ProtocolLimits()
        limits.commandsBeforeLogin = 5
        let input = (1...6).map { "n\($0) NOOP\r\n" }.joined() + "x LOGIN a b\r\n"
        let t = assertSplitInvariant({ IMAPPreLogin(configuration: .init(limits: limits)) }, input)
        XCTAssertEqual(t.text, (1...5).map { "n\($0) OK NOOP completed.\r\n" }.joined() + "* BYE Too many commands before login.\r\n")
        XCTAssertEqual(t.events, [.close])
        var machine = IMAPPreLogin(configuration: .init(limits: limits))
        _ = machine.receive(Array(input.utf8))
        XCTAssertEqual(machine.limitReached, .commandsBeforeLogin)
    }

    func testTheLimitThatEndedASessionIsNamed() {
        var long = IMAPPreLogin()
        _ = long.receive(Array(repeating: UInt8(ascii: "x"), count: 9000))
        XCTAssertEqual(long.limitReached, .lineLength)
        var invalid = IMAPPreLogin()
        _ = invalid.receive(Array(String(repeating: "a FROB\r\n", count: 10).utf8))
        XCTAssertEqual(invalid.limitReached, .invalidCommands)
        var literal = IMAPPreLogin()
        _ = literal.receive(Array("a LOGIN {99999+}\r\n".utf8))
        XCTAssertEqual(literal.limitReached, .literalSize)
        var fine = IMAPPreLogin()
        _ = fine.receive(Array("a LOGOUT\r\n".utf8))
        XCTAssertNil(fine.limitReached, "a LOGOUT is no limit")
    }

    func testLimitRefusalAndTemporaryGoodbye() {
        var machine = IMAPPreLogin()
        _ = machine.receive(Array("a LOGIN u p\r\n".utf8))
        let refused = machine.loginRejected(.limit(text: "Too many sessions for this user."))
        XCTAssertEqual(refused, [.send(Array("a NO [LIMIT] Too many sessions for this user.\r\n".utf8))])
        XCTAssertEqual(String(decoding: machine.temporaryGoodbye("Too\r\nmany."), as: UTF8.self), "* BYE [UNAVAILABLE] Too  many.\r\n")
    }
}
