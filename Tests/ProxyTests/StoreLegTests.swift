import Configuration
import EventLoop
@testable import Proxy
import Routing
import XCTest

final class StoreLegTests: XCTestCase {
    private let listeners = [
        ListenerConfiguration(service: .imap, address: HostPort(host: "0.0.0.0", port: 143), tls: .starttls, requireTLS: true),
        ListenerConfiguration(service: .pop3, address: HostPort(host: "192.0.2.7", port: 110), tls: .none, requireTLS: false),
    ]

    private func isListener(_ host: String, _ port: Int) throws -> Bool {
        let address = try XCTUnwrap(SocketAddress(numericHost: host, port: port))
        return StoreLeg.isListener(address, of: listeners)
    }

    func testAStoreThatIsOurOwnListenerIsALoop() throws {
        XCTAssertTrue(try isListener("192.0.2.7", 110), "exactly a listener's address")
        XCTAssertTrue(try isListener("127.0.0.1", 143), "loopback reaches a wildcard listener")
        XCTAssertTrue(try isListener("127.0.0.2", 143))
    }

    func testAStoreElsewhereOnTheSamePortIsNoLoop() throws {
        XCTAssertFalse(try isListener("192.0.2.8", 143), "another host on a wildcard listener's port")
        XCTAssertFalse(try isListener("127.0.0.1", 110), "loopback does not reach a listener bound to one address")
        XCTAssertFalse(try isListener("127.0.0.1", 993))
    }
}
