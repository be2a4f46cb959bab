import Synchronization

/// How much work the loops ask of libdispatch since start: every source made (each is
/// registered with, and later cancelled through, libdispatch's manager thread, which wakes
/// for it) and every suspend and resume of a read or write source. The performance breakdown
/// (`scripts/bench profile`) divides these by the logins of a run; `mailswitch status` shows
/// them. Relaxed atomic increments: nothing on the hot path waits for them.
public enum EventLoopStatistics {
    static let readSources = Atomic<Int>(0)
    static let writeSources = Atomic<Int>(0)
    static let timerSources = Atomic<Int>(0)
    static let suspends = Atomic<Int>(0)
    static let resumes = Atomic<Int>(0)

    @inline(__always) static func count(_ counter: borrowing Atomic<Int>) {
        counter.add(1, ordering: .relaxed)
    }

    public static var snapshot: [String: Int] {
        ["read_sources": readSources.load(ordering: .relaxed), "write_sources": writeSources.load(ordering: .relaxed),
         "timer_sources": timerSources.load(ordering: .relaxed), "suspends": suspends.load(ordering: .relaxed),
         "resumes": resumes.load(ordering: .relaxed)]
    }
}
