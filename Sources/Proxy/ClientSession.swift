#if canImport(Glibc)
import Glibc
#endif
import Configuration
import Dispatch
import Directory
import EventLoop
import Logging
import MailProtocol
import Routing
import TLS

/// One client from accept to close: drives the pre-login state machine, asks the directory,
/// logs in to the backend, then hands both sockets to a `Relay`.
///
/// `@unchecked Sendable`: every mutable member is confined to `loop.queue`; callbacks from the
/// directory and resolver hop back there before touching anything (`onLoop`).
final class ClientSession: SessionControl, @unchecked Sendable {
    private enum State {
        case preLogin
        case loggingIn
        /// The login failed and its answer waits for `auth_failure_delay`; the client is not read.
        case answeringLater
        case relaying
        case closed
    }

    let id: String
    private let loop: EventLoop
    private let client: Connection
    private let listener: ListenerConfiguration
    private let context: ServiceContext
    /// This session's log fields, made into a logger's metadata only when a line is written
    /// (`log`): a metadata dictionary held by every idle session cost about half a KiB each.
    private var logFields: LogFields
    /// Dropped once the store accepted the login: a relayed session no longer needs it.
    private var machine: (any PreLoginMachine)?
    private var state = State.preLogin
    private var loginTimer: LoopTimer?
    private var backend: Connection?
    private var relay: Relay?
    /// The store's name and the address the session is connected to.
    private var route: (backend: String, host: String)?
    /// From the login command to the store's verdict; nil otherwise.
    private var attempt: LoginAttempt?
    /// IMAP: where the store's responses stand, so a move can say BYE between two of them.
    private var responses: ResponseBoundaryObserver?
    /// Set for a read-only hold: the session is filtered, and refusals say this.
    private var readOnlyMessage: String?
    /// Set when the proxy ends the session (a move, a hold, a kick), for the log.
    private var endReason: SessionEndReason?
    /// The client's address for limits and failure counters (canonical text).
    private var clientAddress: String
    private var clientPort: Int
    /// The address the client connected to, when a PROXY header named it (the load
    /// balancer's); otherwise our socket's own.
    private var connectedTo: (host: String, port: Int)?
    /// Set while a PROXY header is being read.
    private var proxyHeader: ProxyHeaderReader?
    /// Set once `limits.max_connections(_per_ip)` admitted the connection; given back at the end.
    private var admittedAddress: String?
    /// The name of the store whose session slot and login token this session holds (`max_sessions`).
    private var backendSlot: String?
    private var refusalTimer: LoopTimer?
    /// Which login of this connection a directory or resolver answer belongs to: a login
    /// refused while its lookup was out (a kick) must not have that answer applied to the
    /// client's next login.
    private var loginGeneration = 0
    /// Set once the session is on its way out: nothing may start again.
    private var closing = false
    private var selfReference: ClientSession?   // alive while open; dropped on close
    private let startedAt = Double(time(nil))
    private var metrics = SessionMetrics()

    init(fd: Int32, peer: SocketAddress, loop: EventLoop, listener: ListenerConfiguration, context: ServiceContext) {
        self.id = SessionID.make()
        self.loop = loop
        self.client = Connection(fd: fd, loop: loop)
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: one client, one key.
        self.clientAddress = IPAddress(peer.host).flatMap { $0.unmappedIPv4?.description } ?? peer.host
        self.clientPort = peer.port
        self.listener = listener
        self.context = context
        self.logFields = LogFields(client: "\(peer)")
        let limits = context.configuration.limits.protocolLimits
        let plaintext = !listener.requireTLS
        switch listener.service {
        case .imap:
            machine = IMAPPreLogin(configuration: .init(offersStartTLS: listener.tls == .starttls,
                                                        allowsPlaintextLogin: plaintext, limits: limits),
                                   secure: listener.tls == .implicit)
        case .pop3:
            machine = POP3PreLogin(configuration: .init(offersStartTLS: listener.tls == .starttls,
                                                        allowsPlaintextLogin: plaintext, limits: limits),
                                   secure: listener.tls == .implicit)
        }
    }

    func start() {
        loop.assertOnLoop()
        selfReference = self
        client.onError = { [unowned self] error in close("client write failed: \(error)") }
        // The login timeout covers the PROXY header and the TLS handshake too: a client that
        // connects and says nothing is dropped either way.
        loginTimer = loop.schedule(after: context.configuration.limits.loginTimeoutSeconds) { [weak self] in
            self?.onLoop { $0.loginTimedOut() }
        }
        guard listener.proxyProtocol else {
            admitAndGreet()
            return
        }
        // Until the header is read, the client's address is the peer's.
        guard let address = IPAddress(clientAddress), context.configuration.trustedProxies.contains(where: { $0.contains(address) }) else {
            context.admission.untrustedProxy(clientAddress)
            close("\(clientAddress) is not in trusted_proxies")
            return
        }
        proxyHeader = ProxyHeaderReader()
        client.onReadable = { [unowned self] in readProxyHeader() }
        client.setReading(true)
    }

    /// Reads the PROXY header, consuming nothing after it (see `ProxyHeaderReader`); its
    /// source address is the client's from then on: in logs, limits, failure counters and
    /// what the store is told.
    private func readProxyHeader() {
        guard var reader = proxyHeader,
              let bytes = readClientBytes(max: 16 + ProxyProtocol.maxV2PayloadLength, peek: true,
                                          endOfFile: "client disconnected before its PROXY header") else { return }
        let step = reader.offer(bytes)
        proxyHeader = reader
        switch step {
        case .invalid(let why):
            log(.notice, "invalid PROXY header from \(logFields.client): \(why)")
            close("invalid PROXY header")
        case .consume(let taken):
            discard(taken)
        case .complete(let header, let taken):
            discard(taken)
            proxyHeader = nil
            client.setReading(false)
            if let source = header.source {
                clientAddress = source.address.unmappedIPv4?.description ?? source.address.description
                clientPort = Int(source.port)
                logFields.via = logFields.client   // the proxy's own address
                logFields.client = Self.endpointText(clientAddress, clientPort)
            }
            if let destination = header.destination {
                connectedTo = (destination.address.unmappedIPv4?.description ?? destination.address.description,
                               Int(destination.port))
            }
            admitAndGreet()
        }
    }

    /// One read (or peek) from the client: its bytes, or nil when there are none yet or the
    /// session was closed (at end of file, with `endOfFile` as the reason, or on an error).
    private func readClientBytes(max: Int, peek: Bool = false, endOfFile: String) -> UnsafeRawBufferPointer? {
        let result: IOResult
        let buffer: UnsafeMutableRawBufferPointer
        do {
            (result, buffer) = peek ? try client.peekIntoScratch(max: max) : try client.readIntoScratch(max: max)
        } catch {
            close("client read failed: \(error)")
            return nil
        }
        switch result {
        case .wouldBlock:
            return nil
        case .endOfFile:
            close(endOfFile)
            return nil
        case .processed(let count):
            return UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        }
    }

    /// Takes bytes already seen by a peek out of the socket.
    private func discard(_ count: Int) {
        guard count > 0 else { return }
        _ = try? client.readIntoScratch(max: count)
    }

    /// What per-address limits and failure counters count the client as: its IPv4 address, or
    /// its IPv6 /64 (one subscriber's network; counting single IPv6 addresses would give an
    /// attacker 2^64 fresh ones).
    private var limitKey: String {
        guard let address = IPAddress(clientAddress), !address.isIPv4,
              let network = NetworkPrefix(address: address, length: 64) else { return clientAddress }
        return network.description
    }

    private struct LogFields {
        var client: String
        var via: String?
        var tls: String?
        var sni: String?
        var user: String?
    }

    /// Writes a line with this session's fields; nothing is built when the level is off.
    private func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
                     metadata extra: @autoclosure () -> Logger.Metadata? = nil) {
        let logger = context.logger
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = ["session": "\(id)", "client": "\(logFields.client)"]
        if let via = logFields.via { metadata["via"] = "\(via)" }
        if let tls = logFields.tls { metadata["tls"] = "\(tls)" }
        if let sni = logFields.sni { metadata["sni"] = "\(sni)" }
        if let user = logFields.user { metadata["user"] = "\(user)" }
        if let extra = extra() { metadata.merge(extra) { _, new in new } }
        logger.log(level: level, message(), metadata: metadata)
    }

    static func endpointText(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    private func admitAndGreet() {
        if let refusal = context.admission.admitConnection(limitKey, limits: context.configuration.limits) {
            // The protocol's goodbye in plaintext, even on an implicit-TLS listener: a
            // handshake costs more than the refusal is worth, and the client only sees a
            // failed handshake either way.
            let text = refusal == .maxConnections ? "Too many connections, try again later."
                                                  : "Too many connections from your address."
            client.send(machine?.temporaryGoodbye(text) ?? [])
            closeAfterFlush(refusal.rawValue)
            return
        }
        admittedAddress = limitKey
        context.registry.register(.init(id: id, service: listener.service.rawValue, listener: listener.address.description,
                                        client: Self.endpointText(clientAddress, clientPort), tls: nil, user: nil, backend: nil, backendHost: nil,
                                        phase: .preLogin, startedAt: startedAt, target: nil, dn: nil), control: self)
        metrics.opened(listener)
        if listener.tls == .implicit {
            startClientTLS { $0.greet() }
        } else {
            greet()
        }
    }

    private func greet() {
        client.onReadable = { [unowned self] in readClient() }
        client.send(machine?.greeting() ?? [])
        client.setReading(true)
    }

    /// Handshake with the client (implicit TLS, or after STARTTLS/STLS was answered).
    private func startClientTLS(then next: @escaping (ClientSession) -> Void) {
        client.setReading(false)
        guard let server = context.tls.servers[listener.service], let transport = server.makeTransport(fd: client.fd) else {
            close("TLS is not available on this listener")
            return
        }
        TLSHandshake.run(on: client, transport: transport) { [unowned self] result in
            switch result {
            case .failure(let error):
                metrics.tlsFailed(transport.attemptedVersion)
                close("client TLS handshake failed: \(error)")
            case .success(let transport):
                logFields.tls = transport.summary
                metrics.tlsEstablished(transport.version)
                context.registry.update(id) { $0.tls = transport.version }
                if let name = transport.serverName { logFields.sni = LogText.escaped(name) }
                next(self)
            }
        }
    }

    /// Runs `body` on this session's loop if it is still open.
    private func onLoop(_ body: @escaping @Sendable (ClientSession) -> Void) {
        let work: @Sendable () -> Void = { [self] in
            guard state != .closed else { return }
            body(self)
        }
        loop.execute(work)
    }

    // MARK: - Pre-login

    private func readClient() {
        guard let bytes = readClientBytes(max: 16_384, endOfFile: "client disconnected before login") else { return }
        perform(machine?.receive(bytes) ?? [])
        holdBackIfRepliesPileUp()
    }

    /// A client that pipelines CAPABILITY or ID without reading the answers would make the
    /// outbox grow for as long as the login timeout lets it: past a bound, stop reading it
    /// until it has taken what it was sent.
    private func holdBackIfRepliesPileUp() {
        // A hook already set (the STARTTLS handshake waiting for its reply to go out) stops
        // reading itself and must not be replaced.
        guard state == .preLogin, client.onOutboxDrained == nil,
              client.outboxCount > context.configuration.limits.protocolLimits.lineLength * 2 else { return }
        client.setReading(false)
        client.onOutboxDrained = { [unowned self] in
            client.onOutboxDrained = nil
            if state == .preLogin { client.setReading(true) }
        }
    }

    private func perform(_ actions: [ClientAction]) {
        for action in actions {
            guard state != .closed else { return }
            switch action {
            case .send(let bytes):
                client.send(bytes)
            case .login(let request):
                client.setReading(false)   // pipelined bytes wait in the socket meanwhile
                beginLogin(request)
            case .startTLS:
                // The "begin TLS" reply goes out in plaintext, completely, before the handshake;
                // whatever the client pipelined after STARTTLS was dropped by the machine, and
                // bytes still in the socket are taken as handshake data (CVE-2011-0411 class).
                client.setReading(false)
                let begin: () -> Void = { [unowned self] in
                    client.onOutboxDrained = nil
                    startClientTLS { session in
                        session.machine?.tlsEstablished()
                        session.client.onReadable = { [unowned session] in session.readClient() }
                        session.client.setReading(true)
                    }
                }
                if client.outboxCount == 0 { begin() } else { client.onOutboxDrained = begin }
                return
            case .close:
                if let limit = machine?.limitReached {
                    ProxyMetrics.limitReached(.init(limit))
                    log(.notice, "closing: \(limit.rawValue) reached before login")
                    closeAfterFlush(limit.rawValue)
                } else {
                    closeAfterFlush("client logged out or was refused")
                }
            }
        }
    }

    private func loginTimedOut() {
        if state == .relaying, let relay {
            // The backend accepted, but the client never read the replies before it.
            log(.notice, "client did not read its login reply in time")
            relay.stop()
            return
        }
        guard state == .preLogin || state == .loggingIn || state == .answeringLater else { return }
        if state == .loggingIn { ProxyMetrics.login(.timeout) }
        ProxyMetrics.limitReached(.loginTimeout)
        client.send(machine?.goodbye("Disconnected for inactivity.") ?? [])
        closeAfterFlush("login timeout")
    }

    // MARK: - Routing and backend login

    private func beginLogin(_ request: LoginRequest) {
        state = .loggingIn
        loginGeneration += 1
        let attempt = LoginAttempt(request: request, startedAt: Router.now())
        self.attempt = attempt
        let user = request.credentials.mailboxUser
        logFields.user = LogText.escaped(user)
        context.registry.update(id) { $0.user = user; $0.phase = .loggingIn }
        // A proxy in front (or we ourselves, through a backend that points back at us) says
        // how many hops are left; none left is a routing loop.
        let incoming = min(request.proxyTTL ?? ClientEndpoint.defaultTTL, ClientEndpoint.defaultTTL)
        guard incoming > 1 else {
            refuse(.temporary, "proxy loop: x-proxy-ttl \(request.proxyTTL ?? 0) from the client, no hop left "
                               + "(does a backend point back at a proxy?)")
            return
        }
        attempt.hopsLeft = incoming - 1
        let limits = context.configuration.limits
        if let blocked = context.admission.checkLogin(address: limitKey, user: user, settings: limits.authFailures,
                                                      now: attempt.startedAt) {
            refuse(.unavailable(text: "Too many failed logins, try again later."), "\(blocked.rawValue) reached",
                   result: .limited, delayed: true)
            return
        }
        // An operator's hold decides without the directory.
        if context.holds.hold(for: user) != nil {
            routed(Router.Answer(result: .notFound, source: .directory))
            return
        }
        // A cached route answers here and now, on this loop; a miss comes back through onLoop.
        let generation = loginGeneration
        if let answer = context.router.route(user, completion: { [self] answer in
            onLoop { session in if session.loginGeneration == generation { session.routed(answer) } }
        }) {
            routed(answer)
        }
    }

    private func routed(_ answer: Router.Answer) {
        guard state == .loggingIn else { return }
        let hold = attempt.flatMap { context.holds.hold(for: $0.request.credentials.mailboxUser) }
        let decision = context.configuration.routing.decide(answer.result, service: listener.service, hold: hold?.operatorHold)
        let dn: String? = if case .found(let dn, _) = answer.result { dn } else { nil }
        context.registry.update(id) { $0.target = decision.target; $0.dn = dn }
        switch decision {
        case .unknownUser(let why):
            refuse(.authenticationFailed, "no route: \(why)")
        case .unavailable(let why):
            refuse(.temporary, why)
        case .held(let message, let why):
            refuse(.unavailable(text: message), why, result: .held)
        case .backend(let backend, let hosts, let why):
            if case .stale(let age) = answer.source {
                log(.notice, "directory unavailable: using a cached route \(Int(age))s old")
            }
            log(.debug, "route: \(why)")
            guard admitLogin(to: backend) else { return }
            connect(to: backend, hosts: hosts)
        case .readOnly(let backend, let hosts, let message, let why):
            log(.info, "route: \(why)")
            readOnlyMessage = message
            guard admitLogin(to: backend) else { return }
            connect(to: backend, hosts: hosts)
        }
    }

    /// The user's session count and the store's limits, checked before the store is
    /// contacted: a refused login never reaches it.
    private func admitLogin(to backend: Backend) -> Bool {
        releaseBackendSlot()   // never two at once
        let limits = context.configuration.limits
        if let user = attempt?.request.credentials.mailboxUser, context.registry.count(ofUser: user) > limits.maxSessionsPerUser {
            ProxyMetrics.limitReached(.maxSessionsPerUser)
            refuse(.limit(text: "Too many sessions for this user."),
                   "max_sessions_per_user (\(limits.maxSessionsPerUser)) reached", result: .limited)
            return false
        }
        if let refusal = context.admission.admitBackend(backend, now: Router.now()) {
            refuse(.temporary, "backend \(backend.name): \(refusal.rawValue) reached", result: .limited)
            return false
        }
        // Only a store with limits has slots to give back.
        backendSlot = backend.hasLimits ? backend.name : nil
        return true
    }

    private func releaseBackendSlot() {
        guard let name = backendSlot else { return }
        backendSlot = nil
        context.admission.releaseBackend(named: name)
    }

    private func connect(to backend: Backend, hosts: [HostPort]) {
        resolve(hosts[...], into: []) { [self] addresses in
            guard !addresses.isEmpty else {
                ProxyMetrics.backendUnreachable(backend, hosts)
                refuse(.temporary, "backend \(backend.name): no address for \(hosts.map(\.description).joined(separator: ", "))")
                return
            }
            // A store address that is one of our own listeners sends the login straight back
            // here: a loop (longer ones, through other proxies, run out of x-proxy-ttl).
            if let own = addresses.first(where: isOwnListener) {
                refuse(.temporary, "backend \(backend.name): \(own) is this proxy's own listener (a routing loop)")
                return
            }
            // Dead hosts are skipped until a retry is due; with none left, fail now rather
            // than after a connect timeout.
            let byText = Dictionary(addresses.map { ($0.description, $0) }, uniquingKeysWith: { first, _ in first })
            let ordered = context.backendHosts.usable(addresses.map(\.description), now: Router.now()).compactMap { byText[$0] }
            guard !ordered.isEmpty else {
                ProxyMetrics.backendUnreachable(backend, hosts)
                refuse(.temporary, "backend \(backend.name): every host is down (\(addresses.map(\.description).joined(separator: ", ")))")
                return
            }
            let connector = Connector(loop: loop, addresses: ordered,
                                      timeout: context.configuration.limits.backendConnectTimeoutSeconds,
                                      // A store behind implicit TLS, or waiting for our
                                      // PROXY header, says nothing first.
                                      peerSpeaksFirst: backend.tls != .implicit && backend.forwardClient != .proxyV2) { [self] result in
                attempt?.connector = nil
                guard state == .loggingIn else {
                    if case .success(let connection) = result { connection.close() }
                    return
                }
                switch result {
                case .failure(let error):
                    ProxyMetrics.backendUnreachable(backend, hosts)
                    refuse(.temporary, "backend \(backend.name) unreachable: \(error)")
                case .success(let connection):
                    backendConnected(connection, backend: backend)
                }
            }
            connector.onAttempt = { [context] address, error in
                if let error {
                    // Only what says the host is dead: out of descriptors or local ports is ours.
                    guard [ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET].contains(error.errno) else { return }
                    context.backendHosts.failed(address.description, backend: backend.name, error: "\(error)", now: Router.now())
                } else {
                    context.backendHosts.succeeded(address.description, backend: backend.name)
                }
            }
            attempt?.connector = connector
            connector.start()
        }
    }

    /// Exactly a listener's address, or a loopback address on a wildcard listener's port (a
    /// store elsewhere on the same port is no loop).
    private func isOwnListener(_ address: SocketAddress) -> Bool {
        let loopback = address.host.hasPrefix("127.") || address.host == "::1"
        return context.configuration.listeners.contains { listener in
            listener.address.port == address.port
                && (listener.address.host == address.host || (loopback && ["0.0.0.0", "::"].contains(listener.address.host)))
        }
    }

    private func resolve(_ hosts: ArraySlice<HostPort>, into found: [SocketAddress],
                         _ completion: @escaping @Sendable ([SocketAddress]) -> Void) {
        guard let host = hosts.first else {
            completion(found)
            return
        }
        // The resolver calls back on this loop.
        let generation = loginGeneration
        Resolver.resolve(host: host.host, port: host.port, on: loop) { [self] result in
            loop.assertOnLoop()
            guard state == .loggingIn, loginGeneration == generation else { return }
            if case .failure(let error) = result { log(.warning, "cannot resolve backend host \(host): \(error)") }
            let addresses = (try? result.get()) ?? []
            for address in addresses { attempt?.backendNames[address.description] = host.host }
            resolve(hosts.dropFirst(), into: found + addresses, completion)
        }
    }

    private func backendConnected(_ connection: Connection, backend: Backend) {
        self.backend = connection
        let peerName = Socket.peerAddress(of: connection.fd)?.description ?? "?"
        route = (backend.name, peerName)
        context.registry.update(id) { $0.backend = backend.name; $0.backendHost = peerName }
        connection.onError = { [unowned self] error in refuse(.temporary, "backend write failed: \(error)") }
        if backend.forwardClient == .proxyV2 { connection.send(proxyV2Header()) }
        // One deadline for the TLS handshake, the greeting and the login verdict.
        attempt?.backendTimer = loop.schedule(after: context.configuration.limits.backendLoginTimeoutSeconds) { [weak self] in
            self?.onLoop { $0.refuse(.temporary, "backend did not answer the login in time", result: .timeout) }
        }
        if backend.tls == .implicit {
            startBackendTLS(connection, backend: backend.name, peer: peerName) { $0.startBackendLogin(connection, backend: backend) }
        } else {
            startBackendLogin(connection, backend: backend)
        }
    }

    /// The PROXY v2 header for the store: the client as we know it, and the address it
    /// connected to. First on the connection, before any TLS.
    private func proxyV2Header() -> [UInt8] {
        let local = connectedTo ?? Socket.localAddress(of: client.fd).map { ($0.host, $0.port) }
        guard let source = IPAddress(clientAddress), let local, let destination = IPAddress(local.host),
              let sourcePort = UInt16(exactly: clientPort), let destinationPort = UInt16(exactly: local.port) else {
            return ProxyProtocol.encodeV2Local()
        }
        return ProxyProtocol.encodeV2(source: source, sourcePort: sourcePort, destination: destination,
                                      destinationPort: destinationPort)
    }

    /// Credentials go to a backend only after its certificate passed verification: a failed
    /// handshake refuses the login as temporary, with the reason in the log.
    private func startBackendTLS(_ connection: Connection, backend: String, peer: String,
                                 then next: @escaping (ClientSession) -> Void) {
        connection.setReading(false)
        guard let tls = context.tls.backends[backend],
              let transport = tls.makeTransport(fd: connection.fd, host: attempt?.backendNames[peer] ?? Socket.peerAddress(of: connection.fd)?.host ?? "") else {
            refuse(.temporary, "backend \(backend): no TLS context")
            return
        }
        TLSHandshake.run(on: connection, transport: transport) { [unowned self] result in
            guard state == .loggingIn else { return }
            switch result {
            case .failure(let error):
                refuse(.temporary, "backend \(backend) at \(peer): TLS: \(error)")
            case .success(let transport):
                attempt?.backendTLS = transport
                next(self)
            }
        }
    }

    private func startBackendLogin(_ connection: Connection, backend: Backend) {
        guard let attempt else { return }
        let local = connectedTo ?? Socket.localAddress(of: client.fd).map { ($0.host, $0.port) }
        let endpoint = backend.forwardClient == .none
            ? nil
            : ClientEndpoint(remoteAddress: clientAddress, remotePort: clientPort, localAddress: local?.host ?? "",
                             localPort: local?.port ?? 0, sessionID: id, ttl: attempt.hopsLeft)
        let limits = context.configuration.limits.protocolLimits
        switch listener.service {
        case .imap:
            attempt.backendMachine = IMAPBackendLogin(credentials: attempt.request.credentials, client: endpoint,
                                              tls: backend.tls == .starttls ? .startTLS : .none, limits: limits)
        case .pop3:
            attempt.backendMachine = POP3BackendLogin(credentials: attempt.request.credentials, client: endpoint,
                                              tls: backend.tls == .starttls ? .startTLS : .none, limits: limits)
        }
        connection.onReadable = { [unowned self] in readBackend() }
        connection.setReading(true)
    }

    private func readBackend() {
        guard let backend, state == .loggingIn else { return }
        let result: IOResult
        let buffer: UnsafeMutableRawBufferPointer
        do {
            (result, buffer) = try backend.readIntoScratch(max: 16_384)
        } catch {
            refuse(.temporary, "backend read failed: \(error)")
            return
        }
        switch result {
        case .wouldBlock:
            return
        case .endOfFile:
            refuse(.temporary, "backend closed the connection during login")
        case .processed(let count):
            guard let attempt, var machine = attempt.backendMachine else { return }
            let actions = machine.receive(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            attempt.backendMachine = machine
            performBackend(actions)
        }
    }

    private func performBackend(_ actions: [BackendAction]) {
        guard let backend else { return }
        // A refusal in the same batch (plaintext after the store's STARTTLS answer) wins.
        let refused = actions.contains { if case .rejected = $0 { return true } else { return false } }
        for action in actions {
            guard state == .loggingIn else { return }
            switch action {
            case .send(let bytes):
                backend.send(bytes)
            case .startTLS:
                if refused { continue }
                guard let route else { return }
                startBackendTLS(backend, backend: route.backend, peer: route.host) { session in
                    guard let attempt = session.attempt, var machine = attempt.backendMachine else { return }
                    let next = machine.tlsEstablished()
                    attempt.backendMachine = machine
                    session.backend?.onReadable = { [unowned session] in session.readBackend() }
                    session.backend?.setReading(true)
                    session.performBackend(next)
                }
                return
            case .rejected(let failure, let reason):
                refuse(failure, reason)
            case .accepted(let success):
                accepted(success)
            }
        }
    }

    /// Refuses the login. An authentication failure (and a refusal for failed logins) is
    /// answered `auth_failure_delay` after the login command arrived, by a timer: a wrong
    /// password and an unknown user take the same time, and a guesser gets fewer tries.
    private func refuse(_ failure: LoginFailure, _ reason: String, result: ProxyMetrics.LoginResult? = nil,
                        delayed: Bool? = nil) {
        guard state == .loggingIn else { return }
        ProxyMetrics.login(result ?? .init(failure))
        log(.notice, "login refused: \(reason)", metadata: ["method": "\(attempt?.request.method ?? "?")"])
        dropBackend()
        releaseBackendSlot()
        if failure == .authenticationFailed, let user = attempt?.request.credentials.mailboxUser {
            context.admission.loginFailed(address: limitKey, user: user, now: Router.now())
        }
        let loginStartedAt = attempt?.startedAt ?? Router.now()
        attempt = nil
        readOnlyMessage = nil
        logFields.user = nil
        context.registry.update(id) {
            $0.phase = .preLogin; $0.user = nil; $0.backend = nil; $0.backendHost = nil; $0.target = nil; $0.dn = nil
        }
        let wait = (delayed ?? (failure == .authenticationFailed))
            ? loginStartedAt + context.configuration.limits.authFailureDelaySeconds - Router.now() : 0
        guard wait > 0.001 else {
            answerRefusal(failure)
            return
        }
        state = .answeringLater
        refusalTimer = loop.schedule(after: wait) { [weak self] in self?.onLoop { $0.answerRefusal(failure) } }
    }

    private func answerRefusal(_ failure: LoginFailure) {
        guard state == .loggingIn || state == .answeringLater, !closing else { return }
        refusalTimer = nil
        state = .preLogin
        perform(machine?.loginRejected(failure) ?? [])
        if state == .preLogin { client.setReading(true) }
    }

    private func dropBackend() {
        attempt?.cancel()
        backend?.close()
        backend = nil
    }

    private func accepted(_ success: BackendLoginSuccess) {
        guard let backend, let route, let attempt else { return }
        attempt.cancel()
        // Until the relay starts, nothing reads the backend: a level-triggered source left on
        // would fire without end for bytes the store sends meanwhile.
        backend.setReading(false)
        state = .relaying
        guard let (reply, leftover) = machine?.loginAccepted(success) else { return }
        var metadata: Logger.Metadata = ["backend": "\(route.backend)", "host": "\(route.host)",
                                         "method": "\(attempt.request.method)"]
        if let backendTLS = attempt.backendTLS { metadata["backend_tls"] = "\(backendTLS.summary)" }
        if readOnlyMessage != nil { metadata["read_only"] = "true" }
        log(.info, "login ok", metadata: metadata)
        context.admission.loginSucceeded(address: limitKey, user: attempt.request.credentials.mailboxUser, now: Router.now())
        metrics.loggedIn(backend: route.backend)
        context.registry.update(id) { $0.phase = .relaying }
        // What only the login needed goes now, not at the end of a session that may last days.
        self.attempt = nil
        machine = nil
        if listener.service == .imap { responses = ResponseBoundaryObserver() }
        let filter: (any RelayFilter)? = readOnlyMessage.map { message in
            let limits = context.configuration.limits.protocolLimits
            switch listener.service {
            case .imap: return IMAPReadOnlyRelayFilter(IMAPReadOnlyFilter(reason: message, limits: limits))
            case .pop3: return POP3ReadOnlyRelayFilter(POP3ReadOnlyFilter(reason: message, limits: limits))
            }
        }
        let relay = Relay(client: client, backend: backend, bufferBytes: context.configuration.limits.relayBufferBytes,
                          observingBackend: responses, filter: filter) { [unowned self] end, totals in
            relayEnded(end, totals)
        }
        self.relay = relay
        let toClient = reply + success.leftover
        if client.outboxCount == 0 {
            relay.start(toBackend: leftover, toClient: toClient)
        } else {
            // Earlier replies are still queued: the relay's bytes must come after them. The
            // login timer stays armed meanwhile, so a client that never reads is dropped.
            client.onOutboxDrained = { [unowned self] in
                client.onOutboxDrained = nil
                loginTimer?.cancel()
                loginTimer = nil
                self.relay?.start(toBackend: leftover, toClient: toClient)
            }
            return
        }
        loginTimer?.cancel()
        loginTimer = nil
    }

    private func relayEnded(_ end: Relay.End, _ totals: Relay.Totals) {
        let how: String
        switch end {
        case .closed: how = "closed"
        case .error(let message): how = "error: \(message)"
        case .stopped: how = endReason?.rawValue ?? "stopped"
        }
        // One line that says it all: who, from where, through which listener, to which store,
        // for how long, how much each way, and how it ended.
        let seconds = (Double(time(nil)) - startedAt).rounded()
        log(.info, "session ended (\(how))", metadata: [
            "in": "\(totals.clientToBackend)", "out": "\(totals.backendToClient)", "relay": "\(totals.spliced ? "splice" : "copy")",
            "listener": "\(listener.address)", "backend": "\(route?.backend ?? "?")", "host": "\(route?.host ?? "?")",
            "duration": "\(Int(seconds))s",
        ])
        metrics.relayEnded(totals, backend: route?.backend ?? "", proxyReason: endReason)
        relay = nil
        backend = nil
        responses = nil
        finish()
    }

    // MARK: - Ended by the proxy (SessionControl)

    func end(_ reason: SessionEndReason, message: String?) {
        onLoop { $0.endOnLoop(reason, message: message) }
    }

    func traffic(_ completion: @escaping @Sendable (Int, Int) -> Void) {
        onLoop { session in
            let totals = session.relay?.totals
            completion(totals?.clientToBackend ?? 0, totals?.backendToClient ?? 0)
        }
    }

    /// A session still logging in is refused as temporary (it may retry at once and reach
    /// the new route: nothing was lost); a relayed IMAP session gets `* BYE [UNAVAILABLE]` if
    /// the store's stream stands between two responses, and is closed otherwise (a BYE inside
    /// a response or a literal would corrupt it); POP3 is closed, so no QUIT commits a DELE
    /// on the store the user is leaving.
    private func endOnLoop(_ reason: SessionEndReason, message: String?) {
        let text = message ?? Self.defaultText(reason)
        switch state {
        case .closed:
            return
        case .preLogin where reason != .shutdown, .answeringLater where reason != .shutdown:
            return
        case .preLogin, .answeringLater:
            endReason = reason
            client.send(machine?.temporaryGoodbye(text) ?? [])
            closeAfterFlush(reason.rawValue)
        case .loggingIn:
            refuse(.unavailable(text: text), "\(reason.rawValue) during login")
        case .relaying:
            guard let relay else { return }
            endReason = reason
            loginTimer?.cancel()
            if let responses, responses.isAtBoundary, relay.clientCaughtUp {
                let said = relay.stop(sayingToClient: Array("* BYE [UNAVAILABLE] \(LoginFailure.lineText(text))\r\n".utf8))
                log(.debug, "ended (\(reason.rawValue)) \(said ? "with" : "without") BYE")
            } else {
                relay.stop()
            }
        }
    }

    static func defaultText(_ reason: SessionEndReason) -> String {
        switch reason {
        case .routeChange: return "Your mailbox has moved, please reconnect."
        case .hold: return RoutingTable.defaultHoldMessage
        case .kick: return "Disconnected by the administrator, please reconnect."
        case .shutdown: return "Server shutting down, please reconnect."
        }
    }

    // MARK: - Closing

    private func closeAfterFlush(_ reason: String) {
        guard state != .closed else { return }
        closing = true
        refusalTimer?.cancel()
        refusalTimer = nil
        client.setReading(false)
        if client.outboxCount == 0 {
            close(reason)
        } else {
            client.onOutboxDrained = { [unowned self] in close(reason) }
            // A client that never reads must not keep the session forever.
            loop.schedule(after: 5) { [weak self] in self?.onLoop { $0.close(reason) } }
        }
    }

    private func close(_ reason: String) {
        guard state != .closed else { return }
        log(.debug, "closing: \(reason)")
        if let relay {
            relay.stop()   // closes both legs and calls relayEnded
            return
        }
        dropBackend()
        client.close()
        finish()
    }

    private func finish() {
        state = .closed
        metrics.closed(endReason.map(ProxyMetrics.EndReason.init) ?? .client)
        loginTimer?.cancel()
        loginTimer = nil
        refusalTimer?.cancel()
        refusalTimer = nil
        releaseBackendSlot()
        if let address = admittedAddress {
            admittedAddress = nil
            context.admission.releaseConnection(address)
        }
        context.registry.remove(id)
        // The loop may still be running a closure of ours; release on the next turn.
        loop.execute { [self] in selfReference = nil }
    }
}

enum SessionID {
    private static let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")

    /// 15 random characters (75 bits): unique enough to grep logs across store and proxy, and
    /// short enough for a Swift string to hold inline (16 would cost an allocation per session).
    /// Each of the 32 characters takes 5 bits of two 64-bit draws: every draw from the system
    /// generator is a getrandom(2) call, and one per character was 15 system calls per login.
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        var first = generator.next(), second = generator.next()
        return String((0..<15).map { index in
            let value: UInt64
            if index < 12 { value = first & 31; first >>= 5 } else { value = second & 31; second >>= 5 }
            return alphabet[Int(value)]
        })
    }
}

enum LogText {
    /// User-supplied text for a log line: control characters (a CR/LF in a literal user name
    /// could forge log lines) become `\u{..}` escapes.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return text }
        return String(text.unicodeScalars.map { scalar in
            scalar.properties.generalCategory == .control ? scalar.escaped(asASCII: true) : String(scalar)
        }.joined())
    }
}
