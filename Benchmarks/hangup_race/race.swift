// The libdispatch hang-up race, alone: socket pairs whose far end closes while a read source
// watches the near end (EPOLLHUP), the source cancelled from its handler, the near end
// closed in the cancel handler. Four serial queues, at most 64 pairs at a time, for the given
// seconds. Built three times by Benchmarks/hangup_race.py: as is (a Dispatch source per
// socket, mailswitch's old design); with the old epoll_wait shim
// (Benchmarks/hangup_race/epoll_hangup.c) linked in; and with -D OWN_EPOLL (plus the daemon's
// own Sources/CSystemShims/system_calls.c, and its header by -import-objc-header), mailswitch's design now
// (Sources/EventLoop/ReadinessSet.swift): each queue owns an epoll set, watched by one
// Dispatch read source on the queue, and the near ends are in their queue's set,
// level-triggered, with no Dispatch source of their own; the source's handler fetches ready
// events without blocking and reads; end-of-file or an error takes the descriptor out of the
// set and closes it. libdispatch then never sees a socket, so never its hang-up.
//   race SECONDS        prints "pairs N" and exits 0, unless libdispatch crashes first
//                       (with OWN_EPOLL also "stale_events N": events dropped by generation)
import Dispatch
import Glibc

final class Finished: @unchecked Sendable {   // guarded by `lock`
    private var lock = pthread_mutex_t()
    private var count = 0
    init() { pthread_mutex_init(&lock, nil) }
    func add() { pthread_mutex_lock(&lock); count += 1; pthread_mutex_unlock(&lock) }
    var total: Int { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return count }
}

/// Socket pairs for `seconds`, at most 64 at a time (`slots`, signalled as each one finishes):
/// `watch` gets the near end and the far end of the `made`-th pair and closes the far end
/// within 200 µs. Returns when the last pair has finished.
func makePairs(for seconds: Double, slots: DispatchSemaphore, watch: (_ near: Int32, _ far: Int32, _ made: Int) -> Void) {
    let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
    var made = 0
    while DispatchTime.now().uptimeNanoseconds < end {
        slots.wait()
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else {
            fatalError("socketpair: errno \(errno)")
        }
        watch(fds[0], fds[1], made)
        made += 1
    }
    for _ in 0..<64 { slots.wait() }
    // Dispatch refuses to free a semaphore below its initial value.
    for _ in 0..<64 { slots.signal() }
}

#if OWN_EPOLL
/// A serial queue and its epoll set, watched by one read source on the queue. A descriptor's
/// key is its number and a generation (`fd | generation << 32`, as in ReadinessSet), so an
/// event fetched for a descriptor that was closed, and its number reused, is dropped.
final class Loop: @unchecked Sendable {   // mutable state touched only on `queue`
    let queue: DispatchQueue
    private let epollFD: Int32
    private let finished: Finished
    private let slots: DispatchSemaphore
    private var source: (any DispatchSourceRead)?
    /// By descriptor: the generation it was registered with; 0 while it is not.
    private var generations: [UInt32] = []
    private var lastGeneration: UInt32 = 0
    private let batch: UnsafeMutablePointer<mailswitch_readiness>
    static let batchSize: Int32 = 64
    private(set) var staleEvents = 0

    init(label: String, finished: Finished, slots: DispatchSemaphore) {
        queue = DispatchQueue(label: label)
        self.finished = finished
        self.slots = slots
        epollFD = mailswitch_epoll_create()
        guard epollFD >= 0 else { fatalError("epoll_create1: errno \(errno)") }
        batch = .allocate(capacity: Int(Self.batchSize))
        let source = DispatchSource.makeReadSource(fileDescriptor: epollFD, queue: queue)
        source.setEventHandler { [unowned self] in drain() }
        self.source = source
        source.activate()
    }

    /// On `queue`: `fd` in the set, level-triggered, until it reads end-of-file or fails.
    func register(_ fd: Int32) {
        dispatchPrecondition(condition: .onQueue(queue))
        let index = Int(fd)
        if index >= generations.count {
            generations.append(contentsOf: repeatElement(0, count: max(index + 1, generations.count * 2, 256) - generations.count))
        }
        lastGeneration &+= 1
        if lastGeneration == 0 { lastGeneration = 1 }
        generations[index] = lastGeneration
        let key = UInt64(lastGeneration) << 32 | UInt64(UInt32(bitPattern: fd))
        let events = UInt32(MAILSWITCH_READABLE) | UInt32(MAILSWITCH_READ_HANGUP)
        guard mailswitch_epoll_ctl(epollFD, Int32(MAILSWITCH_CTL_ADD), fd, events, key) == 0 else {
            fatalError("epoll_ctl ADD: errno \(errno)")
        }
    }

    /// Everything ready, in batches, never blocking; a short batch took it all.
    private func drain() {
        while true {
            let count = mailswitch_epoll_poll(epollFD, batch, Self.batchSize)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            for index in 0..<Int(count) {
                let key = batch[index].key
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: key))
                let generation = UInt32(truncatingIfNeeded: key >> 32)
                guard Int(fd) < generations.count, generations[Int(fd)] == generation else {
                    staleEvents += 1
                    continue
                }
                var byte: UInt8 = 0
                let got = read(fd, &byte, 1)
                if got > 0 || (got < 0 && (errno == EAGAIN || errno == EINTR)) { continue }
                _ = mailswitch_epoll_ctl(epollFD, Int32(MAILSWITCH_CTL_DEL), fd, 0, 0)
                generations[Int(fd)] = 0
                close(fd)
                finished.add()
                slots.signal()
            }
            if count < Self.batchSize { return }
        }
    }
}

/// Not isolated to the main actor (top-level code is, in Swift 6): the handlers run on the
/// queues.
func race(seconds: Double) -> (pairs: Int, staleEvents: Int) {
    let finished = Finished()
    let slots = DispatchSemaphore(value: 64)
    let loops = (0..<4).map { Loop(label: "race.\($0)", finished: finished, slots: slots) }
    makePairs(for: seconds, slots: slots) { near, far, made in
        let loop = loops[made % loops.count]
        loop.queue.async { loop.register(near) }
        loop.queue.asyncAfter(deadline: .now() + .microseconds(Int.random(in: 0...200))) { close(far) }
    }
    return (finished.total, loops.reduce(0) { sum, loop in sum + loop.queue.sync { loop.staleEvents } })
}

let seconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 20 : 20
let outcome = race(seconds: seconds)
print("pairs", outcome.pairs)
print("stale_events", outcome.staleEvents)
#else
final class Pair: @unchecked Sendable {   // touched only on its queue
    let near: Int32
    let source: any DispatchSourceRead
    init(near: Int32, queue: DispatchQueue) {
        self.near = near
        source = DispatchSource.makeReadSource(fileDescriptor: near, queue: queue)
    }
}

/// Not isolated to the main actor (top-level code is, in Swift 6): the handlers run on the
/// queues.
func race(seconds: Double) -> Int {
    let queues = (0..<4).map { DispatchQueue(label: "race.\($0)") }
    let finished = Finished()
    let slots = DispatchSemaphore(value: 64)
    makePairs(for: seconds, slots: slots) { near, far, made in
        let queue = queues[made % queues.count]
        let pair = Pair(near: near, queue: queue)
        pair.source.setEventHandler {
            var byte: UInt8 = 0
            if read(pair.near, &byte, 1) <= 0 { pair.source.cancel() }
        }
        pair.source.setCancelHandler {
            close(pair.near)
            finished.add()
            slots.signal()
        }
        pair.source.activate()
        queue.asyncAfter(deadline: .now() + .microseconds(Int.random(in: 0...200))) { close(far) }
    }
    return finished.total
}

let seconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 20 : 20
print("pairs", race(seconds: seconds))
#endif
