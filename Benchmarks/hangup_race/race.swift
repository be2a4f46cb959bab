// The libdispatch hang-up race, alone: socket pairs whose far end closes while a read source
// watches the near end (EPOLLHUP), the source cancelled from its handler, the near end
// closed in the cancel handler. Four serial queues, at most 64 pairs at a time, for the given
// seconds. Built twice by Benchmarks/hangup_race.py: as is, and with mailswitch's epoll_wait
// (Sources/CSystemShims/epoll_hangup.c) linked in.
//   race SECONDS        prints "pairs N" and exits 0, unless libdispatch crashes first
import Dispatch
import Glibc

final class Pair: @unchecked Sendable {   // touched only on its queue
    let near: Int32
    let source: any DispatchSourceRead
    init(near: Int32, queue: DispatchQueue) {
        self.near = near
        source = DispatchSource.makeReadSource(fileDescriptor: near, queue: queue)
    }
}

final class Finished: @unchecked Sendable {   // guarded by `lock`
    private var lock = pthread_mutex_t()
    private var count = 0
    init() { pthread_mutex_init(&lock, nil) }
    func add() { pthread_mutex_lock(&lock); count += 1; pthread_mutex_unlock(&lock) }
    var total: Int { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return count }
}

/// Not isolated to the main actor (top-level code is, in Swift 6): the handlers run on the
/// queues.
func race(seconds: Double) -> Int {
    let queues = (0..<4).map { DispatchQueue(label: "race.\($0)") }
    let finished = Finished()
    let slots = DispatchSemaphore(value: 64)
    let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
    var made = 0
    while DispatchTime.now().uptimeNanoseconds < end {
        slots.wait()
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else {
            fatalError("socketpair: errno \(errno)")
        }
        let queue = queues[made % queues.count]
        made += 1
        let pair = Pair(near: fds[0], queue: queue)
        let far = fds[1]
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
    for _ in 0..<64 { slots.wait() }
    // Dispatch refuses to free a semaphore below its initial value.
    for _ in 0..<64 { slots.signal() }
    return finished.total
}

let seconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 20 : 20
print("pairs", race(seconds: seconds))
