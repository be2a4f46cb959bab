import Dispatch
import Synchronization

/// One serial queue that owns a share of the connections, and the epoll set that watches
/// their sockets (`ReadinessSet`). Every connection is pinned to one loop for its whole life,
/// so its state needs no locks: it is only touched on this queue.
public final class EventLoop: Sendable {
    public let queue: DispatchQueue
    public let index: Int
    /// Scratch space for the copying relay and the pre-login reads. Only touched on `queue`.
    nonisolated(unsafe) let scratch: UnsafeMutableRawBufferPointer
    /// Idle pipes for the splice relay. Only touched on `queue`.
    nonisolated(unsafe) let pipes: PipePool
    /// The loop's timeouts (`schedule`). Only touched on `queue`.
    let timers: LoopTimers
    /// The loop's sockets. Only touched on `queue`.
    let readiness: ReadinessSet

    init(index: Int, scratchBytes: Int) {
        self.index = index
        self.queue = DispatchQueue(label: "mailswitch.loop.\(index)")
        self.scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: scratchBytes, alignment: 16)
        self.pipes = PipePool()
        self.timers = LoopTimers(queue: queue)
        self.readiness = ReadinessSet(queue: queue, timers: timers)
    }

    deinit {
        timers.stop()
        readiness.stop()
        scratch.deallocate()
    }

    /// Precondition kept in release builds: a connection touched off its loop is a data race.
    @inline(__always)
    public func assertOnLoop() {
        dispatchPrecondition(condition: .onQueue(queue))
    }

    /// Queues `work` on the loop; a wait for the loop's next event is cut short for it.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        readiness.executeQueued()
        queue.async { [readiness] in
            readiness.executeStarted()
            work()
        }
        readiness.wakeIfLingering()
    }

    /// A timeout on this loop, from its own timer heap; call on the loop, and cancel the
    /// returned timer on the loop too.
    @discardableResult
    public func schedule(after seconds: Double, _ work: @escaping @Sendable () -> Void) -> LoopTimer {
        timers.add(after: seconds, work)
    }
}

/// A timer that fires once on any queue, unless cancelled first (a loop's own timeouts use
/// `EventLoop.schedule` instead).
///
/// Not `asyncAfter` with a `DispatchWorkItem`: a cancelled work item stays in libdispatch's
/// timer heap, holding its block and what the block captured, until its deadline passes; the
/// directory arms one per search and cancels most within milliseconds. A cancelled timer
/// source leaves the heap at once and releases its handler.
///
/// `@unchecked Sendable`: the only state is the source, and Dispatch sources may be cancelled
/// from any thread.
public final class OneShotTimer: @unchecked Sendable {
    private let source: any DispatchSourceTimer

    public init(queue: DispatchQueue, after seconds: Double, _ work: @escaping @Sendable () -> Void) {
        let source = DispatchSource.makeTimerSource(queue: queue)
        EventLoopStatistics.count(EventLoopStatistics.timerSources)
        source.schedule(deadline: .now() + seconds)
        // Cancelling inside the handler releases the handler (and this capture of the source).
        source.setEventHandler { [source] in
            source.cancel()
            work()
        }
        self.source = source
        source.resume()
    }

    public func cancel() {
        source.cancel()
    }
}

/// The fixed set of loops (about one per core); connections are spread round-robin.
public final class EventLoopGroup: Sendable {
    public let loops: [EventLoop]
    public let acceptDistribution: AcceptDistribution
    private let next = Atomic<Int>(0)

    public init(count: Int, scratchBytes: Int = 65_536, acceptDistribution: AcceptDistribution = .defaultChoice) {
        loops = (0..<max(1, count)).map { EventLoop(index: $0, scratchBytes: scratchBytes) }
        self.acceptDistribution = acceptDistribution
    }

    public func nextLoop() -> EventLoop {
        let value = next.add(1, ordering: .relaxed).oldValue
        return loops[value % loops.count]
    }
}
