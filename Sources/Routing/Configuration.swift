import MailProtocol

/// The two protocols a listener or a backend host can speak.
public enum MailService: String, Sendable, CaseIterable {
    case imap, pop3

    public var standardPort: Int { descriptor.standardPort }
    /// RFC 8314: IMAP and POP3 over implicit TLS.
    public var implicitTLSPort: Int { descriptor.implicitTLSPort }
}

public enum ListenerTLS: String, Sendable, CaseIterable { case none, starttls, implicit }
public enum BackendTLS: String, Sendable, CaseIterable { case none, starttls, implicit }

/// A certificate (PEM, leaf first, then its chain) and its private key (PEM).
public struct CertificateFiles: Sendable, Equatable {
    public var certificate: String
    public var key: String
    /// Where it was configured (`tls.certificates[1]`), for error messages.
    public var origin: String

    public init(certificate: String, key: String, origin: String) {
        self.certificate = certificate
        self.key = key
        self.origin = origin
    }
}

public enum TLSVersion: String, Sendable, CaseIterable {
    case v1_2 = "1.2"
    case v1_3 = "1.3"
}

/// The client-facing TLS settings: certificates (the first is the default, others are chosen
/// by SNI) and the lowest protocol version accepted.
public struct ServerTLSConfiguration: Sendable, Equatable {
    public var certificates: [CertificateFiles]
    public var minVersion: TLSVersion

    public init(certificates: [CertificateFiles], minVersion: TLSVersion = .v1_2) {
        self.certificates = certificates
        self.minVersion = minVersion
    }
}

/// How mailswitch verifies a backend's certificate and presents its own.
public struct BackendTLSConfiguration: Sendable, Equatable {
    /// PEM bundle of trusted CAs; nil means the system's store.
    public var caFile: String?
    /// The name verified and sent as SNI; nil means the host from `hosts`.
    public var serverName: String?
    public var verify: Bool
    public var clientCertificate: CertificateFiles?
    public var minVersion: TLSVersion

    public init(caFile: String? = nil, serverName: String? = nil, verify: Bool = true,
                clientCertificate: CertificateFiles? = nil, minVersion: TLSVersion = .v1_2) {
        self.caFile = caFile
        self.serverName = serverName
        self.verify = verify
        self.clientCertificate = clientCertificate
        self.minVersion = minVersion
    }
}

public struct ListenerConfiguration: Sendable, Equatable {
    public var service: MailService
    public var address: HostPort
    public var tls: ListenerTLS
    /// Refuse LOGIN/USER/AUTH before TLS (LOGINDISABLED). Defaults to true unless the
    /// listener is bound to loopback.
    public var requireTLS: Bool
    /// Every connection starts with a PROXY header (v1 or v2) from one of `trusted_proxies`.
    public var proxyProtocol: Bool

    public init(service: MailService, address: HostPort, tls: ListenerTLS, requireTLS: Bool, proxyProtocol: Bool = false) {
        self.service = service
        self.address = address
        self.tls = tls
        self.requireTLS = requireTLS
        self.proxyProtocol = proxyProtocol
    }
}

public struct DirectoryConfiguration: Sendable, Equatable {
    public var uris: [String]
    public var bindDN: String?
    /// Read at start-up; never logged.
    public var bindPassword: String?
    public var base: String
    public var filter: String
    public var backendAttribute: String
    /// Per request, and for connecting.
    public var timeoutSeconds: Double
    /// Requests outstanding on one LDAP connection before more wait in a queue.
    public var maxInFlight: Int
    public var cache = RouteCacheSettings()
    public var changeFeed = ChangeFeedMode.auto
    /// Poll mode: how often the routes of users with open sessions are looked up again.
    public var recheckIntervalSeconds: Double = 60
    /// Keep the whole login → route map in memory from the change feed and answer logins
    /// from it (`DirectoryReplica`).
    public var replica = false

    public init(uris: [String], bindDN: String?, bindPassword: String?, base: String, filter: String,
                backendAttribute: String, timeoutSeconds: Double, maxInFlight: Int = 100) {
        self.uris = uris
        self.bindDN = bindDN
        self.bindPassword = bindPassword
        self.base = base
        self.filter = filter
        self.backendAttribute = backendAttribute
        self.timeoutSeconds = timeoutSeconds
        self.maxInFlight = maxInFlight
    }
}

/// How the proxy learns that a user's route changed (see the example configuration).
public enum ChangeFeedMode: String, Sendable, CaseIterable {
    /// RFC 4533 when the server offers it, else poll.
    case auto
    /// RFC 4533 refreshAndPersist only.
    case sync
    /// Look up the users with open sessions again every `recheck_interval`.
    case poll
    /// Routes change at the next login only.
    case off
}

/// How many sessions end at once after a batch of route changes, and over how long the rest
/// are spread.
public struct DisconnectPolicy: Sendable, Equatable {
    public var burst: Int
    public var maxDelaySeconds: Double

    public init(burst: Int = 100, maxDelaySeconds: Double = 10) {
        self.burst = burst
        self.maxDelaySeconds = maxDelaySeconds
    }
}

/// The admin socket that the CLI (`sessions`, `kick`, `hold`, …) talks to.
public struct AdminConfiguration: Sendable, Equatable {
    public var socketPath: String
    /// Holds set from the CLI, kept across reloads and restarts.
    public var stateFile: String

    public init(socketPath: String = "/run/mailswitch/admin.sock", stateFile: String? = nil) {
        self.socketPath = socketPath
        self.stateFile = stateFile ?? AdminConfiguration.defaultStateFile(socketPath: socketPath)
    }

    /// Next to the socket, as `holds.json`.
    public static func defaultStateFile(socketPath: String) -> String {
        guard let slash = socketPath.lastIndex(of: "/") else { return "holds.json" }
        return String(socketPath[...slash]) + "holds.json"
    }
}

/// How a store learns the real client's address (`forward_client`).
public enum ForwardClient: String, Sendable, CaseIterable {
    /// IMAP ID `x-originating-ip` etc. and POP3 XCLIENT (Dovecot honours them from
    /// `login_trusted_networks`), with the hop count `x-proxy-ttl`.
    case auto
    /// A PROXY protocol v2 header first (Dovecot's `haproxy_trusted_networks`), then as auto.
    case proxyV2 = "proxy_v2"
    /// Nothing: the store sees mailswitch's address, and no hop count stops a routing loop.
    case none
}

public struct Backend: Sendable, Equatable {
    public var name: String
    public var imapHosts: [HostPort]
    public var pop3Hosts: [HostPort]
    public var tls: BackendTLS
    public var tlsSettings: BackendTLSConfiguration
    /// How the store learns who the real client is.
    public var forwardClient: ForwardClient
    /// Sessions open on this store at once, from connect to close; nil is unlimited.
    public var maxSessions: Int?
    /// Logins sent to this store per second (a burst of one second's worth); nil is unlimited.
    public var maxLoginsPerSecond: Double?

    public init(name: String, imapHosts: [HostPort], pop3Hosts: [HostPort], tls: BackendTLS = .none,
                tlsSettings: BackendTLSConfiguration = BackendTLSConfiguration(), forwardClient: ForwardClient = .auto) {
        self.name = name
        self.imapHosts = imapHosts
        self.pop3Hosts = pop3Hosts
        self.tls = tls
        self.tlsSettings = tlsSettings
        self.forwardClient = forwardClient
    }

    /// Whether `max_sessions` or `max_logins_per_second` is set (`BackendBudget` tracks it).
    public var hasLimits: Bool { maxSessions != nil || maxLoginsPerSecond != nil }

    public func hosts(for service: MailService) -> [HostPort] {
        service == .imap ? imapHosts : pop3Hosts
    }
}

/// Every limit and timeout of the service, in one place.
public struct Limits: Sendable, Equatable {
    public var protocolLimits = ProtocolLimits()
    /// From accept to the backend accepting the login.
    public var loginTimeoutSeconds: Double = 60
    public var backendConnectTimeoutSeconds: Double = 5
    /// From connected to the backend's verdict on the replayed login.
    public var backendLoginTimeoutSeconds: Double = 15
    /// Bytes buffered per direction in the relay before that side stops being read.
    public var relayBufferBytes = 65_536
    /// Open client connections, all listeners together; beyond it a new one gets the
    /// protocol's goodbye and is closed. The unit's LimitNOFILE allows two descriptors each.
    public var maxConnections = 100_000
    /// Open connections from one client address (a NAT in front of a campus needs more).
    public var maxConnectionsPerIP = 200
    /// Sessions of one user, logged in or logging in (the client that IDLEs on every folder).
    public var maxSessionsPerUser = 50
    /// A failed login is answered this long after its command arrived (a store slower than
    /// that is not waited for twice): a wrong password and an unknown user look the same.
    public var authFailureDelaySeconds: Double = 2
    public var authFailures = AuthFailureTracker.Settings()

    public init() {}
}

public struct ServiceConfiguration: Sendable, Equatable {
    public var listeners: [ListenerConfiguration]
    public var directory: DirectoryConfiguration
    public var routing: RoutingTable
    public var limits: Limits
    public var disconnects = DisconnectPolicy()
    /// On SIGTERM: how long open sessions may finish before they are ended.
    public var shutdownGraceSeconds: Double = 30
    public var admin = AdminConfiguration()
    /// `metrics.address`: HTTP /metrics and /health there; nil serves neither.
    public var metricsAddress: HostPort?
    /// Who may send a PROXY header to a listener with `proxy_protocol: true`.
    public var trustedProxies: [NetworkPrefix] = []
    public var logLevel: String
    /// Needed as soon as a listener has `tls: starttls` or `implicit`.
    public var tls: ServerTLSConfiguration?

    public init(listeners: [ListenerConfiguration], directory: DirectoryConfiguration, routing: RoutingTable,
                limits: Limits = Limits(), logLevel: String = "info", tls: ServerTLSConfiguration? = nil) {
        self.listeners = listeners
        self.directory = directory
        self.routing = routing
        self.limits = limits
        self.logLevel = logLevel
        self.tls = tls
    }
}
