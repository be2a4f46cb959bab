#if canImport(Glibc)
import Glibc
#endif
import Configuration
import EventLoop
import MailProtocol
import Routing
import TLS

/// What the store leg tells its session.
protocol StoreLegEvents: AnyObject {
    /// Connected to one of the store's hosts; the login is under way there.
    func storeConnected(backend: String, host: String)
    /// The leg's one verdict. After a refusal the leg has closed what it opened.
    func storeAnswered(_ outcome: StoreLeg.Outcome)
    /// Something worth a warning that does not decide the login (a host name that does not resolve).
    func storeWarning(_ message: String)
}

/// The store's side of one login: resolve the route's hosts, skip the dead ones, connect, tell
/// the store who the client is (a PROXY v2 header, or the login machine's ID or XCLIENT), TLS
/// as the store wants it, and the protocol's store-login machine. One deadline covers the TLS
/// handshake, the greeting and the verdict.
///
/// `@unchecked Sendable`: confined to its session's loop, like the session; the resolver and
/// the deadline call back on that loop.
final class StoreLeg: @unchecked Sendable {
    enum Outcome {
        case accepted(Accepted)
        case refused(LoginRefusal)
    }

    struct Accepted {
        let connection: Connection
        let success: BackendLoginSuccess
        let backendTLS: TLSTransport?
    }

    /// Who the client is, as the store may be told.
    struct Client {
        let address: String
        let port: Int
        /// The address it connected to: the load balancer's from a PROXY header, else ours.
        let connectedTo: (host: String, port: Int)?
        let socket: Int32
        let sessionID: String
        let hopsLeft: Int

        init(_ front: ClientFront, sessionID: String, hopsLeft: Int) {
            address = front.address
            port = front.port
            connectedTo = front.connectedTo
            socket = front.connection.fd
            self.sessionID = sessionID
            self.hopsLeft = hopsLeft
        }

        /// Asked only when the store is to be told (a `getsockname` otherwise saved).
        var local: (host: String, port: Int)? {
            connectedTo ?? Socket.localAddress(of: socket).map { ($0.host, $0.port) }
        }
    }

    private let loop: EventLoop
    private let context: ServiceContext
    private let descriptor: ProtocolDescriptor
    private let backend: Backend
    private let hosts: [HostPort]
    private let credentials: Credentials
    private let client: Client
    private unowned let events: any StoreLegEvents
    /// Backend address (as text) -> the configured host name it came from, for TLS verification.
    private var names: [String: String] = [:]
    private var connector: Connector?
    private var connection: Connection?
    /// The store host's address, for the log and for TLS verification.
    private var peer = "?"
    private var deadline: LoopTimer?
    private var machine: (any BackendLoginMachine)?
    private var tls: TLSTransport?
    /// Set once the verdict is out, or the session let go: nothing more happens.
    private var done = false

    init(loop: EventLoop, context: ServiceContext, descriptor: ProtocolDescriptor, route: LoginRoute,
         credentials: Credentials, client: Client, events: any StoreLegEvents) {
        self.loop = loop
        self.context = context
        self.descriptor = descriptor
        backend = route.backend
        hosts = route.hosts
        self.credentials = credentials
        self.client = client
        self.events = events
    }

    func start() {
        resolve(hosts[...], into: [])
    }

    /// Stops whatever is under way, closing the store's connection unless it was handed over.
    func cancel() {
        done = true
        stopTimers()
        connection?.close()
        connection = nil
    }

    private func stopTimers() {
        deadline?.cancel()
        deadline = nil
        connector?.cancel()
        connector = nil
    }

    private func refuse(_ failure: LoginFailure, _ reason: String, outcome: LoginRefusal.Outcome = .failure) {
        guard !done else { return }
        cancel()
        events.storeAnswered(.refused(LoginRefusal(failure, reason, outcome: outcome)))
    }

    // MARK: - Finding a host

    private func resolve(_ remaining: ArraySlice<HostPort>, into found: [SocketAddress]) {
        guard let host = remaining.first else {
            connect(found)
            return
        }
        // The resolver calls back on this loop.
        Resolver.resolve(host: host.host, port: host.port, on: loop) { [self] result in
            loop.assertOnLoop()
            guard !done else { return }
            if case .failure(let error) = result { events.storeWarning("cannot resolve backend host \(host): \(error)") }
            let addresses = (try? result.get()) ?? []
            for address in addresses { names[address.description] = host.host }
            resolve(remaining.dropFirst(), into: found + addresses)
        }
    }

    private func connect(_ addresses: [SocketAddress]) {
        guard !addresses.isEmpty else {
            ProxyMetrics.backendUnreachable(backend, hosts)
            refuse(.temporary, "backend \(backend.name): no address for \(hosts.map(\.description).joined(separator: ", "))")
            return
        }
        // A store address that is one of our own listeners sends the login straight back
        // here: a loop (longer ones, through other proxies, run out of x-proxy-ttl).
        if let own = addresses.first(where: { Self.isListener($0, of: context.configuration.listeners) }) {
            refuse(.temporary, "backend \(backend.name): \(own) is this proxy's own listener (a routing loop)")
            return
        }
        // Dead hosts are skipped until a retry is due; with none left, fail now rather than
        // after a connect timeout.
        let byText = Dictionary(addresses.map { ($0.description, $0) }, uniquingKeysWith: { first, _ in first })
        let ordered = context.backendHosts.usable(addresses.map(\.description), now: Router.now()).compactMap { byText[$0] }
        guard !ordered.isEmpty else {
            ProxyMetrics.backendUnreachable(backend, hosts)
            refuse(.temporary, "backend \(backend.name): every host is down (\(addresses.map(\.description).joined(separator: ", ")))")
            return
        }
        // A store behind implicit TLS, or waiting for our PROXY header, says nothing first.
        let connector = Connector(loop: loop, addresses: ordered, timeout: context.configuration.limits.backendConnectTimeoutSeconds,
                                  peerSpeaksFirst: backend.tls != .implicit && backend.forwardClient != .proxyV2) { [self] result in
            let address = self.connector?.connectedAddress
            self.connector = nil
            guard !done else {
                if case .success(let connection) = result { connection.close() }
                return
            }
            switch result {
            case .failure(let error):
                ProxyMetrics.backendUnreachable(backend, hosts)
                refuse(.temporary, "backend \(backend.name) unreachable: \(error)")
            case .success(let connection):
                connected(connection, to: address)
            }
        }
        connector.onAttempt = { [context, backend] address, error in
            if let error {
                guard error.saysHostIsDown else { return }
                context.backendHosts.failed(address.description, backend: backend.name, error: "\(error)", now: Router.now())
            } else {
                context.backendHosts.succeeded(address.description, backend: backend.name)
            }
        }
        self.connector = connector
        connector.start()
    }

    /// Exactly a listener's address, or a loopback address on a wildcard listener's port (a
    /// store elsewhere on the same port is no loop).
    static func isListener(_ address: SocketAddress, of listeners: [ListenerConfiguration]) -> Bool {
        let loopback = address.host.hasPrefix("127.") || address.host == "::1"
        return listeners.contains { listener in
            listener.address.port == address.port
                && (listener.address.host == address.host || (loopback && ["0.0.0.0", "::"].contains(listener.address.host)))
        }
    }

    // MARK: - Logging in

    private func connected(_ connection: Connection, to address: SocketAddress?) {
        self.connection = connection
        peer = (address ?? Socket.peerAddress(of: connection.fd))?.description ?? "?"
        events.storeConnected(backend: backend.name, host: peer)
        connection.onError = { [unowned self] error in refuse(.temporary, "backend write failed: \(error)") }
        if backend.forwardClient == .proxyV2 { connection.send(proxyV2Header()) }
        deadline = loop.schedule(after: context.configuration.limits.backendLoginTimeoutSeconds) { [weak self] in
            self?.loop.execute { [weak self] in
                self?.refuse(.temporary, "backend did not answer the login in time", outcome: .timeout)
            }
        }
        guard backend.tls == .implicit else {
            startLogin(connection)
            return
        }
        handshake(connection) { $0.startLogin(connection) }
    }

    /// The PROXY v2 header for the store: the client as we know it, and the address it
    /// connected to. First on the connection, before any TLS.
    private func proxyV2Header() -> [UInt8] {
        guard let source = IPAddress(client.address), let local = client.local, let destination = IPAddress(local.host),
              let sourcePort = UInt16(exactly: client.port), let destinationPort = UInt16(exactly: local.port) else {
            return ProxyProtocol.encodeV2Local()
        }
        return ProxyProtocol.encodeV2(source: source, sourcePort: sourcePort, destination: destination,
                                      destinationPort: destinationPort)
    }

    private func startLogin(_ connection: Connection) {
        let local = backend.forwardClient == .none ? nil : client.local
        let endpoint = backend.forwardClient == .none
            ? nil
            : ClientEndpoint(remoteAddress: client.address, remotePort: client.port, localAddress: local?.host ?? "",
                             localPort: local?.port ?? 0, sessionID: client.sessionID, ttl: client.hopsLeft)
        machine = descriptor.makeBackendLogin(.init(credentials: credentials, client: endpoint,
                                                    startTLS: backend.tls == .starttls,
                                                    limits: context.configuration.limits.protocolLimits))
        connection.onReadable = { [unowned self] in readable() }
        connection.setReading(true)
    }

    private func readable() {
        guard let connection, !done else { return }
        let result: IOResult
        let buffer: UnsafeMutableRawBufferPointer
        do {
            (result, buffer) = try connection.readIntoScratch(max: 16_384)
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
            guard var machine else { return }
            let actions = machine.receive(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            self.machine = machine
            perform(actions)
        }
    }

    private func perform(_ actions: [BackendAction]) {
        for action in BackendAction.effective(actions) {
            guard !done, let connection else { return }
            switch action {
            case .send(let bytes):
                connection.send(bytes)
            case .startTLS:
                handshake(connection) { leg in
                    guard var machine = leg.machine else { return }
                    let next = machine.tlsEstablished()
                    leg.machine = machine
                    connection.onReadable = { [unowned leg] in leg.readable() }
                    connection.setReading(true)
                    leg.perform(next)
                }
                return
            case .rejected(let failure, let reason):
                refuse(failure, reason)
            case .accepted(let success):
                accepted(success)
            }
        }
    }

    private func accepted(_ success: BackendLoginSuccess) {
        guard let connection else { return }
        done = true
        stopTimers()
        // Until the relay starts, nothing reads the store: a level-triggered source left on
        // would fire without end for bytes the store sends meanwhile.
        connection.setReading(false)
        connection.onReadable = nil
        connection.onError = nil
        self.connection = nil
        events.storeAnswered(.accepted(Accepted(connection: connection, success: success, backendTLS: tls)))
    }

    /// Credentials go to a store only after its certificate passed verification: a failed
    /// handshake refuses the login as temporary, with the reason in the log.
    private func handshake(_ connection: Connection, then next: @escaping (StoreLeg) -> Void) {
        connection.setReading(false)
        guard let context = context.tls.backends[backend.name],
              let transport = context.makeTransport(fd: connection.fd,
                                                    host: names[peer] ?? Socket.peerAddress(of: connection.fd)?.host ?? "") else {
            refuse(.temporary, "backend \(backend.name): no TLS context")
            return
        }
        TLSHandshake.run(on: connection, transport: transport) { [unowned self] result in
            guard !done else { return }
            switch result {
            case .failure(let error):
                refuse(.temporary, "backend \(backend.name) at \(peer): TLS: \(error)")
            case .success(let transport):
                tls = transport
                next(self)
            }
        }
    }
}
