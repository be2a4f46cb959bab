import Dispatch
import Directory
import Routing
import Synchronization

/// The directory behind the route cache: logins ask here. A fresh cached answer comes back
/// at once, on the caller's own loop, with no hop to another queue; a miss asks the directory
/// once per user however many logins wait for it; while the directory is down, answers up to
/// `stale_ttl` old stand in.
public final class Router: Sendable {
    public typealias Answer = RouteAnswer

    public typealias Completion = @Sendable (Answer) -> Void

    private let cache: Mutex<RouteCache<Completion>>
    /// Replaced when a reload changes the directory settings.
    private let directory: Mutex<any Directory>
    /// Lookups, hits and stale answers since start (for `mailswitch status` and the bench).
    private let counters = Mutex((hits: 0, misses: 0, stale: 0))

    public init(directory: any Directory, settings: RouteCacheSettings) {
        self.directory = Mutex(directory)
        cache = Mutex(RouteCache(settings: settings))
    }

    /// Monotonic seconds: cache ages must not jump with the wall clock.
    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Returns the answer when the cache has it (and `completion` is not called); otherwise
    /// `completion` runs later, on any queue.
    public func route(_ user: String, completion: @escaping Completion) -> Answer? {
        let key = UserKey.of(user)
        let step = cache.withLock { $0.lookup(key, now: Self.now(), waiter: completion) }
        switch step {
        case .answer(let result, let source):
            counters.withLock { $0.hits += 1 }
            ProxyMetrics.routeLookup(.hit)
            return Answer(result: result, source: source)
        case .wait:
            counters.withLock { $0.misses += 1 }
            ProxyMetrics.routeLookup(.miss)
            return nil
        case .search(let generation):
            counters.withLock { $0.misses += 1 }
            ProxyMetrics.routeLookup(.miss)
            search(user, key: key, generation: generation)
            return nil
        }
    }

    /// Asks the directory even when the cache has an answer (after a change).
    public func routeFresh(_ user: String, completion: @escaping Completion) {
        invalidate(userKey: UserKey.of(user))
        if let answer = route(user, completion: completion) { completion(answer) }
    }

    private func search(_ user: String, key: String, generation: Int) {
        directory.withLock { $0 }.lookup(user) { [self] result in
            let next = cache.withLock { $0.complete(key, generation: generation, result: result, now: Self.now()) }
            switch next {
            case .searchAgain(let generation):
                search(user, key: key, generation: generation)
            case .deliver(let result, let source, let waiters):
                if case .stale = source { counters.withLock { $0.stale += 1 }; ProxyMetrics.routeLookup(.stale) }
                let answer = Answer(result: result, source: source)
                for waiter in waiters { waiter(answer) }
            }
        }
    }

    public func invalidate(userKey: String) {
        cache.withLock { $0.invalidate(userKey) }
    }

    /// Returns the keys of the users whose cached answer named the entry.
    public func invalidate(dn: String) -> Set<String> {
        cache.withLock { $0.invalidate(dn: dn) }
    }

    /// A new directory connection (reload): cached answers came from the old one.
    /// The replica the change feed keeps, when logins are answered from one.
    public var replica: ReplicaDirectory? { directory.withLock { $0 as? ReplicaDirectory } }

    public func replaceDirectory(_ replacement: any Directory) {
        directory.withLock { $0 = replacement }
        invalidateAll()
    }

    public func invalidateAll() {
        cache.withLock { $0.invalidateAll() }
    }

    public func isCached(userKey: String) -> Bool {
        cache.withLock { $0.contains(userKey) }
    }

    /// The cached answer and its age, fresh or not.
    public func peek(_ user: String) -> (result: DirectoryResult, age: Double, fresh: Bool)? {
        cache.withLock { cache in
            let now = Self.now()
            return cache.peek(UserKey.of(user), now: now).map { ($0.entry.result, now - $0.entry.storedAt, $0.fresh) }
        }
    }

    public func purge() {
        cache.withLock { $0.purge(now: Self.now()) }
    }

    public var statistics: (entries: Int, hits: Int, misses: Int, stale: Int) {
        let entries = cache.withLock { $0.count }
        let counts = counters.withLock { $0 }
        return (entries, counts.hits, counts.misses, counts.stale)
    }
}
