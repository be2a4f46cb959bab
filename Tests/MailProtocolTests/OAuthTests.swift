import MailProtocol
import XCTest

// OAUTHBEARER (RFC 7628) and XOAUTH2: the parser, both pre-login machines with `oauth` on and
// off, the error-challenge flow of a refused token, and both store-login machines.

private let token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
/// RFC 7628 §4.1's example message (^A is %x01).
private let rfcMessage = "n,a=user@example.com,\u{1}host=server.example.com\u{1}port=143\u{1}auth=Bearer \(token)\u{1}\u{1}"
/// Google's XOAUTH2 example.
private let googleMessage = "user=someuser@example.com\u{1}auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg\u{1}\u{1}"

private func b64(_ text: String) -> String { String(decoding: Base64.encode([UInt8](text)), as: UTF8.self) }

private func bearer(_ mechanism: BearerLogin.Mechanism, _ message: String) -> BearerLogin? {
    BearerLogin(mechanism: mechanism, message: [UInt8](message))
}

private let oauthOn = PreLoginConfiguration(oauth: true)

private func loginRequest(_ transcript: Transcript) -> LoginRequest? {
    for event in transcript.events {
        if case .login(let request) = event { return request }
    }
    return nil
}

final class BearerLoginParserTests: XCTestCase {
    func testTheRFCAndGoogleExamplesParse() throws {
        let rfc = try XCTUnwrap(bearer(.oauthBearer, rfcMessage))
        XCTAssertEqual(rfc.user, "user@example.com")
        XCTAssertEqual(rfc.mechanism, .oauthBearer)
        XCTAssertEqual(rfc.message, [UInt8](rfcMessage), "the message is kept byte for byte")
        let google = try XCTUnwrap(bearer(.xoauth2, googleMessage))
        XCTAssertEqual(google.user, "someuser@example.com")
        XCTAssertEqual(google.message, [UInt8](googleMessage))
        // The token alone, for an introspection endpoint.
        XCTAssertEqual(String(decoding: rfc.token, as: UTF8.self), token)
        XCTAssertEqual(String(decoding: google.token, as: UTF8.self), "ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg")
        // Each is only its own mechanism's message.
        XCTAssertNil(bearer(.xoauth2, rfcMessage))
        XCTAssertNil(bearer(.oauthBearer, googleMessage))
    }

    func testOAuthBearerAcceptsWhatTheGrammarAllows() {
        let accepted: [(String, String)] = [
            ("y,a=u,\u{1}auth=Bearer t\u{1}\u{1}", "u"),                        // client supports binding, we don't
            ("n,a=u,\u{1}auth=bearer t\u{1}\u{1}", "u"),                        // the scheme without regard to case
            ("n,a=u,\u{1}auth=BEARER   a-b.c_d~e+f/g==\u{1}\u{1}", "u"),        // 1*SP, every b64token byte, padding
            ("n,a=u,\u{1}xfoo=bar baz\u{1}auth=Bearer t\u{1}port=993\u{1}\u{1}", "u"), // unknown keys, any order
            ("n,a=a=2Cb=3Dc,\u{1}auth=Bearer t\u{1}\u{1}", "a,b=c"),            // RFC 5801 escapes
            ("n,a=jörg@example.org,\u{1}auth=Bearer t\u{1}\u{1}", "jörg@example.org"),
            ("n,a=u,\u{1}host=h\tx\r\n\u{1}auth=Bearer t\u{1}\u{1}", "u"),      // HTAB, CR, LF are value bytes
        ]
        for (message, user) in accepted {
            XCTAssertEqual(bearer(.oauthBearer, message)?.user, user, message.debugDescription)
        }
    }

    func testOAuthBearerRefusesMalformedOrUnroutableMessages() {
        let refused: [(String, String)] = [
            ("n,a=u,\u{1}host=h\u{1}port=143\u{1}\u{1}", "no auth"),
            ("p=tls-unique,a=u,\u{1}auth=Bearer t\u{1}\u{1}", "channel binding required"),
            ("n,,\u{1}auth=Bearer t\u{1}\u{1}", "no a=: nothing to route on"),
            ("n,a=,\u{1}auth=Bearer t\u{1}\u{1}", "empty a="),
            ("F,n,a=u,\u{1}auth=Bearer t\u{1}\u{1}", "the GS2 F flag"),
            ("x,a=u,\u{1}auth=Bearer t\u{1}\u{1}", "unknown cb flag"),
            ("n,a=u,x=y,\u{1}auth=Bearer t\u{1}\u{1}", "more header than the grammar has"),
            ("n,a=u\u{1}auth=Bearer t\u{1}\u{1}", "header without its final comma"),
            ("n,a=u,auth=Bearer t\u{1}\u{1}", "no kvsep after the header"),
            ("n,a=u,\u{1}auth=Bearer t\u{1}", "one kvsep at the end"),
            ("n,a=u,\u{1}auth=Bearer t", "no kvsep at the end"),
            ("n,a=u,\u{1}auth=Bearer t\u{1}\u{1}\u{1}", "three kvseps at the end"),
            ("n,a=u,\u{1}auth=Bearer t\u{1}\u{1}x", "bytes after the end"),
            ("n,a=u,\u{1}\u{1}auth=Bearer t\u{1}\u{1}", "an empty pair"),
            ("n,a=u,\u{1}auth\u{1}\u{1}", "a pair without ="),
            ("n,a=u,\u{1}ho-st=h\u{1}auth=Bearer t\u{1}\u{1}", "a key that is not ALPHA"),
            ("n,a=u,\u{1}=h\u{1}auth=Bearer t\u{1}\u{1}", "an empty key"),
            ("n,a=u,\u{1}host=\u{7F}\u{1}auth=Bearer t\u{1}\u{1}", "a value byte outside VCHAR"),
            ("n,a=u,\u{1}auth=Bearer \u{1}\u{1}", "empty token"),
            ("n,a=u,\u{1}auth=Bearer\u{1}\u{1}", "no token, no space"),
            ("n,a=u,\u{1}auth=Bearert\u{1}\u{1}", "no space after the scheme"),
            ("n,a=u,\u{1}auth=Basic dXNlcjpwdw==\u{1}\u{1}", "another scheme"),
            ("n,a=u,\u{1}auth=Bearer a b\u{1}\u{1}", "a space in the token"),
            ("n,a=u,\u{1}auth=Bearer ab=c\u{1}\u{1}", "padding inside the token"),
            ("n,a=u,\u{1}auth=Bearer ==\u{1}\u{1}", "padding only"),
            ("n,a=u,\u{1}auth=Bearer t \u{1}\u{1}", "a space after the token"),
            ("n,a=u,\u{1}auth=Bearer t\u{1}auth=Bearer s\u{1}\u{1}", "auth twice"),
            ("n,a=u,\u{1}auth=Bearer t\u{1}AUTH=Bearer s\u{1}\u{1}", "auth twice, in another case"),
            ("n,a=u,\u{1}AUTH=Bearer t\u{1}\u{1}", "no auth in lower case"),
            ("n,a=u=2c,\u{1}auth=Bearer t\u{1}\u{1}", "an escape in lower case"),
            ("n,a=u=41,\u{1}auth=Bearer t\u{1}\u{1}", "an escape RFC 5801 does not have"),
            ("n,a=u=,\u{1}auth=Bearer t\u{1}\u{1}", "a cut escape"),
            ("n,a=u\0v,\u{1}auth=Bearer t\u{1}\u{1}", "NUL in the user"),
            ("\u{1}", "the dummy response"),
            ("", "nothing"),
        ]
        for (message, why) in refused {
            XCTAssertNil(bearer(.oauthBearer, message), why)
        }
        XCTAssertNil(BearerLogin(mechanism: .oauthBearer, message: [UInt8]("n,a=") + [0xC3, 0x28] + [UInt8](",\u{1}auth=Bearer t\u{1}\u{1}")),
                     "invalid UTF-8 in the user")
    }

    func testXOAuth2HasOneShape() {
        XCTAssertEqual(bearer(.xoauth2, "user=u\u{1}auth=bearer  t=\u{1}\u{1}")?.user, "u")
        let refused: [(String, String)] = [
            ("user=u\u{1}\u{1}", "no auth"),
            ("auth=Bearer t\u{1}user=u\u{1}\u{1}", "the wrong order"),
            ("user=\u{1}auth=Bearer t\u{1}\u{1}", "an empty user"),
            ("user=u\u{1}auth=Bearer \u{1}\u{1}", "an empty token"),
            ("user=u\u{1}auth=Bearer t\u{1}", "one kvsep at the end"),
            ("user=u\u{1}auth=Bearer t\u{1}host=h\u{1}\u{1}", "a pair more"),
            ("user=u\u{1}auth=Basic t\u{1}\u{1}", "another scheme"),
            ("n,a=u,\u{1}auth=Bearer t\u{1}\u{1}", "an OAUTHBEARER message"),
        ]
        for (message, why) in refused {
            XCTAssertNil(bearer(.xoauth2, message), why)
        }
    }

    func testNoDescriptionOrMirrorShowsTheToken() throws {
        let login = try XCTUnwrap(bearer(.oauthBearer, rfcMessage))
        let credentials = Credentials(bearer: login)
        XCTAssertEqual(credentials.username, "user@example.com")
        XCTAssertEqual(credentials.mailboxUser, "user@example.com")
        XCTAssertEqual(credentials.password, [])
        XCTAssertEqual(credentials.bearer, login)
        XCTAssertEqual(credentials.description, "user=user@example.com sasl=OAUTHBEARER")
        XCTAssertEqual(login.description, "OAUTHBEARER user=user@example.com")
        var dumped = ""
        dump(LoginRequest(credentials: credentials, method: "AUTHENTICATE OAUTHBEARER"), to: &dumped)
        for text in [String(describing: login), String(reflecting: login), String(describing: credentials),
                     String(reflecting: credentials), String(describing: LoginRequest(credentials: credentials, method: "x")),
                     String(describing: ClientAction.login(LoginRequest(credentials: credentials, method: "x"))), dumped] {
            XCTAssertFalse(text.contains("vF9dft4"), text)
            XCTAssertFalse(text.contains("118, 70, 57"), "the token's bytes: \(text)")   // "vF9" as a byte list
        }
    }
}

final class IMAPOAuthPreLoginTests: XCTestCase {
    private func make() -> IMAPPreLogin { IMAPPreLogin(configuration: oauthOn) }

    func testBearerMechanismsAreAdvertisedOnlyWhenOn() {
        let on = String(decoding: make().greeting(), as: UTF8.self)
        XCTAssertTrue(on.contains(" AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2]"), on)
        let capability = assertSplitInvariant({ make() }, "a CAPABILITY\r\n")
        XCTAssertTrue(capability.text.contains(" AUTH=OAUTHBEARER AUTH=XOAUTH2\r\n"), capability.text)
        let off = String(decoding: IMAPPreLogin().greeting(), as: UTF8.self)
        XCTAssertFalse(off.contains("OAUTHBEARER") || off.contains("XOAUTH2"), off)
        // Where plaintext login is disabled, no mechanism at all, bearer ones included.
        let disabled = IMAPPreLogin(configuration: .init(offersStartTLS: true, allowsPlaintextLogin: false, oauth: true))
        XCTAssertFalse(disabled.capabilities.contains { $0.hasPrefix("AUTH=") }, "\(disabled.capabilities)")
        XCTAssertTrue(disabled.capabilities.contains("LOGINDISABLED"))
        let refused = assertSplitInvariant({ disabled }, "a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\n")
        XCTAssertEqual(refused.text, "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n")
    }

    func testWhenOffTheyAreUnsupportedLikeAnyUnknownMechanism() {
        let t = assertSplitInvariant({ IMAPPreLogin() }, "a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\nb AUTHENTICATE xoauth2\r\n")
        XCTAssertEqual(t.text, "a NO [CANNOT] Unsupported authentication mechanism.\r\nb NO [CANNOT] Unsupported authentication mechanism.\r\n")
        XCTAssertNil(loginRequest(t))
    }

    func testOAuthBearerWithInitialResponse() throws {
        let t = assertSplitInvariant({ make() }, "a1 AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\n")
        XCTAssertEqual(t.sent, [])
        let request = try XCTUnwrap(loginRequest(t))
        XCTAssertEqual(request.method, "AUTHENTICATE OAUTHBEARER")
        XCTAssertEqual(request.credentials, Credentials(bearer: try XCTUnwrap(bearer(.oauthBearer, rfcMessage))))
        XCTAssertEqual(request.credentials.username, "user@example.com")
    }

    func testXOAuth2WithTheEmptyContinuationAndCancel() throws {
        let t = assertSplitInvariant({ make() }, "a1 authenticate XOAUTH2\r\n\(b64(googleMessage))\r\n")
        XCTAssertEqual(t.text, "+ \r\n")
        let request = try XCTUnwrap(loginRequest(t))
        XCTAssertEqual(request.method, "AUTHENTICATE XOAUTH2")
        XCTAssertEqual(request.credentials.bearer?.message, [UInt8](googleMessage))
        let cancelled = assertSplitInvariant({ make() }, "a AUTHENTICATE OAUTHBEARER\r\n*\r\nb NOOP\r\n")
        XCTAssertEqual(cancelled.text, "+ \r\na BAD Authentication cancelled.\r\nb OK NOOP completed.\r\n")
    }

    func testAMalformedMessageFailsWithoutALogin() {
        let noUser = "n,,\u{1}auth=Bearer t\u{1}\u{1}"
        let t = assertSplitInvariant({ make() }, "a AUTHENTICATE OAUTHBEARER \(b64(noUser))\r\nb AUTHENTICATE XOAUTH2 =\r\n")
        XCTAssertEqual(t.text, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\nb NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
        XCTAssertNil(loginRequest(t))
    }

    func testTheTokenCountsAgainstTheLineLimit() {
        var limits = ProtocolLimits()
        limits.lineLength = 1024
        let long = "n,a=u,\u{1}auth=Bearer \(String(repeating: "x", count: 1000))\u{1}\u{1}"
        let make = { IMAPPreLogin(configuration: .init(oauth: true, limits: limits)) }
        for input in ["a AUTHENTICATE OAUTHBEARER \(b64(long))\r\n", "a AUTHENTICATE OAUTHBEARER\r\n\(b64(long))\r\n"] {
            let t = assertSplitInvariant(make, input)
            XCTAssertTrue(t.text.hasSuffix("* BYE [TOOBIG] Command line too long.\r\n"), t.text)
            XCTAssertEqual(t.events, [.close])
        }
    }

    func testARefusedTokenGetsTheErrorChallengeThenNO() {
        let json = b64(#"{"status":"invalid_token"}"#)
        XCTAssertEqual(json, "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=")
        let input = "a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\nAQ==\r\nb NOOP\r\n"
        let t = assertSplitInvariant({ make() }, input, verdict: .authenticationFailed)
        XCTAssertEqual(t.text, "+ \(json)\r\na NO [AUTHENTICATIONFAILED] Authentication failed.\r\nb OK NOOP completed.\r\n")
        // Any response ends it the same way: a cancellation, junk, an empty line.
        for response in ["*", "!!", ""] {
            let other = assertSplitInvariant({ make() }, "a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\n\(response)\r\n",
                                             verdict: .authenticationFailed)
            XCTAssertEqual(other.text, "+ \(json)\r\na NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", response)
        }
        let google = assertSplitInvariant({ make() }, "a AUTHENTICATE XOAUTH2\r\n\(b64(googleMessage))\r\n\r\n",
                                          verdict: .authenticationFailed)
        XCTAssertEqual(google.text, "+ \r\n+ \(b64(#"{"status":"401","schemes":"bearer"}"#))\r\n"
                           + "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    }

    func testOtherFailuresAndPasswordLoginsAnswerAtOnce() {
        let temporary = assertSplitInvariant({ make() }, "a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\n", verdict: .temporary)
        XCTAssertEqual(temporary.text, "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n")
        let limit = assertSplitInvariant({ make() }, "a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\n", verdict: .limit(text: "Too many."))
        XCTAssertEqual(limit.text, "a NO [LIMIT] Too many.\r\n")
        let password = assertSplitInvariant({ make() }, "a LOGIN u p\r\n", verdict: .authenticationFailed)
        XCTAssertEqual(password.text, "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    }

    func testNothingIsReadWhileTheLoginIsOutAndTheLeftoverIsKept() {
        var machine = make()
        let actions = machine.receive([UInt8]("a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\nAQ==\r\n"))
        guard case .login? = actions.last else { return XCTFail("\(actions)") }
        XCTAssertEqual(machine.receive([UInt8]("b NOOP\r\n")), [], "nothing is parsed while the login is pending")
        var transcript = Transcript()
        transcript.record(machine.loginRejected(.authenticationFailed))
        XCTAssertEqual(transcript.text, "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\na NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
                           + "b OK NOOP completed.\r\n")
        // Accepted: the reply, and what followed the login command.
        var accepted = make()
        _ = accepted.receive([UInt8]("a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\nb SELECT INBOX\r\n"))
        let (reply, leftover) = accepted.loginAccepted(BackendLoginSuccess(capabilities: nil, text: "Logged in"))
        XCTAssertEqual(String(decoding: reply, as: UTF8.self), "a OK Logged in\r\n")
        XCTAssertEqual(String(decoding: leftover, as: UTF8.self), "b SELECT INBOX\r\n")
    }

    func testAnOverlongResponseToTheErrorChallengeEndsTheSession() {
        var limits = ProtocolLimits()
        limits.lineLength = 1024
        var machine = IMAPPreLogin(configuration: .init(oauth: true, limits: limits))
        _ = machine.receive([UInt8]("a AUTHENTICATE OAUTHBEARER \(b64(rfcMessage))\r\n"))
        _ = machine.loginRejected(.authenticationFailed)
        var transcript = Transcript()
        transcript.record(machine.receive([UInt8](repeating: UInt8(ascii: "A"), count: 2000)))
        XCTAssertEqual(transcript.text, "* BYE [TOOBIG] Command line too long.\r\n")
        XCTAssertEqual(machine.limitReached, .lineLength)
    }
}

final class POP3OAuthPreLoginTests: XCTestCase {
    private func make() -> POP3PreLogin { POP3PreLogin(configuration: oauthOn) }

    func testBearerMechanismsAreListedOnlyWhenOn() {
        let capa = assertSplitInvariant({ make() }, "CAPA\r\nAUTH\r\n")
        XCTAssertTrue(capa.text.contains("\r\nSASL PLAIN LOGIN OAUTHBEARER XOAUTH2\r\n"), capa.text)
        XCTAssertTrue(capa.text.hasSuffix("+OK\r\nPLAIN\r\nLOGIN\r\nOAUTHBEARER\r\nXOAUTH2\r\n.\r\n"), capa.text)
        let off = assertSplitInvariant({ POP3PreLogin() }, "CAPA\r\nAUTH\r\nAUTH OAUTHBEARER \(b64(rfcMessage))\r\n")
        XCTAssertFalse(off.text.contains("OAUTHBEARER") || off.text.contains("XOAUTH2"), off.text)
        XCTAssertTrue(off.text.hasSuffix(".\r\n-ERR Unsupported authentication mechanism.\r\n"), off.text)
        let disabled = POP3PreLogin(configuration: .init(offersStartTLS: true, allowsPlaintextLogin: false, oauth: true))
        XCTAssertFalse(disabled.capabilities.contains { $0.hasPrefix("SASL") }, "\(disabled.capabilities)")
    }

    func testAuthWithInitialResponseAndWithContinuation() throws {
        let initial = assertSplitInvariant({ make() }, "AUTH OAUTHBEARER \(b64(rfcMessage))\r\n")
        XCTAssertEqual(initial.sent, [])
        let request = try XCTUnwrap(loginRequest(initial))
        XCTAssertEqual(request.method, "AUTH OAUTHBEARER")
        XCTAssertEqual(request.credentials.bearer?.message, [UInt8](rfcMessage))
        let continued = assertSplitInvariant({ make() }, "AUTH xoauth2\r\n\(b64(googleMessage))\r\n")
        XCTAssertEqual(continued.text, "+ \r\n")
        XCTAssertEqual(loginRequest(continued)?.credentials.username, "someuser@example.com")
        let cancelled = assertSplitInvariant({ make() }, "AUTH OAUTHBEARER\r\n*\r\n")
        XCTAssertEqual(cancelled.text, "+ \r\n-ERR Authentication cancelled.\r\n")
        let malformed = assertSplitInvariant({ make() }, "AUTH OAUTHBEARER \(b64("n,a=u,\u{1}\u{1}"))\r\n")
        XCTAssertEqual(malformed.text, "-ERR [AUTH] Authentication failed.\r\n")
    }

    func testARefusedTokenGetsTheErrorChallengeThenERR() {
        let t = assertSplitInvariant({ make() }, "AUTH OAUTHBEARER \(b64(rfcMessage))\r\nAQ==\r\nUSER u\r\n", verdict: .authenticationFailed)
        XCTAssertEqual(t.text, "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n-ERR [AUTH] Authentication failed.\r\n+OK\r\n")
        let google = assertSplitInvariant({ make() }, "AUTH XOAUTH2 \(b64(googleMessage))\r\n*\r\n", verdict: .authenticationFailed)
        XCTAssertEqual(google.text, "+ \(b64(#"{"status":"401","schemes":"bearer"}"#))\r\n-ERR [AUTH] Authentication failed.\r\n")
        let temporary = assertSplitInvariant({ make() }, "AUTH OAUTHBEARER \(b64(rfcMessage))\r\n", verdict: .temporary)
        XCTAssertEqual(temporary.text, "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n")
        let password = assertSplitInvariant({ make() }, "USER u\r\nPASS p\r\n", verdict: .authenticationFailed)
        XCTAssertEqual(password.text, "+OK\r\n-ERR [AUTH] Authentication failed.\r\n")
    }

    func testTheTokenCountsAgainstTheLineLimit() {
        var limits = ProtocolLimits()
        limits.lineLength = 1024
        let long = "n,a=u,\u{1}auth=Bearer \(String(repeating: "x", count: 1000))\u{1}\u{1}"
        let make = { POP3PreLogin(configuration: .init(oauth: true, limits: limits)) }
        for input in ["AUTH OAUTHBEARER \(b64(long))\r\n", "AUTH OAUTHBEARER\r\n\(b64(long))\r\n"] {
            let t = assertSplitInvariant(make, input)
            XCTAssertTrue(t.text.hasSuffix("-ERR Line too long.\r\n"), t.text)
            XCTAssertEqual(t.events, [.close])
        }
    }
}

private func sent(_ actions: [BackendAction]) -> String {
    actions.compactMap { if case .send(let bytes) = $0 { return String(decoding: bytes, as: UTF8.self) } else { return nil } }.joined()
}

private func reasons(_ actions: [BackendAction]) -> [String] {
    actions.compactMap { if case .rejected(_, let reason) = $0 { return reason } else { return nil } }
}

private let endpoint = ClientEndpoint(remoteAddress: "192.0.2.7", remotePort: 50000, localAddress: "127.0.0.1",
                                      localPort: 143, sessionID: "s1")

final class IMAPOAuthStoreLoginTests: XCTestCase {
    private func credentials(_ mechanism: BearerLogin.Mechanism = .oauthBearer) -> Credentials {
        Credentials(bearer: bearer(mechanism, mechanism == .oauthBearer ? rfcMessage : googleMessage)!)
    }

    func testTheMessageGoesUnchangedWithSASLIRAfterTheID() throws {
        var machine = IMAPBackendLogin(credentials: credentials(), client: endpoint)
        let text = sent(machine.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER] ready\r\n")))
        let lines = text.components(separatedBy: "\r\n")
        XCTAssertTrue(lines[0].hasPrefix("M2 ID (\"x-originating-ip\" \"192.0.2.7\""), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("M3 AUTHENTICATE OAUTHBEARER "), lines[1])
        XCTAssertEqual(Base64.decode(Array(lines[1].utf8.dropFirst("M3 AUTHENTICATE OAUTHBEARER ".count))), [UInt8](rfcMessage))
        XCTAssertEqual(lines.count, 3)
        XCTAssertEqual(machine.receive([UInt8]("M2 OK\r\nM3 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")),
                       [.accepted(BackendLoginSuccess(capabilities: ["IMAP4rev1", "IDLE"], text: "Logged in"))])
    }

    func testWithoutSASLIRTheMessageFollowsTheContinuation() {
        var machine = IMAPBackendLogin(credentials: credentials(.xoauth2), client: nil)
        XCTAssertEqual(sent(machine.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n"))), "M3 AUTHENTICATE XOAUTH2\r\n")
        XCTAssertEqual(sent(machine.receive([UInt8]("+ \r\n"))), b64(googleMessage) + "\r\n")
        XCTAssertEqual(sent(machine.receive([UInt8]("M3 OK Logged in\r\n"))), "M1 CAPABILITY\r\n")
    }

    func testAStoreWithoutTheMechanismIsNotSentTheToken() {
        for caps in ["IMAP4rev1 ID SASL-IR AUTH=PLAIN AUTH=XOAUTH2", "IMAP4rev1 ID LOGINDISABLED"] {
            var machine = IMAPBackendLogin(credentials: credentials(), client: endpoint)
            XCTAssertEqual(machine.receive([UInt8]("* OK [CAPABILITY \(caps)] ready\r\n")),
                           [.rejected(.authenticationFailed, reason: "store does not offer OAUTHBEARER")])
        }
        // Capabilities asked for: the same after CAPABILITY.
        var asked = IMAPBackendLogin(credentials: credentials(.xoauth2), client: nil)
        XCTAssertEqual(sent(asked.receive([UInt8]("* OK hi\r\n"))), "M1 CAPABILITY\r\n")
        XCTAssertEqual(asked.receive([UInt8]("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nM1 OK\r\n")),
                       [.rejected(.authenticationFailed, reason: "store does not offer XOAUTH2")])
    }

    func testTheStoresErrorChallengeIsAnsweredWithTheDummyResponse() {
        for refusal in ["M3 NO [AUTHENTICATIONFAILED] Authentication failed.", "M3 NO [UNAVAILABLE] later"] {
            var machine = IMAPBackendLogin(credentials: credentials(), client: nil)
            _ = machine.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready\r\n"))
            XCTAssertEqual(sent(machine.receive([UInt8]("+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"))), "AQ==\r\n")
            let verdict = machine.receive([UInt8]("\(refusal)\r\n"))
            guard case .rejected(.authenticationFailed, let reason)? = verdict.first, verdict.count == 1 else {
                return XCTFail("\(verdict)")
            }
            XCTAssertTrue(reason.hasPrefix(#"backend refused the token ({"status":"invalid_token"}): "#), reason)
        }
        // After the continuation form, too; a second challenge is not the protocol.
        var continued = IMAPBackendLogin(credentials: credentials(), client: nil)
        _ = continued.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] ready\r\n"))
        _ = continued.receive([UInt8]("+ \r\n"))
        XCTAssertEqual(sent(continued.receive([UInt8]("+ e30=\r\n"))), "AQ==\r\n")
        XCTAssertEqual(continued.receive([UInt8]("+ e30=\r\n")), [.rejected(.temporary, reason: "unexpected continuation from backend")])
    }

    func testADirectRefusalKeepsItsMeaningAndNoReasonHoldsTheToken() {
        var machine = IMAPBackendLogin(credentials: credentials(), client: nil)
        _ = machine.receive([UInt8]("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready\r\n"))
        XCTAssertEqual(machine.receive([UInt8]("M3 NO [UNAVAILABLE] Maintenance\r\n")),
                       [.rejected(.backendRefused(code: "UNAVAILABLE", text: "Maintenance"),
                                  reason: "backend refused the login with [UNAVAILABLE]: Maintenance")])
    }
}

final class POP3OAuthStoreLoginTests: XCTestCase {
    /// Short enough for an AUTH line of at most 255 octets with its initial response.
    private let shortMessage = "n,a=u@example.org,\u{1}auth=Bearer abc\u{1}\u{1}"

    private func credentials(_ message: String, _ mechanism: BearerLogin.Mechanism = .oauthBearer) -> Credentials {
        Credentials(bearer: bearer(mechanism, message)!)
    }

    func testCAPAFirstThenAuthWithTheInitialResponseWhenItFits() {
        var machine = POP3BackendLogin(credentials: credentials(shortMessage), client: nil)
        XCTAssertEqual(sent(machine.receive([UInt8]("+OK Dovecot ready.\r\n"))), "CAPA\r\n")
        XCTAssertEqual(machine.receive([UInt8]("+OK\r\nTOP\r\nSASL PLAIN OAUTHBEARER\r\n")), [])
        XCTAssertEqual(sent(machine.receive([UInt8](".\r\n"))), "AUTH OAUTHBEARER \(b64(shortMessage))\r\n")
        XCTAssertEqual(machine.receive([UInt8]("+OK Logged in.\r\nleft")),
                       [.accepted(BackendLoginSuccess(capabilities: nil, text: "Logged in.", leftover: [UInt8]("left")))])
    }

    func testALongMessageFollowsTheEmptyChallenge() {
        // RFC 5034 §4: no initial response that makes the AUTH command longer than 255 octets.
        var machine = POP3BackendLogin(credentials: credentials(googleMessage, .xoauth2), client: nil)
        _ = machine.receive([UInt8]("+OK hi\r\n"))
        XCTAssertEqual(sent(machine.receive([UInt8]("+OK\r\nsasl xoauth2\r\n.\r\n"))), "AUTH XOAUTH2 \(b64(googleMessage))\r\n")
        let long = "n,a=u,\u{1}auth=Bearer \(String(repeating: "t", count: 300))\u{1}\u{1}"
        var longer = POP3BackendLogin(credentials: credentials(long), client: nil)
        _ = longer.receive([UInt8]("+OK hi\r\n"))
        XCTAssertEqual(sent(longer.receive([UInt8]("+OK\r\nSASL OAUTHBEARER\r\n.\r\n"))), "AUTH OAUTHBEARER\r\n")
        XCTAssertEqual(sent(longer.receive([UInt8]("+ \r\n"))), b64(long) + "\r\n")
        XCTAssertEqual(longer.receive([UInt8]("+OK in\r\n")), [.accepted(BackendLoginSuccess(capabilities: nil, text: "in"))])
    }

    func testXCLIENTGoesWithCAPAInOneWrite() {
        var machine = POP3BackendLogin(credentials: credentials(shortMessage), client: endpoint)
        XCTAssertEqual(machine.receive([UInt8]("+OK [XCLIENT] Dovecot ready.\r\n")),
                       [.send([UInt8]("XCLIENT ADDR=192.0.2.7 PORT=50000 SESSION=s1 TTL=5\r\nCAPA\r\n"))])
        XCTAssertEqual(sent(machine.receive([UInt8]("+OK\r\n+OK\r\nSASL OAUTHBEARER\r\n.\r\n"))), "AUTH OAUTHBEARER \(b64(shortMessage))\r\n")
    }

    func testAStoreWithoutTheMechanismIsNotSentTheToken() {
        for capa in ["+OK\r\nSASL PLAIN XOAUTH2\r\n.\r\n", "+OK\r\nUSER\r\n.\r\n", "-ERR no CAPA here\r\n"] {
            var machine = POP3BackendLogin(credentials: credentials(shortMessage), client: nil)
            _ = machine.receive([UInt8]("+OK hi\r\n"))
            XCTAssertEqual(machine.receive([UInt8](capa)), [.rejected(.authenticationFailed, reason: "store does not offer OAUTHBEARER")], capa)
        }
    }

    func testTheStoresErrorChallengeIsAnsweredWithTheDummyResponse() {
        var machine = POP3BackendLogin(credentials: credentials(shortMessage), client: nil)
        _ = machine.receive([UInt8]("+OK hi\r\n+OK\r\nSASL OAUTHBEARER\r\n.\r\n"))
        XCTAssertEqual(sent(machine.receive([UInt8]("+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"))), "AQ==\r\n")
        XCTAssertEqual(machine.receive([UInt8]("-ERR [AUTH] Authentication failed.\r\n")),
                       [.rejected(.authenticationFailed,
                                  reason: #"backend refused the token ({"status":"invalid_token"}): [AUTH] Authentication failed."#)])
        // Without the challenge, the refusal keeps its code.
        var direct = POP3BackendLogin(credentials: credentials(shortMessage), client: nil)
        _ = direct.receive([UInt8]("+OK hi\r\n+OK\r\nSASL OAUTHBEARER\r\n.\r\n"))
        XCTAssertEqual(direct.receive([UInt8]("-ERR [IN-USE] locked\r\n")),
                       [.rejected(.backendRefused(code: "IN-USE", text: "locked"), reason: "backend refused the login with [IN-USE]: locked")])
    }

    func testNoReasonHoldsTheToken() {
        let secret = "n,a=u,\u{1}auth=Bearer SECRETTOKEN\u{1}\u{1}"
        let stores = ["-ERR go away\r\n", "+OK\r\n-ERR\r\n", "+OK\r\n+OK\r\nSASL OAUTHBEARER\r\n.\r\n-ERR no\r\n",
                      "+OK\r\n+OK\r\nSASL OAUTHBEARER\r\n.\r\n+ x\r\n-ERR no\r\n", "+OK\r\n+OK\r\n.\r\n"]
        for store in stores {
            var machine = POP3BackendLogin(credentials: credentials(secret), client: nil)
            for reason in reasons(machine.receive([UInt8](store))) {
                XCTAssertFalse(reason.contains("SECRETTOKEN") || reason.contains(b64(secret)), reason)
            }
        }
        for store in ["* OK [CAPABILITY AUTH=OAUTHBEARER SASL-IR] hi\r\n+ x\r\nM3 NO no\r\n", "* OK [CAPABILITY IMAP4rev1] hi\r\n",
                      "* OK [CAPABILITY AUTH=OAUTHBEARER] hi\r\nM3 BAD what\r\n"] {
            var machine = IMAPBackendLogin(credentials: credentials(secret), client: nil)
            let actions = machine.receive([UInt8](store))
            XCTAssertFalse(reasons(actions).isEmpty, store)
            for reason in reasons(actions) {
                XCTAssertFalse(reason.contains("SECRETTOKEN") || reason.contains(b64(secret)), reason)
            }
        }
    }
}
