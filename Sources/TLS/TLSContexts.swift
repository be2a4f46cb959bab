import Configuration
import Routing

/// Every TLS context the service uses, built from the configuration in one go so that a bad
/// file is reported (with its key and path) before any listener opens, and so that a reload
/// swaps them all at once or not at all.
public struct TLSContexts: Sendable {
    /// Per protocol (ALPN differs); empty when no listener uses TLS.
    public let servers: [MailService: TLSServerContext]
    /// Per backend name, for backends with `tls: starttls` or `implicit`.
    public let backends: [String: TLSClientContext]
    /// Settings that work but weaken security, to be logged at start.
    public let warnings: [String]

    public init(_ configuration: ServiceConfiguration) throws(TLSConfigurationError) {
        var servers: [MailService: TLSServerContext] = [:]
        if let tls = configuration.tls {
            for service in MailService.allCases {
                servers[service] = try TLSServerContext(tls, service: service)
            }
        }
        var backends: [String: TLSClientContext] = [:]
        var warnings: [String] = []
        for backend in configuration.routing.backends.values.sorted(by: { $0.name < $1.name }) where backend.tls != .none {
            backends[backend.name] = try TLSClientContext(backend.tlsSettings, origin: "backends.\(backend.name)")
            if !backend.tlsSettings.verify {
                warnings.append("backends.\(backend.name).verify is false: the store's certificate is not checked, "
                                + "so credentials may go to an impostor")
            }
        }
        self.servers = servers
        self.backends = backends
        self.warnings = warnings
    }

    public static let none = TLSContexts()

    private init() {
        servers = [:]
        backends = [:]
        warnings = []
    }
}
