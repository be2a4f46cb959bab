#if canImport(Glibc)
import Glibc
#endif
import Configuration
import EventLoop
import Logging
import MailProtocol
import Routing
import TLS

/// One client from accept to close: a `ClientFront` until the login, a `LoginAttempt` per
/// login command (the `LoginGate`'s verdicts, then a `StoreLeg`), a `RelayLeg` once the store
/// accepted; `SessionEnding` says how the proxy ends it, `SessionBooks` keep the shared counts.
/// The session wires them and makes no decision of its own; the protocol comes in as a
/// `ProtocolDescriptor`, and nothing here switches on it.
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
    private var front: ClientFront?
    private var attempt: LoginAttempt?
    private var loginTimer: LoopTimer?
    private var refusalTimer: LoopTimer?
    private var relayed: RelayLeg?
    /// Set when the proxy ends the session (a move, a hold, a kick), for the log.
    private var endReason: SessionEndReason?
    /// Set once the session is on its way out: nothing may start again.
    private var closing = false
    /// `login_timeout` ran out while a refusal waited for its delayed answer.
    private var closeAfterAnswer = false
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
        front = ClientFront(connection: client, peer: peer, listener: listener, context: context, events: self)
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
        let seconds = context.configuration.limits.loginTimeoutSeconds
        switch LoginTimeout.decide(phase, waitingForStore: attempt?.route != nil, seconds: seconds) {
        case .ignore:
            return
        case .inactive:
            ProxyMetrics.limitReached(.loginTimeout)
            front?.goodbye("Disconnected for inactivity.")
            closeAfterFlush("login timeout")
        case .refuseLogin(let refusal):
            loginRefused(refusal)
            closeAfterFlush("login timeout, waiting for the store")
        case .closeAfterAnswer:
            closeAfterAnswer = true
        case .clientNeverRead:
            log(.notice, "client did not read its login reply in time")
            relayed?.relay.stop()
        }
    }

    // MARK: - Login: the gate's verdicts

    func clientAsksLogin(_ request: LoginRequest) {
        guard let front else { return }
        phase = .loggingIn
        let attempt = LoginAttempt(request: request, startedAt: Router.now(), loop: loop, context: context,
                                   service: listener.service, client: (front, id), events: self)
        self.attempt = attempt
        fields.user = LogText.escaped(attempt.user)
        books.loginBegan(id, user: attempt.user, context)
        attempt.start(address: limitKey)
    }

    /// Refuses the login: at once, or `auth_failure_delay` after the login command arrived.
    func loginRefused(_ refusal: LoginRefusal) {
        guard phase == .loggingIn else { return }
        log(.notice, "login refused: \(refusal.reason)", metadata: ["method": "\(attempt?.request.method ?? "?")"])
        attempt?.cancel()
        let now = Router.now()
        books.loginRefused(refusal, id, user: attempt?.failureKey, address: limitKey, now: now, context)
        let wait = refusal.answerDelay(loginStartedAt: attempt?.startedAt ?? now, now: now,
                                       authFailureDelay: context.configuration.limits.authFailureDelaySeconds)
        attempt = nil
        fields.user = nil
        guard let wait else {
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
        if closeAfterAnswer { closeAfterFlush("login timeout") }
    }

    // MARK: - Relayed

    func loginAccepted(_ accepted: StoreLeg.Accepted) {
        guard let attempt, let front, let route = books.store, let (reply, leftover) = front.loginAccepted(accepted.success) else {
            accepted.connection.close()
            return
        }
        phase = .relaying
        let readOnly = attempt.route?.readOnlyMessage
        log(.info, "login ok", metadata: SessionLog.loginOK(route, method: attempt.request.method,
                                                          storeTLS: accepted.backendTLS?.summary, readOnly: readOnly != nil))
        books.loginAccepted(id, user: attempt.failureKey, address: limitKey, backend: route.backend, now: Router.now(), context)
        // What only the login needed goes now, not at the end of a session that may last days.
        self.attempt = nil
        front.handOver()
        self.front = nil
        let relayed = RelayLeg(client: client, store: accepted.connection, descriptor: listener.service.descriptor, readOnlyMessage: readOnly,
                               limits: context.configuration.limits) { [unowned self] end, totals in relayEnded(end, totals) }
        self.relayed = relayed
        relayed.start(client: client, toBackend: leftover, toClient: reply + accepted.success.leftover) { [unowned self] in
            loginTimer.cancelAndForget()
        }
    }

    private func relayEnded(_ end: Relay.End, _ totals: Relay.Totals) {
        log(.info, "session ended (\(SessionLog.how(end, endReason)))",
            metadata: SessionLog.ended(totals, listener: listener.address.description, route: books.store, since: startedAt))
        books.metrics.relayEnded(totals, backend: books.store?.backend ?? "", proxyReason: endReason)
        relayed = nil
        finish()
    }

    // MARK: - Ended by the proxy (SessionControl)

    func end(_ reason: SessionEndReason, message: String?) {
        onLoop { $0.endOnLoop(reason, message: message) }
    }

    func traffic(_ completion: @escaping @Sendable (Int, Int) -> Void) {
        onLoop { completion($0.relayed?.relay.totals.clientToBackend ?? 0, $0.relayed?.relay.totals.backendToClient ?? 0) }
    }

    private func endOnLoop(_ reason: SessionEndReason, message: String?) {
        let ending = SessionEnding.decide(reason, message: message, phase: phase, relayGoodbye: listener.service.descriptor.relayGoodbye,
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
            loginRefused(refusal)
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
        refusalTimer.cancelAndForget()
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
        attempt?.cancel()
        client.close()
        finish()
    }

    private func finish() {
        phase = .closed
        loginTimer.cancelAndForget()
        refusalTimer.cancelAndForget()
        books.close(id, reason: endReason.map(ProxyMetrics.EndReason.init) ?? .client, context)
        // The loop may still be running a closure of ours; release on the next turn.
        loop.execute { [self] in selfReference = nil }
    }
}

extension ClientSession: ClientFrontEvents {
    func clientIntroduced() {
        guard let front else { return }
        if front.cameThroughProxy { fields.cameThrough(to: front.endpoint) }
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
            fields.tls(transport)
            books.clientTLS(transport.version, id, context)
        }
    }

    func clientFinished(limit: ProtocolLimit?) {
        guard let limit else { return closeAfterFlush("client logged out or was refused") }
        ProxyMetrics.limitReached(.init(limit))
        log(.notice, "closing: \(limit.rawValue) reached before login")
        closeAfterFlush(limit.rawValue)
    }

    func clientFailed(_ reason: String, notice: String?) {
        if let notice { log(.notice, "\(notice)") }
        close(reason)
    }
}

extension ClientSession: LoginAttemptEvents {
    func loginAdmitted(_ route: LoginRoute) {
        books.loginAdmitted(route, id, context)
        log(route.readOnlyMessage == nil ? .debug : .info, "route: \(route.why)")
    }

    func loginConnected(backend: String, host: String) { books.loginConnected(id, backend: backend, host: host, context) }

    func loginNote(_ level: Logger.Level, _ message: String) { log(level, "\(message)") }
}
