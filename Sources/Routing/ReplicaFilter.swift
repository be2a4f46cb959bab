/// A search filter the in-memory replica can evaluate itself, the way the server would: ORs
/// and ANDs of equalities, each with the login name (`(uid=%u)`) or a fixed value
/// (`(objectClass=inetOrgPerson)`), compared without case as `uid`, `mail` and `objectClass`
/// are in LDAP. Every branch must compare some attribute with the login: a branch without one
/// would match entries whatever the login. Anything else (`%n`, `%d`, wildcards, NOT,
/// ordering) needs the server's matching rules and is refused with the reason. Pure.
public indirect enum ReplicaFilter: Sendable, Equatable {
    case equalsLogin(attribute: String)
    case equals(attribute: String, value: String)
    case and([ReplicaFilter])
    case or([ReplicaFilter])

    public static func parse(_ template: String) -> Result<ReplicaFilter, ReplicaFilterError> {
        var parser = Parser(text: Array(template.trimmingSpaces))
        guard let filter = parser.filter(), parser.index == parser.text.count, filter.constrainsLogin else {
            return .failure(ReplicaFilterError(filter: template))
        }
        return .success(filter)
    }

    /// Attributes compared with the login name: an entry's values of these are the names that
    /// may reach it.
    public var loginAttributes: [String] { unique(collect { if case .equalsLogin(let name) = $0 { name } else { nil } }) }

    /// Attributes compared with fixed values.
    public var fixedAttributes: [String] { unique(collect { if case .equals(let name, _) = $0 { name } else { nil } }) }

    /// Whether an entry matches a login. `values`: the entry's values of the filter's attributes,
    /// by attribute name lower-cased, each value lower-cased; `login` lower-cased.
    public func matches(_ values: [String: [String]], login: String) -> Bool {
        switch self {
        case .equalsLogin(let attribute): return values[attribute.lowercased()]?.contains(login) ?? false
        case .equals(let attribute, let value): return values[attribute.lowercased()]?.contains(value.lowercased()) ?? false
        case .and(let parts): return parts.allSatisfy { $0.matches(values, login: login) }
        case .or(let parts): return parts.contains { $0.matches(values, login: login) }
        }
    }

    /// True when no entry can match without its login attribute holding the login.
    private var constrainsLogin: Bool {
        switch self {
        case .equalsLogin: return true
        case .equals: return false
        case .and(let parts): return parts.contains { $0.constrainsLogin }
        case .or(let parts): return parts.allSatisfy { $0.constrainsLogin }
        }
    }

    private func collect(_ pick: (ReplicaFilter) -> String?) -> [String] {
        switch self {
        case .and(let parts), .or(let parts): return parts.flatMap { $0.collect(pick) }
        default: return pick(self).map { [$0] } ?? []
        }
    }

    private func unique(_ names: [String]) -> [String] {
        var seen: Set<String> = []
        return names.filter { seen.insert($0.lowercased()).inserted }
    }

    private struct Parser {
        let text: [Character]
        var index = 0

        mutating func filter() -> ReplicaFilter? {
            skipSpaces()
            guard take("(") else { return nil }
            skipSpaces()
            let result: ReplicaFilter?
            if take("&") {
                result = list().map(ReplicaFilter.and)
            } else if take("|") {
                result = list().map(ReplicaFilter.or)
            } else {
                result = equality()
            }
            skipSpaces()
            guard let result, take(")") else { return nil }
            return result
        }

        private mutating func list() -> [ReplicaFilter]? {
            var parts: [ReplicaFilter] = []
            while true {
                skipSpaces()
                guard index < text.count, text[index] == "(" else { break }
                guard let part = filter() else { return nil }
                parts.append(part)
            }
            return parts.isEmpty ? nil : parts
        }

        private mutating func equality() -> ReplicaFilter? {
            let start = index
            while index < text.count, text[index].isLetter || text[index].isNumber || text[index] == "-" { index += 1 }
            let name = String(text[start..<index])
            guard let first = name.first, first.isLetter, take("=") else { return nil }
            let valueStart = index
            while index < text.count, text[index] != ")" { index += 1 }
            let value = String(text[valueStart..<index])
            if value == "%u" { return .equalsLogin(attribute: name) }
            // A fixed value: no placeholder, wildcard or escape (they need the server's rules).
            guard !value.isEmpty, !value.contains(where: { "%*\\(".contains($0) }) else { return nil }
            return .equals(attribute: name, value: value)
        }

        private mutating func take(_ character: Character) -> Bool {
            guard index < text.count, text[index] == character else { return false }
            index += 1
            return true
        }

        private mutating func skipSpaces() {
            while index < text.count, text[index] == " " { index += 1 }
        }
    }
}

public struct ReplicaFilterError: Error, Sendable, Equatable, CustomStringConvertible {
    public let filter: String
    public var description: String {
        "directory.replica needs a filter the replica can match itself: equalities with the login name (%u) or with "
            + "fixed values, joined by & and |, each branch comparing some attribute with %u, such as (uid=%u), "
            + "(|(uid=%u)(mail=%u)) or (&(objectClass=inetOrgPerson)(uid=%u)); \(filter) is not one"
    }
}
