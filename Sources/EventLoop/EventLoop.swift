import Dispatch
import Synchronization

/// One serial queue that owns a share of the connections. Every connection is pinned to one
/// loop for its whole life, so its state needs no locks: it is only touched on this queue.
public final class EventLoop: Sendable {
    public let queue: DispatchQueue
    public let index: Int
    /// Scratch space for the copying relay and the pre-login reads. Only touched on `queue`.
    nonisolated(unsafe) let scratch: UnsafeMutableRawBufferPointer
    /// Idle pipes for the splice relay. Only touched on `queue`.
    nonisolated(unsafe) let pipes: PipePool

    init(index: Int, scratchBytes: Int) {
        self.index = index
        self.queue = DispatchQueue(label: "mailswitch.loop.\(index)")
        self.scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: scratchBytes, alignment: 16)
        self.pipes = PipePool()
    }

    deinit { scratch.deallocate() }

    /// Precondition kept in release builds: a connection touched off its loop is a data race.
    @inline(__always)
    public func assertOnLoop() {
        dispatchPrecondition(condition: .onQueue(queue))
    }

    public func execute(_ work: @escaping @Sendable () -> Void) {
        queue.async(execute: work)
    }

    /// A one-shot timer on this loop; cancel it with `cancel()` on the returned item.
    @discardableResult
    public func schedule(after seconds: Double, _ work: @escaping @Sendable () -> Void) -> DispatchWorkItem {
        let item = DispatchWorkItem(block: work)
        queue.asyncAfter(deadline: .now() + seconds, execute: item)
        return item
    }
}

/// The fixed set of loops (about one per core); connections are spread round-robin.
public final class EventLoopGroup: Sendable {
    public let loops: [EventLoop]
    private let next = Atomic<Int>(0)

    public init(count: Int, scratchBytes: Int = 65_536) {
        loops = (0..<max(1, count)).map { EventLoop(index: $0, scratchBytes: scratchBytes) }
    }

    public func nextLoop() -> EventLoop {
        let value = next.add(1, ordering: .relaxed).oldValue
        return loops[value % loops.count]
    }
}
