#if canImport(Glibc)
import Glibc
#endif
import Configuration
import Directory
import EventLoop
import Logging
import MailProtocol
import Routing
import Synchronization
import TLS

/// What a session needs from the service, captured when it is accepted. A reload swaps the
/// context; sessions already open keep the one they started with. A class, so that each of
/// tens of thousands of sessions holds a reference, not its own copy of the configuration.
final class ServiceContext: Sendable {
    let configuration: ServiceConfiguration
    let tls: TLSContexts
    let router: Router
    let holds: HoldBook
    let registry: SessionRegistry
    let admission: Admission
    let backendHosts: BackendHosts
    /// `verify_credentials`; nil when off.
    let passwordCheck: PasswordCheck?
    let logger: Logger

    init(configuration: ServiceConfiguration, tls: TLSContexts, router: Router, holds: HoldBook,
         registry: SessionRegistry, admission: Admission, backendHosts: BackendHosts, passwordCheck: PasswordCheck?,
         logger: Logger) {
        self.configuration = configuration
        self.tls = tls
        self.router = router
        self.holds = holds
        self.registry = registry
        self.admission = admission
        self.backendHosts = backendHosts
        self.passwordCheck = passwordCheck
        self.logger = logger
    }
}

/// The context of new sessions, swapped by a reload.
final class SharedContext: Sendable {
    private let value: Mutex<ServiceContext>
    init(_ context: ServiceContext) { value = Mutex(context) }
    func withLock<R>(_ body: (inout ServiceContext) -> R) -> R { value.withLock { body(&$0) } }
}

/// The listeners, the loops and the shared state of a running mailswitch.
public final class ProxyServer: Sendable {
    public let registry = SessionRegistry()
    public let router: Router
    public let holds: HoldBook
    let admission: Admission
    let backendHosts: BackendHosts
    let watcher: RouteWatcher
    let group: EventLoopGroup
    private let context: SharedContext
    /// The open listeners with the configuration each was opened for.
    private let listeners = Mutex<[(configuration: ListenerConfiguration, listener: Listener)]>([])
    /// Listening sockets passed by the service manager, by bound address, until a listener takes them.
    private let activated = Mutex<[String: Int32]>([:])

    /// Sockets from systemd's socket activation: a configured listener on the same address
    /// uses its socket instead of binding one.
    public func adoptSockets(_ sockets: [String: Int32]) {
        activated.withLock { $0 = sockets }
    }

    /// The configuration file and when it was last loaded (for `mailswitch status`).
    private let loaded = Mutex<(path: String, at: Double)>(("", 0))
    /// How the admin socket's `reload` reloads (set by the executable, which knows the file).
    private let reloadHandler = Mutex<(@Sendable () -> AdminResponse)?>(nil)
    private let admin = Mutex<AdminServer?>(nil)
    private let metrics = Mutex<MetricsServer?>(nil)
    /// Set when the stop sequence begins: /health answers 503 from then on.
    private let draining = Atomic<Bool>(false)
    let logger: Logger
    let startedAt = Router.now()

    /// Fails when the hold state file cannot be read: starting without the holds an operator
    /// set would let held users in.
    public init(configuration: ServiceConfiguration, tls: TLSContexts, directory: any Directory, logger: Logger,
                loopCount: Int, acceptDistribution: AcceptDistribution = .defaultChoice) throws {
        self.logger = logger
        group = EventLoopGroup(count: loopCount, scratchBytes: configuration.limits.relayBufferBytes,
                               acceptDistribution: acceptDistribution)
        router = Router(directory: directory, settings: configuration.directory.cache)
        holds = try HoldBook(file: configuration.admin.stateFile)
        admission = Admission(logger: logger)
        backendHosts = BackendHosts(logger: logger)
        let context = SharedContext(ServiceContext(configuration: configuration, tls: tls, router: router, holds: holds,
                                                   registry: registry, admission: admission, backendHosts: backendHosts,
                                                   passwordCheck: PasswordCheck.make(for: configuration, reusing: nil),
                                                   logger: logger))
        self.context = context
        watcher = RouteWatcher(router: router, registry: registry, holds: holds, configuration: configuration,
                               logger: logger, current: { context.withLock { $0.configuration } },
                               entryChanged: { dn in context.withLock { $0.passwordCheck }?.forget(dn: dn) })
    }

    public var configuration: ServiceConfiguration { context.withLock { $0.configuration } }

    /// Applies a reloaded configuration: listeners added open and listeners removed close
    /// (their sessions carry on), a changed directory gets a new connection and change feed,
    /// and new logins use the new routing, backends, limits and certificates at once. Open
    /// sessions keep the context they started with. What could not be applied is returned.
    public func reload(configuration: ServiceConfiguration, tls: TLSContexts, directory: (any Directory)?) -> [String] {
        var notes: [String] = []
        let previous = context.withLock { $0.configuration }
        reconcileListeners(configuration.listeners, notes: &notes)
        if configuration.directory != previous.directory, let directory {
            router.replaceDirectory(directory)
            watcher.restart(configuration.directory)
            notes.append("directory settings changed: new connection and change feed")
        }
        if configuration.admin != previous.admin {
            notes.append("admin settings changed: restart the service to apply them")
        }
        if configuration.disconnects != previous.disconnects {
            notes.append("routing.disconnect_burst/max_disconnect_delay changed: restart the service to apply them")
        }
        if configuration.metricsAddress != previous.metricsAddress {
            notes.append("metrics.address changed: restart the service to apply it")
        }
        if configuration.limits.relayBufferBytes != previous.limits.relayBufferBytes {
            notes.append("limits.relay_buffer_bytes changed: restart the service to apply it")
        }
        context.withLock { current in
            var next = configuration
            next.admin = current.configuration.admin
            next.disconnects = current.configuration.disconnects
            next.metricsAddress = current.configuration.metricsAddress
            next.limits.relayBufferBytes = current.configuration.limits.relayBufferBytes
            if directory == nil { next.directory = current.configuration.directory }
            current = ServiceContext(configuration: next, tls: tls, router: current.router, holds: current.holds,
                                     registry: current.registry, admission: current.admission,
                                     backendHosts: current.backendHosts,
                                     passwordCheck: PasswordCheck.make(for: next, reusing: current.passwordCheck),
                                     logger: current.logger)
        }
        return notes
    }

    /// Closes listeners no longer configured, opens new ones; a listener whose settings changed
    /// is closed and opened again (its open sessions carry on with what they had).
    private func reconcileListeners(_ wanted: [ListenerConfiguration], notes: inout [String]) {
        let (keep, drop) = listeners.withLock { current in
            (current.filter { wanted.contains($0.configuration) }, current.filter { !wanted.contains($0.configuration) })
        }
        for (configuration, listener) in drop {
            listener.close()
            logger.notice("reload: stopped listening on \(configuration.address) (its sessions carry on)")
        }
        var opened = keep
        for configuration in wanted where !keep.contains(where: { $0.configuration == configuration }) {
            do {
                opened.append((configuration, try open(configuration)))
            } catch {
                notes.append("listener \(configuration.address) could not be opened: \(error)")
            }
        }
        listeners.withLock { $0 = opened }
    }

    /// Records which file the running configuration came from, and when (seconds since the epoch).
    public func noteConfiguration(path: String, loadedAt: Double) {
        loaded.withLock { $0 = (path, loadedAt) }
    }

    var loadedConfiguration: (path: String, at: Double) { loaded.withLock { $0 } }

    /// The admin socket's `reload`: the executable provides what reading the file takes.
    public func setReloadHandler(_ handler: @escaping @Sendable () -> AdminResponse) {
        reloadHandler.withLock { $0 = handler }
    }

    func reloadFromAdmin() -> AdminResponse {
        guard let handler = reloadHandler.withLock({ $0 }) else { return .failure(.failed, "reload is not available") }
        return handler()
    }

    /// Opens every listener, or none: a listener that cannot bind fails the start.
    public func start() throws {
        Signals.ignoreSIGPIPE()
        let configuration = context.withLock { $0.configuration }
        var opened: [(configuration: ListenerConfiguration, listener: Listener)] = []
        do {
            for listener in configuration.listeners {
                opened.append((listener, try open(listener)))
            }
        } catch {
            opened.forEach { $0.listener.close() }
            throw error
        }
        startAdmin(configuration.admin.socketPath)
        do {
            try startMetrics(configuration)
        } catch {
            opened.forEach { $0.listener.close() }
            closeAdmin()
            throw error
        }
        listeners.withLock { $0 = opened }
        for (address, _) in activated.withLock({ $0 }) {
            logger.warning("the service manager passed a socket on \(address), which no listener is configured for")
        }
        watcher.start()
    }

    /// The admin socket is for the CLI: mail is served without it. Its directory is made when
    /// missing (as systemd's RuntimeDirectory= would), and when the socket still cannot be
    /// opened the service starts without it and says so.
    private func startAdmin(_ path: String) {
        do {
            try SocketDirectory.make(for: path)
            let server = try AdminServer(path: path, loop: group.loops[0], logger: logger) {
                [unowned self] request, reply in handle(request, reply: reply)
            }
            admin.withLock { $0 = server }
            logger.info("admin socket \(path)")
        } catch {
            logger.warning("""
                admin.socket \(path): \(error): starting without the admin socket \
                (sessions, kick, hold, release, reload and status cannot reach this instance)
                """)
        }
    }

    /// Stops accepting; sessions already accepted carry on, and the admin socket stays up.
    public func stop() {
        draining.store(true, ordering: .relaxed)
        let all = listeners.withLock { current in
            defer { current = [] }
            return current
        }
        all.forEach { $0.listener.close() }
    }

    /// True once `stop` (or `drain`) has begun: /health says 503.
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// HTTP /metrics and /health on `metrics.address`, if configured. The metrics listener
    /// stays open while draining, so a load balancer sees the 503.
    private func startMetrics(_ configuration: ServiceConfiguration) throws {
        guard let configured = configuration.metricsAddress else { return }
        guard let address = SocketAddress(numericHost: configured.host, port: configured.port) else {
            throw ConfigurationError("metrics.address \(configured) must be a numeric IP address")
        }
        do {
            let server = try MetricsServer(address: address, group: group, registry: ProxyMetrics.registry,
                                           logger: logger) { [unowned self] in isDraining }
            metrics.withLock { $0 = server }
            logger.info("metrics on http://\(server.address)/metrics (and /health)")
        } catch {
            throw ConfigurationError("metrics.address \(configured): \(error)")
        }
    }

    /// Removes the admin socket (at exit).
    public func closeAdmin() {
        admin.withLock { $0?.close() }
    }

    /// The addresses actually bound (port 0 in the configuration picks a free one).
    public var boundAddresses: [String] {
        listeners.withLock { $0.map { $0.listener.address.description } }
    }

    private func open(_ listener: ListenerConfiguration) throws -> Listener {
        guard let address = SocketAddress(numericHost: listener.address.host, port: listener.address.port) else {
            throw ConfigurationError("listener address \(listener.address) must be a numeric IP address")
        }
        let logger = self.logger
        let inherited = activated.withLock { $0.removeValue(forKey: address.description) }
        if inherited != nil { logger.info("\(address): using the socket the service manager passed") }
        let opened = try Listener(address: address, inherited: inherited, group: group, onAccept: { [unowned self] fd, peer, loop in
            let snapshot = self.context.withLock { $0 }
            let session = ClientSession(fd: fd, peer: peer, loop: loop, listener: listener, context: snapshot)
            session.start()
        }, onError: { error in
            logger.error("accept failed on \(listener.address): \(error)")
        })
        logger.info("listening on \(opened.address) for \(listener.service.rawValue) (tls: \(listener.tls.rawValue))")
        return opened
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
