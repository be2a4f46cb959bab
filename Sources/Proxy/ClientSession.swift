#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import Logging
import MailProtocol
import Routing
import TLS

/// One client from accept to close. It wires the pieces of the login path and keeps the books
/// (the registry, the metrics, the log); every decision is made in a piece it wires:
///
///     ClientFront ──login──▶ LoginGate ──admit──▶ StoreLeg ──accepted──▶ Relay
///     (PROXY header, TLS,    (hop count, failed   (resolve, host health,  (bytes both ways;
///      pre-login machine)     logins, holds,       connect, TLS, the       SessionEnding says
///                             route, slots)        store's login machine)  how the proxy ends it)
///
/// The protocol comes in as a `ProtocolDescriptor`: nothing here switches on it.
///
/// `@unchecked Sendable`: every mutable member is confined to `loop.queue`; callbacks from the
/// directory hop back there before touching anything (`onLoop`).
final class ClientSession: SessionControl, @unchecked Sendable {
    let id: String
    private let loop: EventLoop
    private let client: Connection
    private let listener: ListenerConfiguration
    private let context: ServiceContext
    private var fields: SessionLog
    private var phase = SessionPhase.preLogin
    /// Until the store accepts the login.
    private var front: ClientFront?
    /// From the login command to the verdict.
    private var attempt: LoginAttempt?
    /// Which login of this connection a directory answer belongs to: a login refused while its
    /// lookup was out (a kick) must not have that answer applied to the client's next login.
    private var loginGeneration = 0
    private var loginTimer: LoopTimer?
    private var refusalTimer: LoopTimer?
    /// Once the store accepted the login.
    private var relayed: RelayLeg?
    /// The store's name and the address the session is connected to.
    private var route: (backend: String, host: String)?
    /// Set when the proxy ends the session (a move, a hold, a kick), for the log.
    private var endReason: SessionEndReason?
    /// Set once the session is on its way out: nothing may start again.
    private var closing = false
    private var selfReference: ClientSession?   // alive while open; dropped on close
    private let startedAt = Double(time(nil))
    private var books = SessionBooks()

    init(fd: Int32, peer: SocketAddress, loop: EventLoop, listener: ListenerConfiguration, context: ServiceContext) {
        id = SessionID.make()
        self.loop = loop
        client = Connection(fd: fd, loop: loop)
        self.listener = listener
        self.context = context
        fields = SessionLog(client: "\(peer)")
        let limits = context.configuration.limits.protocolLimits
        let machine = listener.service.descriptor.makePreLogin(.init(
            offersStartTLS: listener.tls == .starttls, allowsPlaintextLogin: !listener.requireTLS, limits: limits,
            secure: listener.tls == .implicit))
        front = ClientFront(connection: client, peer: peer, machine: machine, tls: context.tls.servers[listener.service],
                            backlogLimit: limits.lineLength * 2, events: self)
    }

    private var descriptor: ProtocolDescriptor { listener.service.descriptor }

    private var gate: LoginGate {
        LoginGate(routing: context.configuration.routing, maxSessionsPerUser: context.configuration.limits.maxSessionsPerUser,
                  service: listener.service)
    }

    /// Per-address limits and failure counters count the client by this.
    private var limitKey: String { NetworkPrefix.limitKey(for: front?.address ?? "") }

    func start() {
        loop.assertOnLoop()
        selfReference = self
        client.onError = { [unowned self] error in close("client write failed: \(error)") }
        // The login timeout covers the PROXY header and the TLS handshake too: a client that
        // connects and says nothing is dropped either way.
        loginTimer = loop.schedule(after: context.configuration.limits.loginTimeoutSeconds) { [weak self] in
            self?.onLoop { $0.loginTimedOut() }
        }
        guard listener.proxyProtocol, let front else { return clientIntroduced() }
        guard front.readProxyHeader(from: context.configuration.trustedProxies) else {
            context.admission.untrustedProxy(front.address)
            return close("\(front.address) is not in trusted_proxies")
        }
    }

    /// Runs `body` on this session's loop if it is still open.
    private func onLoop(_ body: @escaping @Sendable (ClientSession) -> Void) {
        loop.execute { [self] in
            guard phase != .closed else { return }
            body(self)
        }
    }

    private func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
                     metadata: @autoclosure () -> Logger.Metadata? = nil) {
        fields.write(context.logger, session: id, level, message(), metadata: metadata())
    }

    private func loginTimedOut() {
        if phase == .relaying, let relayed {
            // The store accepted, but the client never read the replies before it.
            log(.notice, "client did not read its login reply in time")
            relayed.relay.stop()
            return
        }
        guard phase == .preLogin || phase == .loggingIn || phase == .answeringLater else { return }
        if phase == .loggingIn { ProxyMetrics.login(.timeout) }
        ProxyMetrics.limitReached(.loginTimeout)
        front?.goodbye("Disconnected for inactivity.")
        closeAfterFlush("login timeout")
    }

    // MARK: - Login: the gate's verdicts

    func clientAsksLogin(_ request: LoginRequest) {
        phase = .loggingIn
        loginGeneration += 1
        books.releaseStoreSlot(context)   // never two at once
        let now = Router.now()
        let attempt = LoginAttempt(request: request, startedAt: now, hopsLeft: LoginGate.hopsLeft(after: request.proxyTTL) ?? 0)
        self.attempt = attempt
        fields.user = LogText.escaped(attempt.user)
        context.registry.update(id) { $0.user = attempt.user; $0.phase = .loggingIn }
        follow(gate.begin(request, address: limitKey, now: now, ledger: context))
    }

    private func follow(_ verdict: LoginVerdict) {
        switch verdict {
        case .refuse(let refusal): refuse(refusal)
        case .lookUp: lookUp()
        case .admit(let route): admitted(route)
        }
    }

    private func lookUp() {
        guard let user = attempt?.user else { return }
        // A cached route answers here and now, on this loop; a miss comes back through onLoop.
        let generation = loginGeneration
        if let answer = context.router.route(user, completion: { [self] answer in
            onLoop { session in if session.loginGeneration == generation { session.routed(answer) } }
        }) {
            routed(answer)
        }
    }

    private func routed(_ answer: RouteAnswer) {
        guard phase == .loggingIn, let attempt else { return }
        let verdict = gate.routed(answer, user: attempt.user, now: Router.now(), ledger: context)
        if case .admit(let route) = verdict, route.readOnlyMessage == nil, case .stale(let age) = answer.source {
            log(.notice, "directory unavailable: using a cached route \(Int(age))s old")
        }
        follow(verdict)
    }

    private func admitted(_ route: LoginRoute) {
        guard let attempt, let front else { return }
        if route.holdsStoreSlot { books.holdStoreSlot(route.backend.name) }
        context.registry.update(id) { $0.target = route.target; $0.dn = route.dn }
        log(route.readOnlyMessage == nil ? .debug : .info, "route: \(route.why)")
        attempt.route = route
        let client = StoreLeg.Client(address: front.address, port: front.port, connectedTo: front.connectedTo,
                                     socket: self.client.fd, sessionID: id, hopsLeft: attempt.hopsLeft)
        let store = StoreLeg(loop: loop, context: context, descriptor: descriptor, route: route,
                             credentials: attempt.request.credentials, client: client, events: self)
        attempt.store = store
        store.start()
    }

    /// Refuses the login: at once, or `auth_failure_delay` after the login command arrived.
    private func refuse(_ refusal: LoginRefusal) {
        guard phase == .loggingIn else { return }
        ProxyMetrics.login(.init(refusal))
        if let limit = refusal.limit { ProxyMetrics.limitReached(.init(limit)) }
        log(.notice, "login refused: \(refusal.reason)", metadata: ["method": "\(attempt?.request.method ?? "?")"])
        attempt?.store?.cancel()
        books.releaseStoreSlot(context)
        if refusal.countsAsFailedLogin, let user = attempt?.user {
            context.admission.loginFailed(address: limitKey, user: user, now: Router.now())
        }
        let loginStartedAt = attempt?.startedAt ?? Router.now()
        attempt = nil
        fields.user = nil
        books.loginEnded(id, context)
        guard let wait = refusal.answerDelay(loginStartedAt: loginStartedAt, now: Router.now(),
                                             authFailureDelay: context.configuration.limits.authFailureDelaySeconds) else {
            return answerRefusal(refusal.failure)
        }
        phase = .answeringLater
        refusalTimer = loop.schedule(after: wait) { [weak self] in self?.onLoop { $0.answerRefusal(refusal.failure) } }
    }

    private func answerRefusal(_ failure: LoginFailure) {
        guard phase == .loggingIn || phase == .answeringLater, !closing else { return }
        refusalTimer = nil
        phase = .preLogin
        front?.loginRefused(failure)
    }

    // MARK: - Relayed

    private func accepted(_ accepted: StoreLeg.Accepted) {
        guard let attempt, let front, let route, let (reply, leftover) = front.loginAccepted(accepted.success) else {
            accepted.connection.close()
            return
        }
        phase = .relaying
        let readOnly = attempt.route?.readOnlyMessage
        log(.info, "login ok", metadata: SessionLog.loginOK(route, method: attempt.request.method,
                                                          storeTLS: accepted.backendTLS?.summary, readOnly: readOnly != nil))
        context.admission.loginSucceeded(address: limitKey, user: attempt.user, now: Router.now())
        books.metrics.loggedIn(backend: route.backend)
        context.registry.update(id) { $0.phase = .relaying }
        // What only the login needed goes now, not at the end of a session that may last days.
        self.attempt = nil
        front.handOver()
        self.front = nil
        let relayed = RelayLeg(client: client, store: accepted.connection, descriptor: descriptor, readOnlyMessage: readOnly,
                               limits: context.configuration.limits) { [unowned self] end, totals in relayEnded(end, totals) }
        self.relayed = relayed
        relayed.start(client: client, toBackend: leftover, toClient: reply + accepted.success.leftover) { [unowned self] in
            loginTimer?.cancel()
            loginTimer = nil
        }
    }

    private func relayEnded(_ end: Relay.End, _ totals: Relay.Totals) {
        log(.info, "session ended (\(SessionLog.how(end, endReason)))",
            metadata: SessionLog.ended(totals, listener: listener.address.description, route: route, since: startedAt))
        books.metrics.relayEnded(totals, backend: route?.backend ?? "", proxyReason: endReason)
        relayed = nil
        finish()
    }

    // MARK: - Ended by the proxy (SessionControl)

    func end(_ reason: SessionEndReason, message: String?) {
        onLoop { $0.endOnLoop(reason, message: message) }
    }

    func traffic(_ completion: @escaping @Sendable (Int, Int) -> Void) {
        onLoop { session in
            let totals = session.relayed?.relay.totals
            completion(totals?.clientToBackend ?? 0, totals?.backendToClient ?? 0)
        }
    }

    private func endOnLoop(_ reason: SessionEndReason, message: String?) {
        let ending = SessionEnding.decide(reason, message: message, phase: phase, relayGoodbye: descriptor.relayGoodbye,
                                          atResponseBoundary: relayed?.atResponseBoundary ?? false,
                                          clientCaughtUp: relayed?.clientCaughtUp ?? false)
        switch ending {
        case .ignore:
            return
        case .goodbyeBeforeLogin(let text):
            endReason = reason
            front?.temporaryGoodbye(text)
            closeAfterFlush(reason.rawValue)
        case .refuseLogin(let refusal):
            refuse(refusal)
        case .goodbyeAndClose, .close:
            endReason = reason
            loginTimer?.cancel()
            let said = relayed?.end(ending) ?? false
            log(.debug, "ended (\(reason.rawValue)) \(said ? "with" : "without") BYE")
        }
    }

    // MARK: - Closing

    private func closeAfterFlush(_ reason: String) {
        guard phase != .closed else { return }
        closing = true
        refusalTimer?.cancel()
        refusalTimer = nil
        front?.stopConversing()
        client.setReading(false)
        guard client.outboxCount > 0 else { return close(reason) }
        client.onOutboxDrained = { [unowned self] in close(reason) }
        // A client that never reads must not keep the session forever.
        loop.schedule(after: 5) { [weak self] in self?.onLoop { $0.close(reason) } }
    }

    private func close(_ reason: String) {
        guard phase != .closed else { return }
        log(.debug, "closing: \(reason)")
        if let relayed {
            relayed.relay.stop()   // closes both legs and calls relayEnded
            return
        }
        attempt?.store?.cancel()
        client.close()
        finish()
    }

    private func finish() {
        phase = .closed
        loginTimer?.cancel()
        loginTimer = nil
        refusalTimer?.cancel()
        refusalTimer = nil
        books.close(id, reason: endReason.map(ProxyMetrics.EndReason.init) ?? .client, context)
        // The loop may still be running a closure of ours; release on the next turn.
        loop.execute { [self] in selfReference = nil }
    }
}

extension ClientSession: ClientFrontEvents {
    func clientIntroduced() {
        guard let front else { return }
        if front.cameThroughProxy {
            fields.via = fields.client   // the proxy's own address
            fields.client = front.endpoint
        }
        let entry = SessionRegistry.Entry(id: id, listener: listener, client: front.endpoint, startedAt: startedAt)
        if let refusal = books.open(entry, control: self, address: limitKey, listener: listener, context: context) {
            // The protocol's goodbye in plaintext, even on an implicit-TLS listener: a
            // handshake costs more than the refusal is worth, and the client only sees a
            // failed handshake either way.
            front.temporaryGoodbye(refusal.clientText)
            return closeAfterFlush(refusal.rawValue)
        }
        front.greet(afterHandshake: listener.tls == .implicit)
    }

    func clientTLS(_ result: Result<TLSTransport, TLSHandshakeError>, attemptedVersion: String) {
        switch result {
        case .failure(let error):
            books.metrics.tlsFailed(attemptedVersion)
            close("client TLS handshake failed: \(error)")
        case .success(let transport):
            fields.tls = transport.summary
            books.metrics.tlsEstablished(transport.version)
            context.registry.update(id) { $0.tls = transport.version }
            if let name = transport.serverName { fields.sni = LogText.escaped(name) }
        }
    }

    func clientFinished(limit: ProtocolLimit?) {
        guard let limit else { return closeAfterFlush("client logged out or was refused") }
        ProxyMetrics.limitReached(.init(limit))
        log(.notice, "closing: \(limit.rawValue) reached before login")
        closeAfterFlush(limit.rawValue)
    }

    func clientFailed(_ reason: String) { close(reason) }

    func clientSentInvalidProxyHeader(_ why: String) {
        log(.notice, "invalid PROXY header from \(fields.client): \(why)")
        close("invalid PROXY header")
    }
}

extension ClientSession: StoreLegEvents {
    func storeConnected(backend: String, host: String) {
        route = (backend, host)
        context.registry.update(id) { $0.backend = backend; $0.backendHost = host }
    }

    func storeAnswered(_ outcome: StoreLeg.Outcome) {
        switch outcome {
        case .refused(let refusal): refuse(refusal)
        case .accepted(let accepted): self.accepted(accepted)
        }
    }

    func storeWarning(_ message: String) {
        log(.warning, "\(message)")
    }
}
