#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
@testable import EventLoop
import XCTest

/// The relay between two TCP loopback pairs: the test holds the far ends ("client" and
/// "store"), the relay the near ends. Every blocking call on a far end has a 5 s timeout, so a
/// relay that loses bytes or a half-close fails the test instead of hanging it.
final class RelayTests: XCTestCase {
    private final class Rig: @unchecked Sendable {   // `totals` is written on the loop before `ended` is signalled
        let group = EventLoopGroup(count: 1)
        var clientFar: Int32 = -1
        var storeFar: Int32 = -1
        var relay: Relay?
        let ended = DispatchSemaphore(value: 0)
        var totals: Relay.Totals?

        /// Stops a relay a failed test left running, so no connection is released open.
        func tearDown() {
            let loop = group.loops[0]
            if let relay { loop.queue.sync { relay.stop() } }
            relay = nil
            if clientFar >= 0 { close(clientFar) }
            if storeFar >= 0 { close(storeFar) }
        }
    }

    override class func setUp() {
        super.setUp()
        Signals.ignoreSIGPIPE()
    }

    /// A connected TCP pair on 127.0.0.1: (far end, blocking with timeouts; near end, non-blocking).
    private func makeTCPPair() throws -> (far: Int32, near: Int32) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(listener, sa, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, sa, &length) == 0
            }
        }
        guard bound else { throw XCTSkip("cannot listen on 127.0.0.1") }
        let far = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(far, $0, length) == 0 }
        }
        XCTAssertTrue(connected)
        let near = accept(listener, nil, nil)
        XCTAssertGreaterThanOrEqual(near, 0)
        _ = fcntl(near, F_SETFL, fcntl(near, F_GETFL) | O_NONBLOCK)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(far, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(far, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return (far, near)
    }

    private func startRelay(splice: Bool, toBackend: [UInt8] = [], toClient: [UInt8] = [],
                            beforeStart: (Rig) -> Void = { _ in }) throws -> Rig {
        let rig = Rig()
        let (clientFar, clientNear) = try makeTCPPair()
        let (storeFar, storeNear) = try makeTCPPair()
        rig.clientFar = clientFar
        rig.storeFar = storeFar
        beforeStart(rig)
        let loop = rig.group.loops[0]
        loop.queue.sync {
            let client = Connection(fd: clientNear, loop: loop)
            let store = Connection(fd: storeNear, loop: loop)
            let relay = Relay(client: client, backend: store, bufferBytes: 65_536, allowSplice: splice) { _, totals in
                rig.totals = totals
                rig.relay = nil
                rig.ended.signal()
            }
            rig.relay = relay
            relay.start(toBackend: toBackend, toClient: toClient)
        }
        return rig
    }

    /// The third field of /proc/sys/net/ipv4/tcp_rmem or tcp_wmem (the network namespace's own).
    private static func socketBufferMaximum(_ name: String) -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/\(name)", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }.last ?? 6_291_456
    }

    private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    }

    /// Writes on a thread of its own, so both directions can be in flight at once.
    private func writeInBackground(_ fd: Int32, _ bytes: [UInt8]) -> DispatchSemaphore {
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = writeFully(fd, bytes)
            done.signal()
        }
        return done
    }

    func testBytesFlowBothWaysAtOnceWithLeftoversFirstInBothModes() throws {
        for splice in [true, false] {
            // Bytes already waiting in the client's socket must reach the store after the leftovers.
            let early = [UInt8]("a2 NOOP\r\n".utf8)
            let rig = try startRelay(splice: splice, toBackend: [UInt8]("pipelined\r\n".utf8),
                                     toClient: [UInt8]("a OK\r\n".utf8)) { rig in
                XCTAssertEqual(writeFully(rig.clientFar, early), early.count)
            }
            defer { rig.tearDown() }
            XCTAssertEqual(readExactly(rig.clientFar, 6), [UInt8]("a OK\r\n".utf8))
            XCTAssertEqual(readExactly(rig.storeFar, 11 + early.count), [UInt8]("pipelined\r\n".utf8) + early)
            let up = pattern(3_000_000, seed: 1)
            let down = pattern(2_000_000, seed: 7)
            let upDone = writeInBackground(rig.clientFar, up)
            let downDone = writeInBackground(rig.storeFar, down)
            let downReader = Reader(fd: rig.clientFar, count: down.count)
            XCTAssertEqual(readExactly(rig.storeFar, up.count), up, "client to store, splice=\(splice)")
            XCTAssertEqual(downReader.result(), down, "store to client, splice=\(splice)")
            XCTAssertEqual(upDone.wait(timeout: .now() + 5), .success)
            XCTAssertEqual(downDone.wait(timeout: .now() + 5), .success)
            close(rig.clientFar); rig.clientFar = -1
            close(rig.storeFar); rig.storeFar = -1
            XCTAssertEqual(rig.ended.wait(timeout: .now() + 5), .success)
            XCTAssertEqual(rig.totals?.spliced, splice, "relay mode")
            XCTAssertEqual(rig.totals?.clientToBackend, 11 + early.count + up.count)
            XCTAssertEqual(rig.totals?.backendToClient, 6 + down.count)
        }
    }

    func testBackPressureStopsReadingASenderWhoseReceiverIsStuck() throws {
        for splice in [true, false] {
            let rig = try startRelay(splice: splice)
            defer { rig.tearDown() }
            _ = fcntl(rig.clientFar, F_SETFL, fcntl(rig.clientFar, F_GETFL) | O_NONBLOCK)
            // The store never reads: once the socket buffers and the relay's one buffer (or pipe)
            // are full, the client's writes must stall instead of the proxy buffering on. Stalled:
            // the socket has not become writable again within a second (the relay, were it still
            // reading, would make room long before that, even on a loaded machine).
            var accepted = 0
            let chunk = [UInt8](repeating: 0x41, count: 65_536)
            let deadline = Date().addingTimeInterval(10)
            var stalled = false
            while !stalled && Date() < deadline {
                let n = chunk.withUnsafeBytes { write(rig.clientFar, $0.baseAddress, $0.count) }
                if n > 0 {
                    accepted += n
                } else {
                    var writable = pollfd(fd: rig.clientFar, events: Int16(POLLOUT), revents: 0)
                    stalled = poll(&writable, 1, 1000) == 0
                }
            }
            XCTAssertTrue(stalled, "the client's writes never stalled (splice=\(splice))")
            // Four loopback socket buffers, each grown by the kernel at most to tcp_wmem's or
            // tcp_rmem's maximum, plus one relay buffer or pipe (1 MiB at most).
            XCTAssertLessThan(accepted, 2 * (Self.socketBufferMaximum("tcp_wmem") + Self.socketBufferMaximum("tcp_rmem")) + 1_048_576,
                              "proxy kept reading a stuck direction (splice=\(splice))")
            // Once the store reads, everything arrives.
            XCTAssertEqual(readExactly(rig.storeFar, accepted).count, accepted)
            close(rig.clientFar); rig.clientFar = -1
            close(rig.storeFar); rig.storeFar = -1
            XCTAssertEqual(rig.ended.wait(timeout: .now() + 5), .success)
        }
    }

    func testHalfCloseIsPassedOnAndTheOtherDirectionKeepsFlowing() throws {
        for splice in [true, false] {
            let rig = try startRelay(splice: splice)
            defer { rig.tearDown() }
            XCTAssertEqual(writeFully(rig.clientFar, [UInt8]("LOGOUT\r\n".utf8)), 8)
            shutdown(rig.clientFar, Int32(SHUT_WR))
            XCTAssertEqual(readExactly(rig.storeFar, 8), [UInt8]("LOGOUT\r\n".utf8))
            var byte: UInt8 = 0
            XCTAssertEqual(read(rig.storeFar, &byte, 1), 0, "the store sees EOF (splice=\(splice))")
            XCTAssertEqual(writeFully(rig.storeFar, [UInt8]("* BYE\r\n".utf8)), 7)
            XCTAssertEqual(readExactly(rig.clientFar, 7), [UInt8]("* BYE\r\n".utf8), "reply after half-close")
            close(rig.storeFar); rig.storeFar = -1
            XCTAssertEqual(rig.ended.wait(timeout: .now() + 5), .success, "both sides done: the relay ends")
            XCTAssertEqual(read(rig.clientFar, &byte, 1), 0)
        }
    }
}

/// Reads `count` bytes on a thread of its own.
private final class Reader: @unchecked Sendable {   // `bytes` is written before `done` is signalled
    private var bytes: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32, count: Int) {
        Thread.detachNewThread { [self] in
            bytes = readExactly(fd, count)
            done.signal()
        }
    }

    func result() -> [UInt8] {
        guard done.wait(timeout: .now() + 10) == .success else { return [] }
        return bytes
    }
}

/// Reads until `count` bytes, EOF, or the socket's receive timeout.
private func readExactly(_ fd: Int32, _ count: Int) -> [UInt8] {
    var result: [UInt8] = []
    result.reserveCapacity(count)
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while result.count < count {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, count - result.count)) }
        if n <= 0 { break }
        result += chunk[..<n]
    }
    return result
}

/// Blocking write of everything (bounded by the socket's send timeout); returns how much was written.
private func writeFully(_ fd: Int32, _ bytes: [UInt8]) -> Int {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        offset += n
    }
    return offset
}
