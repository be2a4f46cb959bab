/// Spreads the ending of sessions so that a batch of moves does not send every client of a
/// store back at once (a reconnect storm on the new store, thousands of LDAP lookups).
///
/// An episode starts with the first session due to end: up to `burst` sessions end at once;
/// the rest wait and are released evenly so that the last one ends `window` seconds after the
/// episode began. Sessions that become due while an episode runs join its queue (and its
/// deadline), so thousands of changes arriving one by one from the feed are paced as one batch.
/// Time is passed in; the driver arms one timer for `nextRelease`.
public struct DisconnectPacer<Item> {
    public let burst: Int
    public let window: Double

    private var episodeStart: Double?
    private var endedAtOnce = 0
    private var queue: [Item] = []
    private var head = 0
    private var lastRelease = 0.0
    /// For the log line at the end of an episode.
    public private(set) var episodeTotal = 0

    public init(burst: Int, window: Double) {
        self.burst = max(1, burst)
        self.window = max(0, window)
    }

    public var waiting: Int { queue.count - head }

    /// Items now due; returns those to end at once.
    public mutating func add(_ items: [Item], now: Double) -> [Item] {
        guard !items.isEmpty else { return [] }
        if episodeStart == nil {
            episodeStart = now
            endedAtOnce = 0
            episodeTotal = 0
            lastRelease = now
        }
        episodeTotal += items.count
        let immediate = min(items.count, max(0, burst - endedAtOnce), waiting == 0 ? items.count : 0)
        endedAtOnce += immediate
        queue.append(contentsOf: items[immediate...])
        return Array(items[..<immediate])
    }

    /// When the next queued item is due, or nil when none waits.
    public func nextRelease(now: Double) -> Double? {
        guard waiting > 0, let start = episodeStart else { return nil }
        let deadline = max(start + window, now)
        // Evenly over what is left of the window, counting from the last release.
        return lastRelease + max(0, deadline - lastRelease) / Double(waiting)
    }

    /// Items due by `now`.
    public mutating func due(now: Double) -> [Item] {
        var released: [Item] = []
        while let next = nextRelease(now: now), next <= now {
            released.append(queue[head])
            head += 1
            lastRelease = next
        }
        if waiting == 0 {
            queue = []
            head = 0
        } else if head > 1024 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return released
    }

    /// When the driver should next call `due` / `finishEpisode`: the next release, or the end
    /// of the episode's window.
    public func nextWakeUp(now: Double) -> Double? {
        if let next = nextRelease(now: now) { return next }
        return episodeStart.map { $0 + window }
    }

    /// Ends the episode once nothing waits and its window has passed, so the next batch gets
    /// a burst of its own. Returns how many sessions it ended, how many of them were spread,
    /// and the seconds from its start to its last release, for the log.
    public mutating func finishEpisode(now: Double) -> (ended: Int, spread: Int, seconds: Double)? {
        guard let start = episodeStart, waiting == 0, now >= start + window else { return nil }
        let summary = (episodeTotal, episodeTotal - endedAtOnce, lastRelease - start)
        episodeStart = nil
        return summary
    }
}
