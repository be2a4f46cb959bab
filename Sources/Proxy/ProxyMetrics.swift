import Configuration
import Dispatch
import Directory
import EventLoop
import MailProtocol
import Metrics
import class Prometheus.PrometheusCollectorRegistry
import struct Prometheus.PrometheusMetricsFactory
import Routing
import Synchronization

/// Everything mailswitch records, with swift-metrics, into one Prometheus registry that
/// `MetricsServer` renders on `/metrics`. Without `metrics.address` nothing is bootstrapped
/// and every handle below is swift-metrics' no-op.
///
/// Labels are bounded by the configuration (listeners, backends, directory URIs) or by small
/// fixed sets; a user name is never a label. Literal `host:port` routes from the directory
/// appear as backends under that name, as in the logs.
///
/// Cost: counters and gauges are atomics (swift-prometheus), the two histograms take a short
/// lock per login or LDAP search, and a labelled handle is looked up in a small cache under a
/// lock at most five times per session (accept, TLS, login, and the two byte counters at its
/// end); nothing is recorded per relayed byte. Bytes relayed are counted when a session ends,
/// from the relay's totals.
public enum ProxyMetrics {
    /// The registry `/metrics` renders.
    public static let registry = PrometheusCollectorRegistry()

    /// Makes swift-metrics record into `registry`. Call once, before anything records (before
    /// the directory and the server are made), and only when metrics are served. The series
    /// the configuration names are created at zero, so that a first scrape shows them all.
    public static func bootstrap(_ configuration: ServiceConfiguration) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            Name.loginDuration: [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                                 .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                 .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(15)],
            DirectoryMetrics.lookupDurationName: [.microseconds(250), .microseconds(500), .milliseconds(1),
                                                  .milliseconds(2), .milliseconds(5), .milliseconds(10),
                                                  .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                                  .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(3)],
        ]
        MetricsSystem.bootstrap(factory)

        _ = loginDuration
        _ = feedState
        _ = feedChanges
        LoginResult.allCases.forEach { _ = logins[$0] }
        CacheResult.allCases.forEach { _ = routeCache[$0] }
        if configuration.routing.credentialCheck.isOn { PasswordCheckResult.allCases.forEach { _ = passwordChecks[$0] } }
        if configuration.routing.credentialCheck.introspectionURL != nil { TokenCheckResult.allCases.forEach { _ = tokenChecks[$0] } }
        EndReason.allCases.forEach { _ = sessionsEnded[$0] }
        Limit.allCases.forEach { _ = limitRefusals[$0] }
        for version in ["TLSv1.2", "TLSv1.3"] { _ = tlsHandshakes(version, "ok") }
        _ = tlsHandshakes("unknown", "failed")
        for listener in configuration.listeners {
            _ = sessionsOpen(listener.address.description, listener.service.rawValue, "none", "")
        }
        for backend in configuration.routing.backends.values {
            _ = relayBytes("client_to_store", backend.name)
            _ = relayBytes("store_to_client", backend.name)
            for service in MailService.allCases where !backend.hosts(for: service).isEmpty {
                _ = backendConnectErrors(backend.name, hostsLabel(backend.hosts(for: service)))
                // Numeric addresses are known before any connect: up until one fails.
                for host in backend.hosts(for: service) {
                    if let address = SocketAddress(numericHost: host.host, port: host.port) {
                        backendHostUp(backend.name, address.description).record(1)
                    }
                }
            }
        }
        DirectoryMetrics.register(servers: configuration.directory.uris)
    }

    enum Name {
        static let sessionsOpen = "mailswitch_sessions_open"
        static let logins = "mailswitch_logins_total"
        static let loginDuration = "mailswitch_login_duration_seconds"
        static let routeCache = "mailswitch_route_cache_total"
        static let feedState = "mailswitch_change_feed_state"
        static let feedChanges = "mailswitch_change_feed_changes_total"
        static let backendConnectErrors = "mailswitch_backend_connect_errors_total"
        static let relayBytes = "mailswitch_relay_bytes_total"
        static let sessionsEnded = "mailswitch_sessions_ended_total"
        static let tlsHandshakes = "mailswitch_tls_handshakes_total"
        static let limitRefusals = "mailswitch_limit_refusals_total"
        static let backendHostUp = "mailswitch_backend_host_up"
        static let passwordChecks = "mailswitch_password_checks_total"
        static let tokenChecks = "mailswitch_token_checks_total"
    }

    // MARK: - Fixed label sets

    /// How a login attempt ended (one per LOGIN/AUTHENTICATE/USER+PASS that reached routing).
    enum LoginResult: String, CaseIterable {
        /// The store accepted; the relay starts.
        case ok
        /// Wrong password, unknown user (no route without a default backend), ambiguous entry.
        case authFailed = "auth_failed"
        /// Directory or store unavailable, store TLS failed, a session ended while logging in.
        case tempFailed = "temp_failed"
        /// A hold (an LDAP hold value or `mailswitch hold`): refused without asking a store.
        case held
        /// The store refused with a code of its own (IN-USE, EXPIRED, UNAVAILABLE, …).
        case refused
        /// A limit refused it before any store was asked (sessions per user, a store's
        /// sessions or login rate, failed logins per address or user).
        case limited
        /// The store did not answer within backend_login_timeout, or login_timeout ran out.
        case timeout

        init(_ failure: LoginFailure) {
            switch failure {
            case .authenticationFailed: self = .authFailed
            case .temporary, .unavailable: self = .tempFailed
            case .limit: self = .limited
            case .backendRefused: self = .refused
            }
        }

        init(_ refusal: LoginRefusal) {
            switch refusal.outcome {
            case .failure: self.init(refusal.failure)
            case .limited: self = .limited
            case .held: self = .held
            case .timeout: self = .timeout
            }
        }
    }

    /// Which limit refused a connection or a login (`mailswitch_limit_refusals_total`).
    enum Limit: String, CaseIterable {
        case maxConnections = "max_connections"
        case maxConnectionsPerIP = "max_connections_per_ip"
        case maxSessionsPerUser = "max_sessions_per_user"
        case backendMaxSessions = "backend_max_sessions"
        case backendMaxLoginsPerSecond = "backend_max_logins_per_second"
        case authFailuresPerIP = "auth_failures_per_ip"
        case authFailuresPerUser = "auth_failures_per_user"
        case untrustedProxy = "untrusted_proxy"
        case lineLength = "max_line_length"
        case literalSize = "max_literal_size"
        case invalidCommands = "invalid_commands"
        case commandsBeforeLogin = "max_commands_before_login"
        case loginTimeout = "login_timeout"

        init(_ limit: ProtocolLimit) {
            switch limit {
            case .lineLength: self = .lineLength
            case .literalSize: self = .literalSize
            case .invalidCommands: self = .invalidCommands
            case .commandsBeforeLogin: self = .commandsBeforeLogin
            }
        }

        init(_ refusal: ConnectionBudget.Refusal) {
            switch refusal {
            case .maxConnections: self = .maxConnections
            case .maxConnectionsPerIP: self = .maxConnectionsPerIP
            }
        }

        init(_ refusal: BackendBudget.Refusal) {
            switch refusal {
            case .maxSessions: self = .backendMaxSessions
            case .maxLoginsPerSecond: self = .backendMaxLoginsPerSecond
            }
        }

        init(_ refusal: AuthFailureTracker.Refusal) {
            switch refusal {
            case .address: self = .authFailuresPerIP
            case .user: self = .authFailuresPerUser
            }
        }

        init(_ limit: LoginLimit) {
            switch limit {
            case .failedLogins(let refusal): self.init(refusal)
            case .sessionsPerUser: self = .maxSessionsPerUser
            case .store(let refusal): self.init(refusal)
            }
        }
    }

    enum CacheResult: String, CaseIterable {
        case hit, miss, stale
    }

    /// How a password check (`verify_credentials`) ended: `cached` was answered from
    /// `verify_cache_ttl` without a bind.
    enum PasswordCheckResult: String, CaseIterable {
        case accepted, refused, unavailable, cached
    }

    /// How a bearer token's introspection (`oauth_introspection_url`) ended: `mismatch` is an
    /// active token of another user than the one the login names.
    enum TokenCheckResult: String, CaseIterable {
        case active, inactive, unavailable, mismatch
    }

    /// Why a session ended. client/store: which leg ended first (an IMAP LOGOUT or POP3 QUIT
    /// is answered by the store closing, so it counts as store); the others: the proxy ended it.
    enum EndReason: String, CaseIterable {
        case client, store, kick
        case routeChange = "route_change"
        case hold, shutdown

        init(_ reason: SessionEndReason) {
            switch reason {
            case .routeChange: self = .routeChange
            case .hold: self = .hold
            case .kick: self = .kick
            case .shutdown: self = .shutdown
            }
        }
    }

    // MARK: - Handles

    static let loginDuration = Timer(label: Name.loginDuration)
    /// 0 off, 1 polling, 2 following the RFC 4533 feed, -1 not following (connecting,
    /// disconnected, or sync configured and unsupported).
    static let feedState = Gauge(label: Name.feedState)
    static let feedChanges = Counter(label: Name.feedChanges)

    static let logins = Fixed<LoginResult, Counter> { Counter(label: Name.logins, dimensions: [("result", $0.rawValue)]) }
    static let routeCache = Fixed<CacheResult, Counter> { Counter(label: Name.routeCache, dimensions: [("result", $0.rawValue)]) }
    static let passwordChecks = Fixed<PasswordCheckResult, Counter> {
        Counter(label: Name.passwordChecks, dimensions: [("result", $0.rawValue)])
    }
    static let tokenChecks = Fixed<TokenCheckResult, Counter> {
        Counter(label: Name.tokenChecks, dimensions: [("result", $0.rawValue)])
    }
    static let limitRefusals = Fixed<Limit, Counter> { Counter(label: Name.limitRefusals, dimensions: [("limit", $0.rawValue)]) }
    static let sessionsEnded = Fixed<EndReason, Counter> {
        Counter(label: Name.sessionsEnded, dimensions: [("reason", $0.rawValue)])
    }

    private static let sessionsOpenCache = Labelled<Meter>(Name.sessionsOpen, ["listener", "protocol", "tls", "backend"]) {
        Meter(label: $0, dimensions: $1)
    }
    private static let relayBytesCache = Labelled<Counter>(Name.relayBytes, ["direction", "backend"]) { Counter(label: $0, dimensions: $1) }
    private static let backendErrorsCache = Labelled<Counter>(Name.backendConnectErrors, ["backend", "host"]) { Counter(label: $0, dimensions: $1) }
    private static let hostUpCache = Labelled<Gauge>(Name.backendHostUp, ["backend", "address"]) { Gauge(label: $0, dimensions: $1) }
    private static let tlsCache = Labelled<Counter>(Name.tlsHandshakes, ["version", "result"]) { Counter(label: $0, dimensions: $1) }

    static func sessionsOpen(_ listener: String, _ service: String, _ tls: String, _ backend: String) -> Meter {
        sessionsOpenCache([listener, service, tls, backend])
    }

    static func relayBytes(_ direction: String, _ backend: String) -> Counter { relayBytesCache([direction, backend]) }
    static func backendConnectErrors(_ backend: String, _ host: String) -> Counter { backendErrorsCache([backend, host]) }
    static func tlsHandshakes(_ version: String, _ result: String) -> Counter { tlsCache([version, result]) }
    /// 0 while new logins skip a store address, 1 once it answers again. Numeric configured
    /// addresses start at 1; a host name's addresses appear at their first failure (recording
    /// every success would cost a lookup per login).
    static func backendHostUp(_ backend: String, _ address: String) -> Gauge { hostUpCache([backend, address]) }

    /// A backend's hosts for one protocol, as configured: the host label of connect errors.
    static func hostsLabel(_ hosts: [HostPort]) -> String { hosts.map(\.description).joined(separator: ",") }

    // MARK: - Recording

    static func routeLookup(_ result: CacheResult) { routeCache[result].increment() }

    static func login(_ result: LoginResult) { logins[result].increment() }

    static func limitReached(_ limit: Limit) { limitRefusals[limit].increment() }

    static func changeFeed(state: String) {
        let value: Int
        if state == "off" {
            value = 0
        } else if state.hasPrefix("poll") {
            value = 1
        } else if state.hasPrefix("sync: following") {
            value = 2
        } else {
            value = -1
        }
        feedState.record(value)
    }

    static func changeSeen() { feedChanges.increment() }

    static func backendUnreachable(_ backend: Backend, _ hosts: [HostPort]) {
        backendConnectErrors(backend.name, hostsLabel(hosts)).increment()
    }

    static func clientHandshake(version: String, ok: Bool) {
        tlsHandshakes(version, ok ? "ok" : "failed").increment()
    }

    // MARK: - Caches

    /// One handle per case of a small enum, made on first use.
    final class Fixed<Key: RawRepresentable & CaseIterable & Hashable & Sendable, Handle: Sendable>: Sendable
    where Key.RawValue == String {
        private let handles: [Key: Handle]
        init(_ make: (Key) -> Handle) {
            var handles: [Key: Handle] = [:]
            for key in Key.allCases { handles[key] = make(key) }
            self.handles = handles
        }

        subscript(key: Key) -> Handle { handles[key]! }
    }

    /// Handles by label values, made on first use and kept (the label sets are bounded).
    final class Labelled<Handle: Sendable>: Sendable {
        private let name: String
        private let labels: [String]
        private let make: @Sendable (String, [(String, String)]) -> Handle
        private let cache = Mutex<[[String]: Handle]>([:])

        init(_ name: String, _ labels: [String], _ make: @escaping @Sendable (String, [(String, String)]) -> Handle) {
            self.name = name
            self.labels = labels
            self.make = make
        }

        func callAsFunction(_ values: [String]) -> Handle {
            cache.withLock { cache in
                if let handle = cache[values] { return handle }
                let handle = make(name, Array(zip(labels, values)))
                cache[values] = handle
                return handle
            }
        }
    }
}

/// One session's share of the metrics: where it stands in `mailswitch_sessions_open` (moved
/// as its TLS version and backend become known), its login time, and how it ended. Confined to
/// the session's loop, like the session.
struct SessionMetrics {
    private var listener = ""
    private var service = ""
    private var tls = "none"
    private var backend = ""
    private var current: Meter?
    private var acceptedAt = DispatchTime.now()
    private var ended = false

    mutating func opened(_ configuration: ListenerConfiguration) {
        listener = configuration.address.description
        service = configuration.service.rawValue
        acceptedAt = .now()
        move()
    }

    mutating func tlsEstablished(_ version: String) {
        ProxyMetrics.clientHandshake(version: version, ok: true)
        tls = version
        move()
    }

    func tlsFailed(_ version: String) {
        ProxyMetrics.clientHandshake(version: version, ok: false)
    }

    /// The store accepted the login: the relay starts.
    mutating func loggedIn(backend name: String) {
        ProxyMetrics.login(.ok)
        ProxyMetrics.loginDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- acceptedAt.uptimeNanoseconds))
        backend = name
        move()
    }

    /// The relay ended: the bytes it moved, and which leg ended first unless the proxy ended it.
    mutating func relayEnded(_ totals: Relay.Totals, backend name: String, proxyReason: SessionEndReason?) {
        ProxyMetrics.relayBytes("client_to_store", name).increment(by: totals.clientToBackend)
        ProxyMetrics.relayBytes("store_to_client", name).increment(by: totals.backendToClient)
        closed(proxyReason.map(ProxyMetrics.EndReason.init) ?? (totals.storeEndedFirst ? .store : .client))
    }

    /// The session is gone (once; later calls do nothing).
    mutating func closed(_ reason: ProxyMetrics.EndReason) {
        // A connection refused by a limit was never counted as a session.
        guard !ended, !listener.isEmpty else { return }
        ended = true
        ProxyMetrics.sessionsEnded[reason].increment()
        current?.decrement()
        current = nil
    }

    private mutating func move() {
        guard !ended else { return }
        let next = ProxyMetrics.sessionsOpen(listener, service, tls, backend)
        guard next !== current else { return }
        current?.decrement()
        next.increment()
        current = next
    }
}
