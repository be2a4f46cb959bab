/// What the directory said about a login name.
public enum DirectoryResult: Sendable, Equatable {
    /// The entry, the backend attribute's first value if it has one, and the first value of
    /// each further attribute asked for (a store's `login_name: { attribute: uid }`), keyed by
    /// the attribute's name in lower case.
    case found(dn: String, backendValue: String?, attributes: [String: String] = [:])
    case notFound
    /// More than one entry matched: routing on either would be a guess.
    case ambiguous(count: Int)
    /// The directory could not answer (down, timed out, overloaded): never an auth failure.
    case unavailable(reason: String)

    /// The entry's DN, when one was found.
    public var dn: String? { if case .found(let dn, _, _) = self { dn } else { nil } }

    /// The entry's further attributes, when one was found.
    public var attributes: [String: String] { if case .found(_, _, let attributes) = self { attributes } else { [:] } }
}

public enum RouteDecision: Sendable, Equatable {
    /// Try these hosts in order.
    case backend(Backend, hosts: [HostPort], why: String)
    /// Refuse like a wrong password: the client must not learn whether the user exists.
    case unknownUser(why: String)
    /// A temporary failure on our side or in the directory's data.
    case unavailable(why: String)
    /// The user is held (the attribute is one of `holdValues`, or an operator said so): a
    /// temporary refusal with `message` for the client, and no store is contacted.
    case held(message: String, why: String)
    /// A read-only hold: log in to these hosts as usual, then filter the session so that
    /// nothing changes on the store; refused commands are answered with `message`.
    case readOnly(Backend, hosts: [HostPort], message: String, why: String)

    /// Where this decision sends the user, to compare with where an open session went; nil
    /// when the directory could not tell (a session is never ended on a guess).
    public var target: RouteTarget? {
        switch self {
        case .backend(let backend, _, _): return .backend(backend.name)
        case .unknownUser: return .refused
        case .held: return .held
        case .readOnly(let backend, _, _, _): return .readOnly(backend.name)
        case .unavailable: return nil
        }
    }
}

/// The identity of a route, as far as an open session cares: a session whose target differs
/// from its user's current one is on the wrong store and must end.
public enum RouteTarget: Hashable, Sendable, CustomStringConvertible {
    /// A configured backend's name, or a literal `host:port` from the attribute.
    case backend(String)
    case held
    /// The store's name, under a read-only hold.
    case readOnly(String)
    case refused

    public var description: String {
        switch self {
        case .backend(let name): return name
        case .held: return "(held)"
        case .readOnly(let name): return "\(name) (read-only)"
        case .refused: return "(refused)"
        }
    }
}

/// A hold set by an operator (`mailswitch hold`): a full one, or a read-only one on a store.
public struct OperatorHold: Sendable, Equatable {
    public var message: String
    public var readOnlyStore: String?

    public init(message: String, readOnlyStore: String?) {
        self.message = message
        self.readOnlyStore = readOnlyStore
    }
}

/// Maps a directory answer to the backend a login goes to.
public struct RoutingTable: Sendable, Equatable {
    public var backends: [String: Backend]
    /// For users with no entry or no attribute; nil refuses them.
    public var defaultBackend: String?
    /// Attribute values that hold the user (compared without case): a migration tool sets one
    /// for the final copy pass, then the new store's name.
    public var holdValues: [String]
    /// What a held user's client is told.
    public var holdMessage: String
    /// Attribute values for a read-only hold, each followed by `:STORE` (a backend's name or a
    /// host[:port]) naming the store the user stays on: `moving-ro:legacy`.
    public var readOnlyValues: [String] = []
    /// What a read-only session is told when it tries to change something.
    public var readOnlyMessage = RoutingTable.defaultReadOnlyMessage
    /// `login_rewrite`: the name a login is looked up, counted and held under.
    public var loginRewrite = LoginRewrite()
    /// `verify_credentials` and its settings.
    public var credentialCheck = CredentialCheck()

    public static let defaultHoldMessage = "Your mailbox is being moved, please try again in a few minutes."
    public static let defaultReadOnlyMessage = "Your mailbox is being moved and is read-only for now."

    public init(backends: [String: Backend], defaultBackend: String?, holdValues: [String] = [],
                holdMessage: String = RoutingTable.defaultHoldMessage) {
        self.backends = backends
        self.defaultBackend = defaultBackend
        self.holdValues = holdValues
        self.holdMessage = holdMessage
    }

    /// An operator's hold (from the CLI) overrides the directory: a full hold refuses, a
    /// read-only one keeps the user on the store it names.
    public func decide(_ result: DirectoryResult, service: MailService, hold: OperatorHold?) -> RouteDecision {
        guard let hold else { return decide(result, service: service) }
        guard let store = hold.readOnlyStore else { return .held(message: hold.message, why: "held by an operator") }
        return readOnly(on: store, service: service, message: hold.message, why: "read-only hold by an operator")
    }

    public func decide(_ result: DirectoryResult, service: MailService) -> RouteDecision {
        switch result {
        case .unavailable(let reason):
            return .unavailable(why: "directory unavailable: \(reason)")
        case .ambiguous(let count):
            return .unknownUser(why: "\(count) directory entries match")
        case .notFound:
            return fallback(service: service, why: "no directory entry")
        case .found(_, nil, _):
            return fallback(service: service, why: "entry has no backend attribute")
        case .found(_, let value?, _):
            return named(value, service: service)
        }
    }

    private func readOnly(on store: String, service: MailService, message: String, why: String) -> RouteDecision {
        switch named(store, service: service) {
        case .backend(let backend, let hosts, _):
            return .readOnly(backend, hosts: hosts, message: message, why: why)
        case .unavailable(let problem):
            return .unavailable(why: "\(why), but: \(problem)")
        default:
            return .unavailable(why: "\(why), but \"\(store)\" is not a store")
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
        if holdValues.contains(where: { $0.lowercased() == trimmed.lowercased() }) {
            return .held(message: holdMessage, why: "attribute value \"\(trimmed)\" is a hold")
        }
        for value in readOnlyValues {
            let lower = trimmed.lowercased()
            if lower == value.lowercased() {
                // Never a guess: without a store named, the login is refused as temporary.
                return .unavailable(why: "read-only hold \"\(trimmed)\" names no store (write \(value):STORE)")
            }
            if lower.hasPrefix(value.lowercased() + ":") {
                let store = String(trimmed.dropFirst(value.count + 1))
                return readOnly(on: store, service: service, message: readOnlyMessage,
                                why: "attribute value \"\(trimmed)\" is a read-only hold")
            }
        }
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
