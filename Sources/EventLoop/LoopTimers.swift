import Dispatch

/// A timeout on one loop (a login, a connect, a refusal's delay), kept in the loop's own
/// timer heap. Made and cancelled on the loop's queue only.
///
/// `@unchecked Sendable`: its state is touched on its loop's queue only.
public final class LoopTimer: @unchecked Sendable {
    fileprivate let deadline: UInt64
    fileprivate var work: (@Sendable () -> Void)?
    /// Where it sits in the heap; -1 once fired or cancelled.
    fileprivate var index = -1
    fileprivate unowned let timers: LoopTimers

    fileprivate init(deadline: UInt64, work: @escaping @Sendable () -> Void, timers: LoopTimers) {
        self.deadline = deadline
        self.work = work
        self.timers = timers
    }

    /// Removes it from the heap at once (no dead entry waits for its deadline).
    public func cancel() {
        timers.remove(self)
    }
}

extension Optional where Wrapped == LoopTimer {
    /// Cancels the timer, if any, and lets go of it.
    public mutating func cancelAndForget() {
        self?.cancel()
        self = nil
    }
}

/// Every timeout of a loop in one binary heap, served by one Dispatch timer source made once
/// and re-armed only when a new deadline is earlier than the one it is armed for. A login
/// arms three or four timeouts and cancels most within milliseconds; a Dispatch source each
/// would be registered with and cancelled through libdispatch's manager thread, waking it
/// every time (the profile in the README counts it).
///
/// `@unchecked Sendable`: all state is confined to `queue`.
final class LoopTimers: @unchecked Sendable {
    private let queue: DispatchQueue
    private let source: any DispatchSourceTimer
    private var heap: [LoopTimer] = []
    /// The deadline the source is armed for; `.max` when idle.
    private var armedFor = UInt64.max
    /// Timeouts here are seconds long: a little lateness saves re-arming and wake-ups.
    private static let leewayNanoseconds: UInt64 = 10_000_000

    init(queue: DispatchQueue) {
        self.queue = queue
        source = DispatchSource.makeTimerSource(queue: queue)
        EventLoopStatistics.count(EventLoopStatistics.timerSources)
        source.schedule(deadline: .distantFuture)
        // Strong, like the readiness set's: `stop()` breaks the cycle.
        source.setEventHandler { [self] in fire() }
        source.resume()
    }

    /// A loop lives as long as the process; a test's loop may not (`EventLoop.deinit`).
    func stop() {
        source.cancel()
    }

    var count: Int { heap.count }

    /// The earliest deadline (uptime nanoseconds), `.max` with none.
    var nextDeadline: UInt64 { heap.first?.deadline ?? .max }

    func add(after seconds: Double, _ work: @escaping @Sendable () -> Void) -> LoopTimer {
        dispatchPrecondition(condition: .onQueue(queue))
        let delay = UInt64(max(0, seconds) * 1e9)
        let timer = LoopTimer(deadline: DispatchTime.now().uptimeNanoseconds &+ delay, work: work, timers: self)
        timer.index = heap.count
        heap.append(timer)
        siftUp(timer.index)
        if timer.deadline &+ Self.leewayNanoseconds < armedFor { arm(timer.deadline) }
        return timer
    }

    fileprivate func remove(_ timer: LoopTimer) {
        dispatchPrecondition(condition: .onQueue(queue))
        timer.work = nil
        let index = timer.index
        guard index >= 0, index < heap.count, heap[index] === timer else { return }
        timer.index = -1
        let last = heap.removeLast()
        guard index < heap.count else { return }
        heap[index] = last
        last.index = index
        siftDown(index)
        siftUp(last.index)
        // The source stays armed for a deadline that may now have no timer: it fires once
        // for nothing, which costs less than re-arming on every cancel.
    }

    private func fire() {
        armedFor = .max
        let now = DispatchTime.now().uptimeNanoseconds
        while let first = heap.first, first.deadline <= now {
            let work = first.work
            remove(first)
            work?()
        }
        if let next = heap.first { arm(next.deadline) }
    }

    private func arm(_ deadline: UInt64) {
        armedFor = deadline
        source.schedule(deadline: DispatchTime(uptimeNanoseconds: deadline),
                        leeway: .nanoseconds(Int(Self.leewayNanoseconds)))
    }

    // MARK: - Heap

    private func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { return }
            swapAt(child, parent)
            child = parent
        }
    }

    private func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count, heap[right].deadline < heap[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            swapAt(parent, smallest)
            parent = smallest
        }
    }

    private func swapAt(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        heap[a].index = a
        heap[b].index = b
    }
}
