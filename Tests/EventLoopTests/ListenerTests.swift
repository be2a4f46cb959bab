#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
@testable import EventLoop
import XCTest

/// Accepting: both ways of spreading connections over the loops reach every loop, and an
/// accepted socket has the options the listening socket was given (no system call of its own).
final class ListenerTests: XCTestCase {
    private struct Accepted: Sendable {
        let loop: Int
        let keepAlive: Int32
        let noDelay: Int32
    }

    private func accept(_ count: Int, distribution: AcceptDistribution) throws -> [Accepted] {
        let group = EventLoopGroup(count: 2, acceptDistribution: distribution)
        let accepted = Mutex<[Accepted]>([])
        let all = expectation(description: "every connection accepted")
        all.expectedFulfillmentCount = count
        let listener = try Listener(address: SocketAddress(numericHost: "127.0.0.1", port: 0)!, group: group,
                                    onAccept: { fd, _, loop in
            loop.assertOnLoop()
            var keepAlive: Int32 = 0
            var noDelay: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepAlive, &length)
            length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, &length)
            close(fd)
            accepted.withLock { $0.append(Accepted(loop: loop.index, keepAlive: keepAlive, noDelay: noDelay)) }
            all.fulfill()
        }, onError: { error in XCTFail("accept failed: \(error)") })
        defer { listener.close() }
        var clients: [Int32] = []
        defer { clients.forEach { close($0) } }
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let connected = listener.address.withSockaddr { connect(fd, $0, $1) } == 0
            XCTAssertTrue(connected, "connect: errno \(errno)")
            clients.append(fd)
        }
        wait(for: [all], timeout: 10)
        return accepted.withLock { $0 }
    }

    func testOneAcceptorHandsConnectionsToEveryLoopRoundRobin() throws {
        let accepted = try accept(32, distribution: .handover)
        XCTAssertEqual(accepted.filter { $0.loop == 0 }.count, 16)
        XCTAssertEqual(accepted.filter { $0.loop == 1 }.count, 16)
    }

    func testASocketPerLoopLetsEveryLoopAcceptItsOwn() throws {
        let accepted = try accept(64, distribution: .perLoop)
        // The kernel spreads by a hash of the addresses: 64 source ports reach both sockets.
        XCTAssertGreaterThan(accepted.filter { $0.loop == 0 }.count, 0)
        XCTAssertGreaterThan(accepted.filter { $0.loop == 1 }.count, 0)
    }

    func testAnAcceptedSocketHasTheListenersKeepAliveAndNoDelay() throws {
        for distribution in AcceptDistribution.allCases {
            let accepted = try accept(4, distribution: distribution)
            XCTAssertEqual(accepted.count, 4)
            for connection in accepted {
                XCTAssertNotEqual(connection.keepAlive, 0, "\(distribution): SO_KEEPALIVE not inherited")
                XCTAssertNotEqual(connection.noDelay, 0, "\(distribution): TCP_NODELAY not inherited")
            }
        }
    }
}
