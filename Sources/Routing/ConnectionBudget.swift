/// Open client connections, overall and per client address, against `limits.max_connections`
/// and `limits.max_connections_per_ip`. A pure value: the proxy keeps one under a lock.
///
/// The address is the client's as the proxy knows it (from a PROXY header when a trusted
/// load balancer sent one), in canonical text form.
public struct ConnectionBudget: Sendable {
    public enum Refusal: String, Sendable, CaseIterable {
        case maxConnections = "max_connections"
        case maxConnectionsPerIP = "max_connections_per_ip"
    }

    public private(set) var total = 0
    private var perAddress: [String: Int] = [:]

    public init() {}

    /// Takes one connection for `address`, or says which limit it would exceed.
    public mutating func admit(_ address: String, limits: Limits) -> Refusal? {
        guard total < limits.maxConnections else { return .maxConnections }
        let count = perAddress[address, default: 0]
        guard count < limits.maxConnectionsPerIP else { return .maxConnectionsPerIP }
        perAddress[address] = count + 1
        total += 1
        return nil
    }

    /// Gives back a connection `admit` took. Entries at zero are removed, so the table holds
    /// only addresses with open connections.
    public mutating func release(_ address: String) {
        guard let count = perAddress[address] else { return }
        total -= 1
        if count <= 1 { perAddress[address] = nil } else { perAddress[address] = count - 1 }
    }

    public func connections(from address: String) -> Int { perAddress[address, default: 0] }
}

extension ConnectionBudget.Refusal {
    /// What the refused client is told, in its protocol's temporary goodbye.
    public var clientText: String {
        switch self {
        case .maxConnections: return "Too many connections, try again later."
        case .maxConnectionsPerIP: return "Too many connections from your address."
        }
    }
}
