import MailProtocol
import XCTest

final class ProtocolDescriptorTests: XCTestCase {
    private let settings = PreLoginConfiguration(offersStartTLS: true, allowsPlaintextLogin: false)

    func testEachDescriptorMakesItsOwnProtocolsMachines() {
        let imap = String(decoding: ProtocolDescriptor.imap.makePreLogin(settings, false).greeting(), as: UTF8.self)
        XCTAssertTrue(imap.hasPrefix("* OK [CAPABILITY IMAP4rev1"), imap)
        XCTAssertTrue(imap.contains("STARTTLS") && imap.contains("LOGINDISABLED"), imap)
        let pop3 = String(decoding: ProtocolDescriptor.pop3.makePreLogin(settings, false).greeting(), as: UTF8.self)
        XCTAssertTrue(pop3.hasPrefix("+OK"), pop3)
    }

    func testPortsAndALPNNames() {
        XCTAssertEqual([ProtocolDescriptor.imap.standardPort, ProtocolDescriptor.imap.implicitTLSPort], [143, 993])
        XCTAssertEqual([ProtocolDescriptor.pop3.standardPort, ProtocolDescriptor.pop3.implicitTLSPort], [110, 995])
        XCTAssertEqual([ProtocolDescriptor.imap.alpn, ProtocolDescriptor.pop3.alpn], ["imap", "pop3"])
    }

    func testTheStoreLoginMachineAsksForSTARTTLSWhenTold() {
        let credentials = Credentials(username: "alice", password: Array("secret".utf8))
        var imap = ProtocolDescriptor.imap.makeBackendLogin(.init(credentials: credentials, client: nil, startTLS: true,
                                                                  limits: ProtocolLimits()))
        XCTAssertEqual(imap.receive(Array("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n".utf8)), [.send(Array("M4 STARTTLS\r\n".utf8))])
        var pop3 = ProtocolDescriptor.pop3.makeBackendLogin(.init(credentials: credentials, client: nil, startTLS: true,
                                                                  limits: ProtocolLimits()))
        XCTAssertEqual(pop3.receive(Array("+OK hi\r\n".utf8)), [.send(Array("STLS\r\n".utf8))])
    }

    func testOnlyIMAPFollowsResponsesForAGoodbye() {
        var framing = ProtocolDescriptor.imap.makeResponseFraming?()
        XCTAssertNotNil(framing)
        Array("* 1 FETCH (BODY[] {5}\r\nab".utf8).withUnsafeBytes { framing?.consume($0) }
        XCTAssertEqual(framing?.isAtResponseBoundary, false)
        XCTAssertEqual(framing?.literalRemaining, 3)
        XCTAssertNil(ProtocolDescriptor.pop3.makeResponseFraming)
    }

    func testTheReadOnlyFiltersRefuseAWriteAndPassARead() {
        var imap = ProtocolDescriptor.imap.makeReadOnlyFilter("Read-only.", ProtocolLimits())
        let expunge = Array("a1 EXPUNGE\r\n".utf8).withUnsafeBytes { imap.fromClient($0) }
        XCTAssertEqual(expunge.toStore, [])
        XCTAssertTrue(String(decoding: expunge.toClient, as: UTF8.self).hasPrefix("a1 NO"))
        var pop3 = ProtocolDescriptor.pop3.makeReadOnlyFilter("Read-only.", ProtocolLimits())
        let list = Array("LIST\r\n".utf8).withUnsafeBytes { pop3.fromClient($0) }
        XCTAssertEqual(list.toStore, Array("LIST\r\n".utf8))
    }

    func testARefusalInTheSameBatchAsSTARTTLSWins() {
        let refusal = BackendAction.rejected(.temporary, reason: "backend sent data after its STARTTLS answer")
        XCTAssertEqual(BackendAction.effective([.send([1]), .startTLS, refusal]), [.send([1]), refusal])
        XCTAssertEqual(BackendAction.effective([.send([1]), .startTLS]), [.send([1]), .startTLS])
    }
}
