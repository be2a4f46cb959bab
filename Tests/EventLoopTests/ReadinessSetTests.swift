#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization
@testable import EventLoop
import XCTest

/// The loop's own epoll set: events for a descriptor closed in the same batch never reach the
/// connection that gets its number, and a hang-up nobody asked about neither spins the loop
/// nor is lost.
final class ReadinessSetTests: XCTestCase {
    override class func setUp() {
        super.setUp()
        Signals.ignoreSIGPIPE()
    }

    /// A Unix stream pair: (near end, non-blocking, for a `Connection`; far end, for the test).
    private func makePair() throws -> (near: Int32, far: Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                         0, &fds) == 0 else {
            throw XCTSkip("socketpair: errno \(errno)")
        }
        return (fds[0], fds[1])
    }

    /// Confined to the loop's queue, like the connections it holds.
    private final class Round: @unchecked Sendable {
        var first: Connection?
        var second: Connection?
        var newcomer: Connection?
        var farEnds: [Int32] = []
        var closedNumber: Int32 = -1
        var newcomerWoke = false
        var reused = false

        func closeAll() {
            for connection in [first, second, newcomer].compactMap({ $0 }) where !connection.isClosed { connection.close() }
            farEnds.forEach { close($0) }
        }
    }

    func testAnEventFetchedForADescriptorClosedInTheSameBatchNeverReachesItsNewOwner() throws {
        let loop = EventLoopGroup(count: 1).loops[0]
        let rounds = 300
        var reusedRounds = 0
        let staleBefore = EventLoopStatistics.snapshot["stale_events"] ?? 0
        for _ in 0..<rounds {
            let round = Round()
            let a = try makePair()
            let b = try makePair()
            round.farEnds = [a.far, b.far]
            let done = expectation(description: "the batch was handled")
            loop.queue.sync {
                // Whichever of the two is handled first closes the other and opens a pair in its
                // place: the lowest free number, the one just closed, comes back at once.
                let onFirstReadable: (Connection, Connection) -> Void = { own, other in
                    guard round.closedNumber < 0 else { return }
                    round.closedNumber = other.fd
                    other.close()
                    guard let c = try? self.makePair() else { return }
                    round.farEnds.append(c.far)
                    round.reused = c.near == round.closedNumber
                    let newcomer = Connection(fd: c.near, loop: loop)
                    newcomer.onReadable = { round.newcomerWoke = true }
                    newcomer.setReading(true)
                    round.newcomer = newcomer
                    // Runs after the whole batch: by then the stale event has been seen or dropped.
                    loop.execute { done.fulfill() }
                    _ = own
                }
                let first = Connection(fd: a.near, loop: loop)
                let second = Connection(fd: b.near, loop: loop)
                first.onReadable = { [unowned first, unowned second] in onFirstReadable(first, second) }
                second.onReadable = { [unowned first, unowned second] in onFirstReadable(second, first) }
                first.setReading(true)
                second.setReading(true)
                round.first = first
                round.second = second
            }
            // Both become readable while the loop is held, so one wait fetches both events.
            let held = DispatchSemaphore(value: 0)
            loop.execute { held.wait() }
            var byte: UInt8 = 1
            XCTAssertEqual(write(a.far, &byte, 1), 1)
            XCTAssertEqual(write(b.far, &byte, 1), 1)
            held.signal()
            wait(for: [done], timeout: 10)
            loop.queue.sync {
                XCTAssertFalse(round.newcomerWoke, "an event of the closed descriptor reached the connection that got its number")
                if round.reused { reusedRounds += 1 }
                round.closeAll()
            }
        }
        // The premise: the numbers did come back (nothing else in the process opens descriptors
        // between a close and the next socketpair on this queue, bar a stray thread now and then).
        XCTAssertGreaterThan(reusedRounds, rounds * 9 / 10, "descriptor numbers were not reused: the test proved nothing")
        XCTAssertGreaterThanOrEqual((EventLoopStatistics.snapshot["stale_events"] ?? 0) - staleBefore, reusedRounds,
                                    "every reused round dropped its stale event")
    }

    func testAHangUpNobodyAskedAboutIsReportedOnceAndSeenWhenReadingResumes() throws {
        let loop = EventLoopGroup(count: 1).loops[0]
        let pair = try makePair()
        final class State: @unchecked Sendable {   // on the loop
            var connection: Connection?
            var sawEnd = false
        }
        let state = State()
        loop.queue.sync {
            let connection = Connection(fd: pair.near, loop: loop)
            connection.onReadable = {}
            connection.setReading(true)    // in the kernel's set
            connection.setReading(false)   // then asking nothing
            state.connection = connection
        }
        let waitsBefore = EventLoopStatistics.snapshot["epoll_waits"] ?? 0
        close(pair.far)   // EPOLLHUP, reported whatever was asked
        // Many turns of the loop: a level-triggered hang-up would be fetched on each.
        for _ in 0..<200 {
            loop.queue.sync {}
            usleep(100)
        }
        let waits = (EventLoopStatistics.snapshot["epoll_waits"] ?? 0) - waitsBefore
        XCTAssertLessThan(waits, 20, "the hang-up was reported over and over while nothing was asked")
        let ended = expectation(description: "the end of the stream was read")
        loop.queue.sync {
            guard let connection = state.connection else { return }
            connection.onReadable = { [unowned connection] in
                if case .endOfFile? = try? connection.readIntoScratch().0 {
                    state.sawEnd = true
                    connection.close()
                    ended.fulfill()
                }
            }
            connection.setReading(true)
        }
        wait(for: [ended], timeout: 5)
        loop.queue.sync { XCTAssertTrue(state.sawEnd) }
    }

    func testInterestChangesAreOneSystemCallEachAndNoneWhenNothingChanges() throws {
        let loop = EventLoopGroup(count: 1).loops[0]
        let pair = try makePair()
        defer { close(pair.far) }
        loop.queue.sync {
            let connection = Connection(fd: pair.near, loop: loop)
            let before = EventLoopStatistics.snapshot["interest_changes"] ?? 0
            connection.setReading(true)    // add
            connection.setReading(true)    // nothing
            connection.setWriting(true)    // modify
            connection.setReading(false)   // modify
            connection.setWriting(false)   // modify (nothing asked)
            XCTAssertEqual((EventLoopStatistics.snapshot["interest_changes"] ?? 0) - before, 4)
            connection.close()             // its only descriptor closed: the kernel drops it
            XCTAssertEqual((EventLoopStatistics.snapshot["interest_changes"] ?? 0) - before, 4)
        }
    }

    func testInsideAWakeUpOnlyTheLastInterestOfATurnReachesTheKernel() throws {
        let loop = EventLoopGroup(count: 1).loops[0]
        let pair = try makePair()
        defer { close(pair.far) }
        final class Box: @unchecked Sendable { var connection: Connection?; var changes = 0; var reads = 0 }   // on the loop
        let box = Box()
        let toggled = expectation(description: "the handler toggled its interest")
        let readAgain = expectation(description: "input still reported after the toggles")
        loop.queue.sync {
            let connection = Connection(fd: pair.near, loop: loop)
            connection.onReadable = { [unowned connection] in
                box.reads += 1
                if box.reads == 1 {
                    let before = EventLoopStatistics.snapshot["interest_changes"] ?? 0
                    connection.setReading(false)
                    connection.setWriting(true)
                    connection.setWriting(false)
                    connection.setReading(true)   // back where it was: nothing for the kernel
                    loop.execute {
                        box.changes = (EventLoopStatistics.snapshot["interest_changes"] ?? 0) - before
                        toggled.fulfill()
                    }
                } else if box.reads == 2 {
                    _ = try? connection.readIntoScratch()
                    readAgain.fulfill()
                }
            }
            connection.setReading(true)
            box.connection = connection
        }
        var byte: UInt8 = 1
        XCTAssertEqual(write(pair.far, &byte, 1), 1)
        wait(for: [toggled, readAgain], timeout: 5)
        loop.queue.sync {
            XCTAssertEqual(box.changes, 0, "a toggle within one turn reached the kernel")
            box.connection?.close()
        }
    }
}
