/// What the directory said about a login name.
public enum DirectoryResult: Sendable, Equatable {
    /// The entry, and the backend attribute's first value if it has one.
    case found(dn: String, backendValue: String?)
    case notFound
    /// More than one entry matched: routing on either would be a guess.
    case ambiguous(count: Int)
    /// The directory could not answer (down, timed out, overloaded): never an auth failure.
    case unavailable(reason: String)
}

public enum RouteDecision: Sendable, Equatable {
    /// Try these hosts in order.
    case backend(Backend, hosts: [HostPort], why: String)
    /// Refuse like a wrong password: the client must not learn whether the user exists.
    case unknownUser(why: String)
    /// A temporary failure on our side or in the directory's data.
    case unavailable(why: String)
}

/// Maps a directory answer to the backend a login goes to.
public struct RoutingTable: Sendable, Equatable {
    public var backends: [String: Backend]
    /// For users with no entry or no attribute; nil refuses them.
    public var defaultBackend: String?

    public init(backends: [String: Backend], defaultBackend: String?) {
        self.backends = backends
        self.defaultBackend = defaultBackend
    }

    public func decide(_ result: DirectoryResult, service: MailService) -> RouteDecision {
        switch result {
        case .unavailable(let reason):
            return .unavailable(why: "directory unavailable: \(reason)")
        case .ambiguous(let count):
            return .unknownUser(why: "\(count) directory entries match")
        case .notFound:
            return fallback(service: service, why: "no directory entry")
        case .found(_, nil):
            return fallback(service: service, why: "entry has no backend attribute")
        case .found(_, let value?):
            return named(value, service: service)
        }
    }

    private func fallback(service: MailService, why: String) -> RouteDecision {
        guard let name = defaultBackend, let backend = backends[name] else {
            return .unknownUser(why: "\(why) and no default backend")
        }
        return hosts(of: backend, service: service, why: "\(why): default backend \(name)")
    }

    private func named(_ value: String, service: MailService) -> RouteDecision {
        let trimmed = value.trimmingSpaces
        if let backend = backends[trimmed] ?? backends.first(where: { $0.key.lowercased() == trimmed.lowercased() })?.value {
            return hosts(of: backend, service: service, why: "attribute names backend \(backend.name)")
        }
        // A literal host must look like one (a dot, a colon or a port): a bare word is far
        // more likely a backend name missing from the config than a single-label host name.
        guard trimmed.contains(".") || trimmed.contains(":"),
              let literal = HostPort.parse(trimmed, defaultPort: service.standardPort) else {
            return .unavailable(why: "attribute value \"\(value)\" names no configured backend and is not a host[:port]")
        }
        let backend = Backend(name: literal.description, imapHosts: [literal], pop3Hosts: [literal])
        return .backend(backend, hosts: [literal], why: "attribute is the literal host \(literal)")
    }

    private func hosts(of backend: Backend, service: MailService, why: String) -> RouteDecision {
        let hosts = backend.hosts(for: service)
        guard !hosts.isEmpty else {
            return .unavailable(why: "backend \(backend.name) has no \(service.rawValue) hosts")
        }
        return .backend(backend, hosts: hosts, why: why)
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
