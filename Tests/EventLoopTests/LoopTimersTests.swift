import Dispatch
import EventLoop
import Synchronization
import XCTest

final class LoopTimersTests: XCTestCase {
    func testTimersFireInDeadlineOrderNeverEarlyAndCancelledOnesNever() {
        let loop = EventLoopGroup(count: 1).loops[0]
        let fired = Mutex<[(Int, Double)]>([])
        let done = expectation(description: "the last timer fired")
        let start = DispatchTime.now().uptimeNanoseconds
        let before = EventLoopStatistics.snapshot["timer_sources"] ?? 0
        loop.execute {
            var timers: [LoopTimer] = []
            for (index, seconds) in [0.30, 0.05, 0.20, 0.10, 0.25, 0.15].enumerated() {
                timers.append(loop.schedule(after: seconds) {
                    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    fired.withLock { $0.append((index, elapsed)) }
                    if index == 0 { done.fulfill() }
                })
            }
            timers[2].cancel()   // 0.20 s
            timers[5].cancel()   // 0.15 s
            timers[5].cancel()   // twice is harmless
        }
        wait(for: [done], timeout: 5)
        let order = fired.withLock { $0 }
        XCTAssertEqual(order.map(\.0), [1, 3, 4, 0], "deadline order, the cancelled ones never")
        let deadlines = [1: 0.05, 3: 0.10, 4: 0.25, 0: 0.30]
        for (index, elapsed) in order {
            guard let deadline = deadlines[index] else { continue }   // a cancelled one: failed above
            XCTAssertGreaterThanOrEqual(elapsed, deadline, "timer \(index) fired early")
        }
        XCTAssertEqual(EventLoopStatistics.snapshot["timer_sources"] ?? 0, before, "no Dispatch source per timeout")
    }

    func testATimerMadeInsideAnotherFiresToo() {
        let loop = EventLoopGroup(count: 1).loops[0]
        let done = expectation(description: "nested")
        loop.execute {
            loop.schedule(after: 0.05) {
                loop.schedule(after: 0) { done.fulfill() }
            }
        }
        wait(for: [done], timeout: 5)
    }
}
