import Routing

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
