import Configuration
import MailProtocol
import Routing

/// What one session owes the books every session shares: the connection it counts against
/// `max_connections(_per_ip)`, the store slot it holds, its registry entry and its share of
/// the metrics. Everything taken is given back once, at `close`. A value inside its session;
/// confined to the session's loop.
struct SessionBooks {
    var metrics = SessionMetrics()
    /// The address the connection was counted under, once admitted.
    private var admittedAddress: String?
    /// The store whose session slot and login token the session holds (`max_sessions`).
    private var storeSlot: String?
    /// The store's name and the address the session is connected to, for the log and metrics.
    private(set) var store: (backend: String, host: String)?

    /// Counts the connection and registers the session, or says which limit refused it (the
    /// session is then not counted anywhere).
    mutating func open(_ entry: SessionRegistry.Entry, control: any SessionControl, address: String,
                       listener: ListenerConfiguration, context: ServiceContext) -> ConnectionBudget.Refusal? {
        if let refusal = context.admission.admitConnection(address, limits: context.configuration.limits) { return refusal }
        admittedAddress = address
        context.registry.register(entry, control: control)
        metrics.opened(listener)
        return nil
    }

    mutating func clientTLS(_ version: String, _ id: String, _ context: ServiceContext) {
        metrics.tlsEstablished(version)
        context.registry.update(id) { $0.tls = version }
    }

    /// The gate admitted the login: the store slot it took, and where the session goes.
    mutating func loginAdmitted(_ route: LoginRoute, _ id: String, _ context: ServiceContext) {
        if route.holdsStoreSlot { storeSlot = route.backend.name }
        context.registry.update(id) { $0.target = route.target; $0.dn = route.dn }
    }

    mutating func releaseStoreSlot(_ context: ServiceContext) {
        guard let name = storeSlot else { return }
        storeSlot = nil
        context.admission.releaseBackend(named: name)
    }

    mutating func loginBegan(_ id: String, user: String, _ context: ServiceContext) {
        releaseStoreSlot(context)   // never two at once
        context.registry.update(id) { $0.user = user; $0.phase = .loggingIn }
    }

    /// Counts the refusal and gives back what the login took; the registry entry goes back to
    /// where it was before the login.
    mutating func loginRefused(_ refusal: LoginRefusal, _ id: String, user: String?, address: String, now: Double,
                               _ context: ServiceContext) {
        ProxyMetrics.login(.init(refusal))
        if let limit = refusal.limit { ProxyMetrics.limitReached(.init(limit)) }
        releaseStoreSlot(context)
        if refusal.countsAsFailedLogin, let user { context.admission.loginFailed(address: address, user: user, now: now) }
        context.registry.update(id) {
            $0.phase = .preLogin; $0.user = nil; $0.backend = nil; $0.backendHost = nil; $0.target = nil; $0.dn = nil
        }
    }

    mutating func loginConnected(_ id: String, backend: String, host: String, _ context: ServiceContext) {
        store = (backend, host)
        context.registry.update(id) { $0.backend = backend; $0.backendHost = host }
    }

    mutating func loginAccepted(_ id: String, user: String, address: String, backend: String, now: Double,
                                _ context: ServiceContext) {
        context.admission.loginSucceeded(address: address, user: user, now: now)
        metrics.loggedIn(backend: backend)
        context.registry.update(id) { $0.phase = .relaying }
    }

    mutating func close(_ id: String, reason: ProxyMetrics.EndReason, _ context: ServiceContext) {
        metrics.closed(reason)
        releaseStoreSlot(context)
        if let address = admittedAddress {
            admittedAddress = nil
            context.admission.releaseConnection(address)
        }
        context.registry.remove(id)
    }
}

extension SessionRegistry.Entry {
    /// A session just accepted: before its login.
    init(id: String, listener: ListenerConfiguration, client: String, startedAt: Double) {
        self.init(id: id, service: listener.service.rawValue, listener: listener.address.description, client: client, tls: nil,
                  user: nil, backend: nil, backendHost: nil, phase: .preLogin, startedAt: startedAt, target: nil, dn: nil)
    }
}
