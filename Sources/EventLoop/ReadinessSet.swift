#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Dispatch
import Synchronization

/// What a registered descriptor's owner is told, on the loop's queue.
protocol ReadinessHandler: AnyObject {
    /// `events`: the kernel's epoll bits (`MAILSWITCH_READABLE`, …) for this descriptor.
    func ready(_ events: UInt32)
    /// The kernel refused the descriptor's interest (out of memory, or `max_user_watches`):
    /// nothing will be reported for it.
    func refused(_ error: SystemError)
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

    var key: UInt64 { UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd)) }
}

/// One loop's epoll instance: every socket of the loop's sessions, listeners and store legs
/// is in it, and libdispatch sees only the epoll descriptor itself, through one read source
/// on the loop's queue. That source's handler fetches ready events in batches and calls
/// their owners inline, on the queue, so a batch of events costs one Dispatch wake-up, not
/// one each, and no source is made, suspended or cancelled per socket. After a batch it may
/// wait briefly for the next one on the same thread (`drain`).
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
        /// In the kernel's set (added on the first interest, not at registration).
        var added = false
        /// Another process may hold a copy of the descriptor (a socket the service manager
        /// passed): it must be taken out of the set explicitly.
        var shared = false
        /// What the kernel has, and what the owner asked for since.
        var applied = Interest.none
        var wanted = Interest.none
        var pending = false
    }
    /// By descriptor number. Owners unregister before closing, so no entry outlives its socket.
    private var slots: [Slot] = []
    private var lastGeneration: UInt32 = 0
    private let batch: UnsafeMutablePointer<mailswitch_readiness>
    static let batchSize: Int32 = 64
    /// Wakes a lingering wait (see `drain`); its events carry `wakeKey`.
    private let wakeFD: Int32
    private static let wakeKey = UInt64.max
    private let lingering = Atomic<Bool>(false)
    private let pendingExecutes = Atomic<Int>(0)
    /// False where the kernel has no epoll_pwait2: then a wake-up never waits.
    private var canLinger = true
    private var draining = false
    private var deferred: [() -> Void] = []
    /// Interest changes made during a wake-up, applied before the next wait.
    private var changed: [Registration] = []
    private var deferredScheduled = false
    private let timers: LoopTimers

    init(queue: DispatchQueue, timers: LoopTimers) {
        self.queue = queue
        self.timers = timers
        let epollFD = mailswitch_epoll_create()
        // Without its epoll instance a loop can do nothing; this fails only when the process
        // is out of descriptors or memory at start.
        precondition(epollFD >= 0, "epoll_create1: \(String(cString: strerror(errno)))")
        self.epollFD = epollFD
        let wakeFD = mailswitch_wake_create()
        precondition(wakeFD >= 0 && mailswitch_epoll_ctl(epollFD, Int32(MAILSWITCH_CTL_ADD), wakeFD,
                                                         UInt32(MAILSWITCH_READABLE), Self.wakeKey) == 0,
                     "eventfd: \(String(cString: strerror(errno)))")
        self.wakeFD = wakeFD
        batch = .allocate(capacity: Int(Self.batchSize))
        let source = DispatchSource.makeReadSource(fileDescriptor: epollFD, queue: queue)
        EventLoopStatistics.count(EventLoopStatistics.readSources)
        // Strong: a wake-up in progress keeps the set alive while its loop is let go of on
        // another thread; `stop()` breaks the cycle (a cancelled source releases its handler).
        source.setEventHandler { [self] in drain() }
        source.setCancelHandler {
            Glibc.close(epollFD)
            Glibc.close(wakeFD)
        }
        self.source = source
        source.resume()
    }

    /// A loop lives as long as the process; a test's loop may not (`EventLoop.deinit`).
    func stop() {
        source?.cancel()
    }

    deinit {
        batch.deallocate()
    }

    /// Takes `fd`'s events for `handler`; nothing is asked of the kernel until `setInterest`.
    /// `shared`: the descriptor may have copies in other processes (see `unregister`).
    func register(_ fd: Int32, _ handler: any ReadinessHandler, shared: Bool = false) -> Registration {
        dispatchPrecondition(condition: .onQueue(queue))
        let index = Int(fd)
        if index >= slots.count {
            slots.append(contentsOf: repeatElement(Slot(), count: max(index + 1, slots.count * 2, 256) - slots.count))
        }
        lastGeneration &+= 1
        EventLoopStatistics.count(EventLoopStatistics.registrations)
        slots[index] = Slot(generation: lastGeneration, handler: handler, shared: shared)
        return Registration(fd: fd, generation: lastGeneration)
    }

    /// Inside a wake-up the change is kept until the handlers of the batch have run, so a
    /// session that turns input off and on again in one turn (a store's login handed to the
    /// relay) costs no system call; otherwise it is made at once. One `epoll_ctl` per change
    /// that reaches the kernel.
    func setInterest(_ interest: Interest, of registration: Registration) {
        dispatchPrecondition(condition: .onQueue(queue))
        let index = Int(registration.fd)
        guard index < slots.count, slots[index].generation == registration.generation, slots[index].handler != nil else { return }
        slots[index].wanted = interest
        if draining {
            if !slots[index].pending {
                slots[index].pending = true
                changed.append(registration)
            }
        } else {
            apply(index)
        }
    }

    private func applyChanges() {
        guard !changed.isEmpty else { return }
        let registrations = changed
        changed.removeAll(keepingCapacity: true)
        for registration in registrations {
            let index = Int(registration.fd)
            guard slots[index].generation == registration.generation, slots[index].handler != nil else { continue }
            slots[index].pending = false
            apply(index)
        }
    }

    private func apply(_ index: Int) {
        let slot = slots[index]
        // Not yet in the kernel's set means nothing applied: asking nothing then costs nothing.
        guard slot.wanted != slot.applied else { return }
        var events: UInt32 = 0
        if slot.wanted.contains(.input) { events |= UInt32(MAILSWITCH_READABLE) | UInt32(MAILSWITCH_READ_HANGUP) }
        if slot.wanted.contains(.output) { events |= UInt32(MAILSWITCH_WRITABLE) }
        if slot.wanted == .none { events = UInt32(bitPattern: Int32(truncatingIfNeeded: MAILSWITCH_EDGE)) }
        let operation = slot.added ? MAILSWITCH_CTL_MOD : MAILSWITCH_CTL_ADD
        let key = Registration(fd: Int32(index), generation: slot.generation).key
        EventLoopStatistics.count(EventLoopStatistics.interestChanges)
        do throws(SystemError) {
            try check("epoll_ctl") { mailswitch_epoll_ctl(epollFD, Int32(operation), Int32(index), events, key) }
            slots[index].added = true
            slots[index].applied = slot.wanted
        } catch {
            slot.handler?.refused(error)
        }
    }

    /// Forgets the descriptor; call just before closing it. The kernel drops a descriptor
    /// from every epoll set when its last copy is closed (epoll(7)): a connection's socket
    /// has no other copy, so its close is enough; a shared one is taken out explicitly.
    func unregister(_ registration: Registration) {
        dispatchPrecondition(condition: .onQueue(queue))
        let index = Int(registration.fd)
        guard index < slots.count, slots[index].generation == registration.generation else { return }
        let slot = slots[index]
        slots[index] = Slot(generation: slot.generation)
        if slot.added && slot.shared {
            EventLoopStatistics.count(EventLoopStatistics.interestChanges)
            _ = mailswitch_epoll_ctl(epollFD, Int32(MAILSWITCH_CTL_DEL), registration.fd, 0, 0)
        }
    }

    // MARK: - Draining, and lingering for the next event

    /// How long a wake-up that found work waits for the next event before handing the thread
    /// back to libdispatch, and how long one wake-up may keep it in all.
    static let lingerNanoseconds = 250_000
    static let turnNanoseconds: UInt64 = 2_000_000

    private func drain() {
        draining = true
        defer {
            applyChanges()
            draining = false
            if !deferred.isEmpty { scheduleDeferred() }
        }
        let start = DispatchTime.now().uptimeNanoseconds
        var linger = 0
        while true {
            runDeferred()
            applyChanges()
            let count = wait(linger)
            guard count > 0 else { return }
            EventLoopStatistics.add(Int(count), to: EventLoopStatistics.events)
            for index in 0..<Int(count) {
                let event = batch[index]
                if event.key == Self.wakeKey {
                    mailswitch_wake_reset(wakeFD)
                    continue
                }
                let fd = Int(UInt32(truncatingIfNeeded: event.key))
                let generation = UInt32(truncatingIfNeeded: event.key >> 32)
                guard fd < slots.count, slots[fd].generation == generation, let handler = slots[fd].handler else {
                    EventLoopStatistics.count(EventLoopStatistics.staleEvents)
                    continue
                }
                handler.ready(event.events)
            }
            // A full batch: more is waiting now. A short one: everything ready was taken, and
            // the next event (the peer's answer, usually) is worth a short wait on this thread,
            // which the kernel wakes directly, instead of libdispatch's manager thread waking
            // and handing over to a worker. The turn ends after `turnNanoseconds`: timers and
            // work from other queues wait behind it, and libdispatch's source, re-armed
            // level-triggered, calls again for whatever is left.
            let now = DispatchTime.now().uptimeNanoseconds
            guard now &- start < Self.turnNanoseconds else { return }
            linger = count == Self.batchSize ? 0 : lingerAllowed(now: now)
            if linger == 0 && count < Self.batchSize { return }
        }
    }

    /// One wait on the set: immediate, or up to `nanoseconds` unless work for the loop is
    /// already queued (an `execute` from another queue pokes the wake descriptor meanwhile).
    private func wait(_ nanoseconds: Int) -> Int32 {
        EventLoopStatistics.count(EventLoopStatistics.waits)
        guard nanoseconds > 0 else { return mailswitch_epoll_poll(epollFD, batch, Self.batchSize) }
        lingering.store(true, ordering: .sequentiallyConsistent)
        defer { lingering.store(false, ordering: .sequentiallyConsistent) }
        guard pendingExecutes.load(ordering: .sequentiallyConsistent) == 0 else {
            return mailswitch_epoll_poll(epollFD, batch, Self.batchSize)
        }
        EventLoopStatistics.count(EventLoopStatistics.lingers)
        let count = mailswitch_epoll_wait_for(epollFD, batch, Self.batchSize, nanoseconds)
        if count < 0 && errno == ENOSYS { canLinger = false }
        return count
    }

    /// How long the loop may wait for its next event on this thread: not past its next timer,
    /// and not at all while on-loop work is deferred.
    private func lingerAllowed(now: UInt64) -> Int {
        guard canLinger, deferred.isEmpty else { return 0 }
        let untilTimer = timers.nextDeadline &- now
        guard timers.nextDeadline > now else { return 0 }
        return Int(min(UInt64(Self.lingerNanoseconds), untilTimer))
    }

    // MARK: - Work for the loop from elsewhere

    /// Counts an `execute` block queued for the loop and not yet started: a lingering wait is
    /// cut short for it (Dekker-style: the block is counted before the loop checks, or the
    /// loop is seen lingering and poked).
    func executeQueued() {
        pendingExecutes.add(1, ordering: .sequentiallyConsistent)
    }

    func executeStarted() {
        pendingExecutes.subtract(1, ordering: .sequentiallyConsistent)
    }

    func wakeIfLingering() {
        if lingering.load(ordering: .sequentiallyConsistent) { mailswitch_wake_poke(wakeFD) }
    }

    /// Runs `work` on a later turn of this loop, before it waits again (a TLS connection's
    /// buffered input, which the socket no longer signals). Call on the loop.
    func later(_ work: @escaping () -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        deferred.append(work)
        if !draining { scheduleDeferred() }
    }

    private func scheduleDeferred() {
        guard !deferredScheduled else { return }
        deferredScheduled = true
        queue.async { [self] in
            deferredScheduled = false
            runDeferred()
        }
    }

    private func runDeferred() {
        guard !deferred.isEmpty else { return }
        let work = deferred
        deferred = []
        work.forEach { $0() }
    }
}
