import Configuration
import Dispatch
import EventLoop
import Routing
import Synchronization

/// Looks users up in LDAP with libldap's asynchronous API: searches are sent without waiting,
/// the connection's descriptor sits in a DispatchSource, and results are collected with a
/// zero-timeout `ldap_result` when it becomes readable. Nothing here runs on the event loops,
/// and nothing blocks the directory's queue: connecting runs on a queue of its own and the
/// bind is collected like a search (see `LDAPConnection`).
///
/// Failover: `directory.uris` are tried in configuration order. A server that cannot be
/// connected or bound is skipped with back-off (`LDAPServerHealth`, shared with the change
/// feed). While no connection is bound, lookups queue (bounded) and go out when one is;
/// when a server has not bound within a quarter of a second, the next one is tried alongside
/// it, so a hung server delays the first login by that much, not by `timeout`. With every
/// server skipped, lookups fail at once as unavailable (the router then serves cached routes).
/// Lookups on a less preferred server move back to a more preferred one in the background:
/// when its back-off runs out it is tried again, and once it binds new searches go to it
/// while the old connection finishes its own and closes.
///
/// `@unchecked Sendable`: every member is touched only on `queue` (asserted), except
/// `published`, a mutex, and the constants.
public final class LDAPDirectory: Directory, @unchecked Sendable {
    /// How long one server may take to bind before the next is tried too (RFC 8305's
    /// connection attempt delay: binding on a LAN takes milliseconds).
    static let attemptDelaySeconds = 0.25

    private let configuration: DirectoryConfiguration
    private let health: LDAPServerHealth
    private let queue = DispatchQueue(label: "mailswitch.ldap")
    /// Bound, binding and retiring connections; at most one per server.
    private var connections: [LDAPConnection] = []
    /// The bound connection new searches go to.
    private var current: LDAPConnection?
    /// Lookups waiting for a connection, or for a free slot on it (`max_in_flight`).
    private var waiting: [LDAPLookup] = []
    private var lastAttemptAt = -Double.infinity
    /// The next time something is due: trying the next server, or one whose back-off runs out.
    private var wakeUp: OneShotTimer?
    private var wakeUpAt = Double.infinity
    /// `current`'s server, for readers on any thread.
    private let published = Mutex<String?>(nil)

    public init(configuration: DirectoryConfiguration, health: LDAPServerHealth = .shared) {
        self.configuration = configuration
        self.health = health
        // Connect before the first login needs it.
        queue.async { [self] in reconcile() }
    }

    deinit {
        // Replaced by a reload, with nothing waiting or in flight (every lookup holds the
        // directory until it is answered): the connections only have to close.
        let connections = connections
        wakeUp?.cancel()
        health.forget(owner: ObjectIdentifier(self))
        queue.async {
            for connection in connections { connection.close() }
        }
    }

    // MARK: - Status

    /// The server lookups go to now; nil while none is bound (connecting, or every server
    /// down). Any thread.
    public var currentServer: String? { published.withLock { $0 } }

    /// Every configured server, in the order they are tried, with what is known of it (in use,
    /// up, down and why, when it is tried again). Any thread.
    public var servers: [LDAPServerStatus] {
        let inUse = currentServer
        return health.statuses(of: configuration.uris).map { status in
            var status = status
            status.inUse = status.server == inUse
            return status
        }
    }

    // MARK: - Lookups

    public func lookup(_ user: String, completion: @escaping @Sendable (DirectoryResult) -> Void) {
        queue.async { [self] in
            // The lookup holds the directory until it is answered, so a reload that replaces
            // this directory never strands a search on its connections.
            let lookup = LDAPLookup(user: user, completion: { result in withExtendedLifetime(self) { completion(result) } })
            if let current, waiting.isEmpty, current.inFlight < configuration.maxInFlight {
                send(lookup, on: current)
                return
            }
            // slapd defers and then drops a connection flooded with requests: queue, bounded.
            guard waiting.count < configuration.maxInFlight * 10 else {
                completion(.unavailable(reason: "too many directory requests waiting"))
                return
            }
            waiting.append(lookup)
            if current == nil { reconcile() }
        }
    }

    private func send(_ lookup: LDAPLookup, on connection: LDAPConnection) {
        switch connection.search(lookup) {
        case .sent:
            break
        case .connectionDown(let reason):
            // The server went away since the last answer (a restart, say): a fresh connection,
            // to it or the next server, answers at once.
            lose(connection, reason: reason, hung: false, outstanding: connection.close() + [lookup])
        }
    }

    /// Sends waiting lookups while the current connection has room.
    private func drain() {
        while let current, current.inFlight < configuration.maxInFlight, !waiting.isEmpty {
            send(waiting.removeFirst(), on: current)
        }
    }

    /// No server can be tried now: waiting lookups fail at once instead of waiting.
    private func failWaiting() {
        guard !waiting.isEmpty else { return }
        let why = servers.map(\.description).joined(separator: "; ")
        let failed = waiting
        waiting = []
        for lookup in failed { lookup.completion(.unavailable(reason: "no directory server can be used: \(why)")) }
    }

    // MARK: - Connections

    private func rank(_ uri: String) -> Int { configuration.uris.firstIndex(of: uri) ?? Int.max }

    /// Starts what is due: with no bound connection, the first usable server (then the next
    /// one every `attemptDelaySeconds` while none binds); with one, any more preferred server
    /// whose back-off ran out. Fails the waiting lookups when nothing can be tried.
    private func reconcile() {
        dispatchPrecondition(condition: .onQueue(queue))
        let now = LDAPServerHealth.now()
        let busy = Set(connections.map(\.uri))
        let usable = health.usable(configuration.uris, now: now).filter { !busy.contains($0) }
        if let current {
            for uri in usable where rank(uri) < rank(current.uri) { start(uri, now: now) }
            drain()
        } else {
            let attempting = connections.contains { !$0.isReady && !$0.retiring }
            if let next = usable.first, !attempting || now - lastAttemptAt >= Self.attemptDelaySeconds - 0.001 {
                start(next, now: now)
            }
            if !connections.contains(where: { !$0.isReady && !$0.retiring }) { failWaiting() }
        }
        scheduleWakeUp(now: now)
    }

    private func start(_ uri: String, now: Double) {
        let connection = LDAPConnection(uri: uri, startedAt: now, configuration: configuration, queue: queue) { [weak self] connection, event in
            self?.handle(event, from: connection)
        }
        connections.append(connection)
        lastAttemptAt = now
        connection.open()
    }

    private func scheduleWakeUp(now: Double) {
        var due = Double.infinity
        let idle = configuration.uris.filter { uri in !connections.contains { $0.uri == uri } }
        if let current {
            // The way back to a more preferred server.
            if let retry = health.nextRetry(idle.filter { rank($0) < rank(current.uri) }, now: now) { due = retry }
        } else {
            if connections.contains(where: { !$0.isReady && !$0.retiring }),
               !health.usable(idle, now: now).isEmpty {
                due = lastAttemptAt + Self.attemptDelaySeconds
            }
            if let retry = health.nextRetry(idle, now: now) { due = min(due, retry) }
        }
        guard due != wakeUpAt else { return }
        wakeUp?.cancel()
        wakeUp = nil
        wakeUpAt = due
        guard due.isFinite else { return }
        wakeUp = OneShotTimer(queue: queue, after: max(0, due - now)) { [weak self] in
            guard let self else { return }
            self.wakeUpAt = .infinity
            self.wakeUp = nil
            self.reconcile()
        }
    }

    private func remove(_ connection: LDAPConnection) {
        connections.removeAll { $0 === connection }
        if current === connection {
            current = nil
            publish(nil)
        }
    }

    private func publish(_ uri: String?) {
        published.withLock { $0 = uri }
        health.setInUse(uri, by: ObjectIdentifier(self))
    }

    private func handle(_ event: LDAPConnection.Event, from connection: LDAPConnection) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch event {
        case .bound:
            health.attemptSucceeded(connection.uri, startedAt: connection.startedAt)
            if let current, rank(current.uri) <= rank(connection.uri) {
                // A slower attempt on a server no better than the one in use.
                connection.close()
                remove(connection)
            } else {
                if let previous = current {
                    previous.retiring = true
                    if previous.inFlight == 0 {
                        previous.close()
                        remove(previous)
                    }
                }
                current = connection
                publish(connection.uri)
            }
            reconcile()
        case .failed(let reason, let serverFault):
            remove(connection)
            DirectoryMetrics.error(server: connection.uri)
            health.attemptFailed(connection.uri, reason: reason, serverFault: serverFault, startedAt: connection.startedAt)
            reconcile()
        case .lost(let reason, let hung, let outstanding):
            lose(connection, reason: reason, hung: hung, outstanding: outstanding)
        case .searchEnded:
            if connection.retiring {
                if connection.inFlight == 0 {
                    connection.close()
                    remove(connection)
                }
            } else if connection === current {
                drain()
            }
        }
    }

    /// A bound connection went away (already closed): its lookups are sent again, once, on
    /// the next connection. A server that hung is skipped like one that refused a connect;
    /// one that closed the connection is simply tried again first.
    private func lose(_ connection: LDAPConnection, reason: String, hung: Bool, outstanding: [LDAPLookup]) {
        remove(connection)
        DirectoryMetrics.error(server: connection.uri)
        if hung { health.attemptFailed(connection.uri, reason: reason, serverFault: true, startedAt: LDAPServerHealth.now()) }
        var again: [LDAPLookup] = []
        for var lookup in outstanding {
            if lookup.resent {
                lookup.completion(.unavailable(reason: "directory connection lost (\(connection.uri): \(reason))"))
            } else {
                lookup.resent = true
                again.append(lookup)
            }
        }
        waiting.insert(contentsOf: again, at: 0)
        reconcile()
    }
}
