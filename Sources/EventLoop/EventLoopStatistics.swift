import Synchronization

/// What the loops have done since start: their waits on their epoll sets and the events each
/// brought, every change of a descriptor's interest (each one `epoll_ctl`), events dropped
/// because their descriptor had been closed in the same batch, descriptors registered, and
/// the Dispatch sources made (one read source and one timer source per loop; a socket never
/// gets one). The performance breakdown (`scripts/bench profile`) divides these by the logins
/// of a run; `mailswitch status` shows them. Relaxed atomic increments: nothing on the hot
/// path waits for them.
public enum EventLoopStatistics {
    static let waits = Atomic<Int>(0)
    static let lingers = Atomic<Int>(0)
    static let events = Atomic<Int>(0)
    static let interestChanges = Atomic<Int>(0)
    static let staleEvents = Atomic<Int>(0)
    static let registrations = Atomic<Int>(0)
    static let readSources = Atomic<Int>(0)
    static let timerSources = Atomic<Int>(0)

    @inline(__always) static func count(_ counter: borrowing Atomic<Int>) {
        counter.add(1, ordering: .relaxed)
    }

    @inline(__always) static func add(_ value: Int, to counter: borrowing Atomic<Int>) {
        counter.add(value, ordering: .relaxed)
    }

    public static var snapshot: [String: Int] {
        ["epoll_waits": waits.load(ordering: .relaxed), "lingering_waits": lingers.load(ordering: .relaxed), "events": events.load(ordering: .relaxed),
         "interest_changes": interestChanges.load(ordering: .relaxed),
         "stale_events": staleEvents.load(ordering: .relaxed),
         "registrations": registrations.load(ordering: .relaxed),
         "read_sources": readSources.load(ordering: .relaxed), "timer_sources": timerSources.load(ordering: .relaxed)]
    }
}
