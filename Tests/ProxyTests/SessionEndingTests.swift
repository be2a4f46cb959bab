import MailProtocol
@testable import Proxy
import Routing
import XCTest

final class SessionEndingTests: XCTestCase {
    private let imapGoodbye = ProtocolDescriptor.imap.relayGoodbye

    private func decide(_ reason: SessionEndReason, _ phase: SessionPhase, goodbye: ((String) -> [UInt8])?,
                        boundary: Bool = true, caughtUp: Bool = true, message: String? = nil) -> SessionEnding {
        SessionEnding.decide(reason, message: message, phase: phase, relayGoodbye: goodbye, atResponseBoundary: boundary,
                             clientCaughtUp: caughtUp)
    }

    func testARelayedIMAPSessionGetsBYEOnlyBetweenResponsesWithTheClientCaughtUp() {
        XCTAssertEqual(decide(.routeChange, .relaying, goodbye: imapGoodbye),
                       .goodbyeAndClose(Array("* BYE [UNAVAILABLE] Your mailbox has moved, please reconnect.\r\n".utf8)))
        XCTAssertEqual(decide(.routeChange, .relaying, goodbye: imapGoodbye, boundary: false), .close,
                       "a BYE inside a response or a literal would corrupt it")
        XCTAssertEqual(decide(.kick, .relaying, goodbye: imapGoodbye, caughtUp: false), .close,
                       "bytes still queued for the client would come after the BYE")
    }

    func testARelayedPOP3SessionIsClosedWithoutWords() {
        XCTAssertNil(ProtocolDescriptor.pop3.relayGoodbye)
        XCTAssertEqual(decide(.hold, .relaying, goodbye: ProtocolDescriptor.pop3.relayGoodbye), .close)
    }

    func testTheOperatorsTextReplacesTheDefaultAndCannotBreakTheLine() {
        XCTAssertEqual(decide(.kick, .relaying, goodbye: imapGoodbye, message: "bye\r\nA1 OK forged"),
                       .goodbyeAndClose(Array("* BYE [UNAVAILABLE] bye  A1 OK forged\r\n".utf8)))
    }

    func testALoginUnderWayIsRefusedAsTemporary() {
        XCTAssertEqual(decide(.routeChange, .loggingIn, goodbye: imapGoodbye),
                       .refuseLogin(LoginRefusal(.unavailable(text: "Your mailbox has moved, please reconnect."),
                                                 "route change during login")))
        guard case .refuseLogin(let refusal) = decide(.kick, .loggingIn, goodbye: nil) else { return XCTFail("not refused") }
        XCTAssertFalse(refusal.delayed, "the client may retry at once")
        XCTAssertFalse(refusal.countsAsFailedLogin)
    }

    func testBeforeLoginOnlyAShutdownEndsTheSession() {
        for phase in [SessionPhase.preLogin, .answeringLater] {
            XCTAssertEqual(decide(.routeChange, phase, goodbye: imapGoodbye), .ignore, "its login will find the new route")
            XCTAssertEqual(decide(.kick, phase, goodbye: imapGoodbye), .ignore)
            XCTAssertEqual(decide(.shutdown, phase, goodbye: imapGoodbye),
                           .goodbyeBeforeLogin(text: "Server shutting down, please reconnect."))
        }
        XCTAssertEqual(decide(.shutdown, .closed, goodbye: imapGoodbye), .ignore)
    }

    func testEachReasonHasItsOwnDefaultText() {
        let texts = [SessionEndReason.routeChange, .hold, .kick, .shutdown].map(SessionEnding.defaultText)
        XCTAssertEqual(Set(texts).count, 4)
        XCTAssertEqual(SessionEnding.defaultText(.hold), RoutingTable.defaultHoldMessage)
    }

    func testTheLoginTimeoutNeverCallsAClientWaitingForItsStoreInactive() {
        guard case .refuseLogin(let refusal) = LoginTimeout.decide(.loggingIn, waitingForStore: true, seconds: 3) else {
            return XCTFail("a login waiting for its store is refused, not said goodbye to")
        }
        XCTAssertEqual(refusal.failure, .temporary, "IMAP's NO [UNAVAILABLE], POP3's -ERR [SYS/TEMP], under the client's tag")
        XCTAssertEqual(refusal.outcome, .timeout)
        XCTAssertFalse(refusal.delayed)
        XCTAssertEqual(refusal.reason, "the store did not answer the login within login_timeout (3s)")
        guard case .refuseLogin(let lookup) = LoginTimeout.decide(.loggingIn, waitingForStore: false, seconds: 60) else {
            return XCTFail("a login waiting for the directory is refused too")
        }
        XCTAssertEqual(lookup.reason, "the directory did not answer the login within login_timeout (60s)")
    }

    func testTheLoginTimeoutInEveryOtherPhase() {
        XCTAssertEqual(LoginTimeout.decide(.preLogin, waitingForStore: false, seconds: 3), .inactive)
        XCTAssertEqual(LoginTimeout.decide(.answeringLater, waitingForStore: false, seconds: 3), .closeAfterAnswer)
        XCTAssertEqual(LoginTimeout.decide(.relaying, waitingForStore: false, seconds: 3), .clientNeverRead)
        XCTAssertEqual(LoginTimeout.decide(.closed, waitingForStore: false, seconds: 3), .ignore)
    }
}
