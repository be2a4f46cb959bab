import Configuration
import Dispatch
import Directory
import Logging
import Routing

/// Makes open sessions follow the directory: it hears of changes (the RFC 4533 feed, or by
/// looking the users with sessions up again in poll mode), invalidates the route cache, asks
/// the directory for the users concerned, and ends the sessions whose route is no longer the
/// one they logged in with — paced, so a batch of moves never becomes a reconnect storm.
///
/// `@unchecked Sendable`: every mutable member is confined to `queue`.
final class RouteWatcher: @unchecked Sendable {
    typealias Due = (session: SessionRegistry.Session, reason: SessionEndReason, message: String?)

    private let queue = DispatchQueue(label: "mailswitch.moves")
    private let router: Router
    private let registry: SessionRegistry
    private let holds: HoldBook
    private let logger: Logger
    /// The configuration new decisions are made with (it changes on reload).
    private let current: @Sendable () -> ServiceConfiguration
    /// An entry changed: anything else kept about it (an accepted password) is dropped.
    private let entryChanged: @Sendable (String) -> Void
    private var directoryConfiguration: DirectoryConfiguration
    /// Events of a feed replaced by a reload are ignored.
    private var feedGeneration = 0

    private var pacer: DisconnectPacer<Due>
    private var pacerTimer: (any DispatchSourceTimer)?
    private var feed: SyncReplFeed?
    private var pollTimer: (any DispatchSourceTimer)?
    private var housekeeping: (any DispatchSourceTimer)?
    /// Users waiting for a recheck, and how many rechecks are out (bounded, so a poll of
    /// 80,000 users never floods the directory's queue).
    private var recheckQueue: [(key: String, user: String)] = []
    private var queuedKeys: Set<String> = []
    private var rechecksOut = 0
    private let maxRechecksOut = 50
    private(set) var feedState = "off" { didSet { ProxyMetrics.changeFeed(state: feedState) } }
    private(set) var changesSeen = 0

    init(router: Router, registry: SessionRegistry, holds: HoldBook, configuration: ServiceConfiguration,
         logger: Logger, current: @escaping @Sendable () -> ServiceConfiguration,
         entryChanged: @escaping @Sendable (String) -> Void = { _ in }) {
        self.entryChanged = entryChanged
        self.router = router
        self.registry = registry
        self.holds = holds
        self.logger = logger
        self.current = current
        directoryConfiguration = configuration.directory
        pacer = DisconnectPacer(burst: configuration.disconnects.burst, window: configuration.disconnects.maxDelaySeconds)
    }

    /// Starts following the directory the configured way (`directory.change_feed`).
    func start() {
        queue.async { [self] in
            follow()
            let timer = DispatchSource.makeTimerSource(queue: queue)
            timer.schedule(deadline: .now() + 60, repeating: 60)
            timer.setEventHandler { [router] in router.purge() }
            timer.resume()
            housekeeping = timer
        }
    }

    /// A reload changed the directory settings: the old feed (or polling) stops, a new one starts.
    func restart(_ configuration: DirectoryConfiguration) {
        queue.async { [self] in
            feed?.stop()
            feed = nil
            pollTimer?.cancel()
            pollTimer = nil
            directoryConfiguration = configuration
            follow()
        }
    }

    private func follow() {
        feedGeneration += 1
        let generation = feedGeneration
        switch directoryConfiguration.changeFeed {
        case .off:
            feedState = "off"
        case .poll:
            startPolling(reason: "configured")
        case .sync, .auto:
            feedState = "sync: connecting"
            let feed = SyncReplFeed(configuration: directoryConfiguration,
                                    loginAttributes: LDAPFilter.loginAttributes(directoryConfiguration.filter),
                                    replica: router.replica) { [weak self] event in
                guard let self else { return }
                self.queue.async {
                    guard generation == self.feedGeneration else { return }
                    self.feedEvent(event)
                }
            }
            self.feed = feed
            feed.start()
        }
    }

    /// A snapshot for `mailswitch status`, taken on the watcher's queue.
    func state(_ completion: @escaping @Sendable (_ feed: String, _ changes: Int) -> Void) {
        queue.async { [self] in completion(feedState, changesSeen) }
    }

    // MARK: - Hearing of changes

    private func feedEvent(_ event: ChangeFeedEvent) {
        switch event {
        case .changed(let change):
            changesSeen += 1
            ProxyMetrics.changeSeen()
            changed(change)
        case .synchronized(let server, let resumed):
            feedState = "sync: following \(server)"
            logger.notice("change feed synchronized with \(server)\(resumed ? " (resumed)" : "")")
            if let entries = router.replica?.entryCount {
                logger.notice("directory replica: \(entries) entries from \(server); logins are answered from memory")
            }
            // Anything cached may predate what the feed missed while it was away; after a
            // reconnect, deletions may not have been named either: ask again for everyone.
            router.invalidateAll()
            if resumed { recheckAll() }
        case .disconnected(let reason):
            feedState = "sync: disconnected (\(reason))"
            logger.warning("change feed disconnected: \(reason); retrying")
        case .unsupported(let reason):
            feed = nil
            if router.replica != nil {
                logger.error("directory.replica needs the RFC 4533 feed, which the directory does not offer: logins ask LDAP")
            }
            if directoryConfiguration.changeFeed == .auto {
                logger.notice("the directory offers no RFC 4533 sync (\(reason)): polling every \(directoryConfiguration.recheckIntervalSeconds)s")
                startPolling(reason: "no RFC 4533 on the server")
            } else {
                feedState = "sync: unsupported (\(reason))"
                logger.error("change_feed: sync, but the directory offers no RFC 4533 sync: \(reason)")
            }
        }
    }

    private func changed(_ change: DirectoryChange) {
        entryChanged(change.dn)
        var keys = router.invalidate(dn: change.dn)
        keys.formUnion(registry.userKeys(ofEntry: change.dn))
        for value in change.loginValues {
            let key = UserKey.of(value)
            router.invalidate(userKey: key)
            keys.insert(key)
        }
        logger.debug("directory \(change.kind.rawValue): \(LogText.escaped(change.dn))")
        for key in keys {
            if let user = registry.loginName(userKey: key) { enqueueRecheck(key: key, user: user) }
        }
    }

    private func startPolling(reason: String) {
        feedState = "poll: every \(directoryConfiguration.recheckIntervalSeconds)s (\(reason))"
        let timer = DispatchSource.makeTimerSource(queue: queue)
        let interval = directoryConfiguration.recheckIntervalSeconds
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in self?.recheckAll() }
        timer.resume()
        pollTimer = timer
    }

    /// Looks the user up again and ends sessions that no longer match (after a release).
    func recheck(user: String) {
        queue.async { [self] in enqueueRecheck(key: UserKey.of(user), user: user) }
    }

    private func recheckAll() {
        for (key, user) in registry.users() { enqueueRecheck(key: key, user: user) }
    }

    // MARK: - Rechecking users

    private func enqueueRecheck(key: String, user: String) {
        guard !queuedKeys.contains(key) else { return }
        queuedKeys.insert(key)
        recheckQueue.append((key, user))
        startRechecks()
    }

    private func startRechecks() {
        while rechecksOut < maxRechecksOut, !recheckQueue.isEmpty {
            let (key, user) = recheckQueue.removeFirst()
            queuedKeys.remove(key)
            rechecksOut += 1
            recheck(key: key, user: user, attempt: 0)
        }
    }

    private func recheck(key: String, user: String, attempt: Int) {
        router.routeFresh(user) { [self] answer in
            queue.async { [self] in
                rechecksOut -= 1
                reconcile(key: key, user: user, answer: answer, attempt: attempt)
                startRechecks()
            }
        }
    }

    private func retry(key: String, user: String, attempt: Int) {
        guard attempt < 30 else {
            logger.warning("could not recheck the route of \(LogText.escaped(user)): the directory does not answer")
            return
        }
        queue.asyncAfter(deadline: .now() + 1) { [self] in
            guard registry.hasSessions(userKey: key) else { return }
            rechecksOut += 1
            recheck(key: key, user: user, attempt: attempt + 1)
        }
    }

    /// Ends the user's sessions whose route is not the one the directory gives now. An
    /// answer the directory did not give just now (it failed, and a cached one stood in) says
    /// nothing about a change: ask again a little later, a bounded number of times.
    private func reconcile(key: String, user: String, answer: Router.Answer, attempt: Int) {
        if case .stale = answer.source { return retry(key: key, user: user, attempt: attempt) }
        if case .unavailable = answer.result { return retry(key: key, user: user, attempt: attempt) }
        let configuration = current()
        var due: [Due] = []
        for session in registry.sessions(ofUser: key) {
            guard let was = session.entry.target, let service = MailService(rawValue: session.entry.service) else { continue }
            let hold = holds.hold(for: key, entry: answer.result.dn)
            let decision = configuration.routing.decide(answer.result, service: service, hold: hold?.operatorHold)
            guard let now = decision.target, now != was else { continue }
            switch decision {
            case .held(let message, _), .readOnly(_, _, let message, _):
                due.append((session, .hold, message))
            default:
                due.append((session, .routeChange, nil))
            }
            logger.info("route of \(LogText.escaped(session.entry.user ?? key)) changed: \(was) -> \(now)",
                        metadata: ["session": "\(session.entry.id)"])
        }
        end(due, paced: true)
    }

    // MARK: - Ending sessions

    /// Ends sessions now, or paced by `routing.disconnect_burst` / `max_disconnect_delay`.
    func end(_ due: [Due], paced: Bool) {
        guard !due.isEmpty else { return }
        queue.async { [self] in
            guard paced else {
                for item in due { item.session.control.end(item.reason, message: item.message) }
                return
            }
            let now = Router.now()
            let wasSpreading = pacer.waiting > 0
            let immediate = pacer.add(due, now: now)
            for item in immediate { item.session.control.end(item.reason, message: item.message) }
            if !wasSpreading && pacer.waiting > 0 {
                logger.notice("more than \(pacer.burst) sessions to end: the rest are spread over \(pacer.window)s")
            }
            armPacer()
        }
    }

    private func armPacer() {
        pacerTimer?.cancel()
        pacerTimer = nil
        guard let wakeUp = pacer.nextWakeUp(now: Router.now()) else { return }
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + max(0, wakeUp - Router.now()))
        timer.setEventHandler { [weak self] in self?.pacerFired() }
        timer.resume()
        pacerTimer = timer
    }

    private func pacerFired() {
        let now = Router.now()
        for item in pacer.due(now: now) { item.session.control.end(item.reason, message: item.message) }
        if let episode = pacer.finishEpisode(now: now), episode.spread > 0 {
            logger.notice("route changes: ended \(episode.ended) sessions over \((episode.seconds * 100).rounded() / 100)s (\(episode.ended - episode.spread) at once, \(episode.spread) spread)")
        }
        armPacer()
    }
}
