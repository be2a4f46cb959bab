/// One user, many login names: `alice`, `Alice@EXAMPLE.ORG`, an old division address
/// `alice@msd.example.org`. The rewritten name is what the directory is asked about and what
/// every per-user count, hold and kick is keyed by (`routing.login_rewrite`); the store is sent
/// the name its backend's `login_name` asks for. Pure.
public struct LoginRewrite: Sendable, Equatable {
    /// `Alice@EXAMPLE.ORG` → `alice@example.org`.
    public var lowercase: Bool
    /// Domains replaced by another, compared without case: `msd.example.org: example.org`.
    public var mapDomains: [String: String]
    /// Domains taken off (after mapping), compared without case; `*` takes off any.
    public var stripDomains: [String]

    public init(lowercase: Bool = false, mapDomains: [String: String] = [:], stripDomains: [String] = []) {
        self.lowercase = lowercase
        self.mapDomains = Dictionary(mapDomains.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
        self.stripDomains = stripDomains.map { $0.lowercased() }
    }

    public var isIdentity: Bool { !lowercase && mapDomains.isEmpty && stripDomains.isEmpty }

    /// Lower-case, then map the domain, then strip it.
    public func apply(_ login: String) -> String {
        guard !isIdentity else { return login }
        let name = lowercase ? login.lowercased() : login
        guard let at = name.lastIndex(of: "@") else { return name }
        let local = name[..<at]
        var domain = String(name[name.index(after: at)...])
        if let mapped = mapDomains[domain.lowercased()] { domain = mapped }
        if stripDomains.contains("*") || stripDomains.contains(domain.lowercased()) { return String(local) }
        return local + "@" + domain
    }
}

/// The name a store is sent for a user (a backend's `login_name`): the login as the client
/// typed it, a template over the rewritten name, or an attribute of the user's entry. Pure.
public enum StoreLoginName: Sendable, Equatable {
    /// `%u`: as typed (the default: what the store saw before mailswitch).
    case asTyped
    /// A template over the rewritten name: `%n` (before `@`), `%d` (after it), `%u` (all of
    /// it), `%%`; `"%n"` for a store that knows `alice`, `"%n@example.org"` for one that wants
    /// the address.
    case template(String)
    /// `{ attribute: uid }`: the first value of this attribute of the user's entry, fetched in
    /// the same search as the route (and kept in the route cache and the replica).
    case attribute(String)

    /// The name for the store, or nil when the entry has no value for the attribute asked
    /// for (or no entry was found: a route to the default backend). `typed`: the client's;
    /// `rewritten`: after `login_rewrite`; `attributes`: the entry's, keyed in lower case.
    public func name(typed: String, rewritten: String, attributes: [String: String] = [:]) -> String? {
        switch self {
        case .asTyped:
            return typed
        case .template(let template):
            return LDAPFilter.substitute(template, user: rewritten) { $0 }
        case .attribute(let attribute):
            return attributes[attribute.lowercased()].flatMap { $0.isEmpty ? nil : $0 }
        }
    }

    /// The attribute the directory must fetch for this, if any.
    public var attribute: String? { if case .attribute(let name) = self { name } else { nil } }

    /// Why a template cannot be used, or nil.
    public static func problem(in template: String) -> String? {
        guard !template.isEmpty else { return "must not be empty" }
        if template.contains(where: { $0.isWhitespace || $0.unicodeScalars.contains { $0.value < 0x20 } }) {
            return "must not contain spaces or control characters"
        }
        guard let found = LDAPFilter.placeholders(in: template) else { return "only %u, %n, %d and %% are known placeholders" }
        return found.subtracting(["%"]).isEmpty ? "must contain %u, %n or %d" : nil
    }
}
