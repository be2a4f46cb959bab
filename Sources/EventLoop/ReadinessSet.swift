#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Dispatch

/// What a registered descriptor's owner is told, on the loop's queue.
protocol ReadinessHandler: AnyObject {
    /// `events`: the kernel's epoll bits (`MAILSWITCH_READABLE`, …) for this descriptor.
    func ready(_ events: UInt32)
}

/// What a descriptor asks to hear about.
struct Interest: OptionSet {
    let rawValue: UInt8
    static let input = Interest(rawValue: 1)
    static let output = Interest(rawValue: 2)
    static let none: Interest = []
}

/// A descriptor's entry in its loop's readiness set: the number and a generation, both in
/// the key the kernel hands back with every event, so an event fetched for a descriptor that
/// was closed (and whose number a new connection got) in the same batch finds a different
/// generation and is dropped.
struct Registration {
    let fd: Int32
    let generation: UInt32
    /// In the kernel's set (added on the first interest, not at registration).
    fileprivate(set) var added = false
    fileprivate(set) var interest: Interest = .none

    var key: UInt64 { UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd)) }
}

/// One loop's epoll instance: every socket of the loop's sessions, listeners and store legs
/// is in it, and libdispatch sees only the epoll descriptor itself, through one read source
/// on the loop's queue. That source's handler fetches ready events in batches (never
/// blocking) and calls their owners inline, on the queue, so a batch of events costs one
/// Dispatch wake-up, not one each, and no source is made, suspended or cancelled per socket.
///
/// **Level-triggered**, by choice: a handler does a bounded amount of work per event (four
/// relay reads, 64 accepts) so that one busy session cannot starve the others, and whatever
/// it leaves is reported again by the next wait without a ready list of our own; and
/// back-pressure is one `epoll_ctl` that drops the input interest. A descriptor that asks
/// for nothing is set edge-triggered with no events: the kernel reports a hang-up or an
/// error whatever was asked, and level-triggered it would report it on every wait until the
/// owner looked; edge-triggered it reports it once (ignored: nobody asked), and the next
/// interest change re-checks the socket, so a hang-up is then seen as readiness and met by
/// the owner's read or write. (libdispatch's own epoll backend, which this replaces for
/// sockets, unregistered a hung-up socket's sources from a worker thread while its manager
/// thread still used them: swift-corelibs-libdispatch #949.)
///
/// `@unchecked Sendable`: every mutable field is touched only on `queue`.
final class ReadinessSet: @unchecked Sendable {
    private let epollFD: Int32
    private let queue: DispatchQueue
    private var source: (any DispatchSourceRead)?
    private struct Slot {
        var generation: UInt32 = 0
        var handler: (any ReadinessHandler)?
    }
    /// By descriptor number. Owners unregister before closing, so no entry outlives its socket.
    private var slots: [Slot] = []
    private var lastGeneration: UInt32 = 0
    private let batch: UnsafeMutablePointer<mailswitch_readiness>
    static let batchSize: Int32 = 64
    /// Batches per wake-up at most, so timers and other queued work get their turn.
    static let batchesPerWakeUp = 4

    init(queue: DispatchQueue) {
        self.queue = queue
        let epollFD = mailswitch_epoll_create()
        // Without its epoll instance a loop can do nothing; this fails only when the process
        // is out of descriptors or memory at start.
        precondition(epollFD >= 0, "epoll_create1: \(String(cString: strerror(errno)))")
        self.epollFD = epollFD
        batch = .allocate(capacity: Int(Self.batchSize))
        let source = DispatchSource.makeReadSource(fileDescriptor: epollFD, queue: queue)
        EventLoopStatistics.count(EventLoopStatistics.readSources)
        source.setEventHandler { [unowned self] in drain() }
        source.setCancelHandler { Glibc.close(epollFD) }
        self.source = source
        source.resume()
    }

    /// A loop lives as long as the process; a test's loop may not.
    deinit {
        source?.cancel()
        batch.deallocate()
    }

    /// Takes `fd`'s events for `handler`; nothing is asked of the kernel until `setInterest`.
    func register(_ fd: Int32, _ handler: any ReadinessHandler) -> Registration {
        dispatchPrecondition(condition: .onQueue(queue))
        let index = Int(fd)
        if index >= slots.count {
            slots.append(contentsOf: repeatElement(Slot(), count: max(index + 1, slots.count * 2, 256) - slots.count))
        }
        lastGeneration &+= 1
        EventLoopStatistics.count(EventLoopStatistics.registrations)
        slots[index] = Slot(generation: lastGeneration, handler: handler)
        return Registration(fd: fd, generation: lastGeneration)
    }

    /// One `epoll_ctl` when the interest changes; none when it does not.
    func setInterest(_ interest: Interest, of registration: inout Registration) throws(SystemError) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard interest != registration.interest || !registration.added else { return }
        if interest == .none && !registration.added {
            registration.interest = interest
            return
        }
        var events: UInt32 = 0
        if interest.contains(.input) { events |= UInt32(MAILSWITCH_READABLE) | UInt32(MAILSWITCH_READ_HANGUP) }
        if interest.contains(.output) { events |= UInt32(MAILSWITCH_WRITABLE) }
        if interest == .none { events = UInt32(bitPattern: Int32(truncatingIfNeeded: MAILSWITCH_EDGE)) }
        let operation = registration.added ? MAILSWITCH_CTL_MOD : MAILSWITCH_CTL_ADD
        let key = registration.key
        EventLoopStatistics.count(EventLoopStatistics.interestChanges)
        try check("epoll_ctl") { mailswitch_epoll_ctl(epollFD, Int32(operation), registration.fd, events, key) }
        registration.added = true
        registration.interest = interest
    }

    /// Forgets the descriptor; call before closing it. Taken out of the kernel's set too:
    /// closing removes it only once every copy of the descriptor is closed (epoll(7)), and a
    /// socket-activated listener has a copy in the service manager.
    func unregister(_ registration: inout Registration) {
        dispatchPrecondition(condition: .onQueue(queue))
        let index = Int(registration.fd)
        if index < slots.count, slots[index].generation == registration.generation {
            slots[index].handler = nil
        }
        if registration.added {
            EventLoopStatistics.count(EventLoopStatistics.interestChanges)
            _ = mailswitch_epoll_ctl(epollFD, Int32(MAILSWITCH_CTL_DEL), registration.fd, 0, 0)
            registration.added = false
        }
    }

    private func drain() {
        for _ in 0..<Self.batchesPerWakeUp {
            let count = mailswitch_epoll_poll(epollFD, batch, Self.batchSize)
            EventLoopStatistics.count(EventLoopStatistics.waits)
            guard count > 0 else { return }
            EventLoopStatistics.add(Int(count), to: EventLoopStatistics.events)
            for index in 0..<Int(count) {
                let event = batch[index]
                let fd = Int(UInt32(truncatingIfNeeded: event.key))
                let generation = UInt32(truncatingIfNeeded: event.key >> 32)
                guard fd < slots.count, slots[fd].generation == generation, let handler = slots[fd].handler else {
                    EventLoopStatistics.count(EventLoopStatistics.staleEvents)
                    continue
                }
                handler.ready(event.events)
            }
            // A short batch took everything that was ready; libdispatch re-arms its source
            // level-triggered, so a full one left over is announced again anyway.
            if count < Self.batchSize { return }
        }
    }
}
