/// Builds the search filter from the configured template. Every user-supplied string is
/// escaped per RFC 4515 §3 before it goes in, so a login of `*)(uid=*` matches nobody.
public enum LDAPFilter {
    public static func escape(_ value: String) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "*"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "\\"), 0:
                out += [UInt8(ascii: "\\"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default:
                out.append(byte)   // UTF-8 is valid in a filter value as it is
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Expands `%u` (the login name), `%n` (its part before `@`), `%d` (its part after `@`,
    /// empty if none) and `%%`, each escaped.
    public static func expand(_ template: String, user: String) -> String {
        substitute(template, user: user, escape)
    }

    /// The placeholders of a login template filled in, each value passed through `transform`
    /// (the filter escapes them; a store's login name takes them as they are).
    static func substitute(_ template: String, user: String, _ transform: (String) -> String) -> String {
        let local: Substring
        let domain: Substring
        if let at = user.lastIndex(of: "@") {
            local = user[..<at]
            domain = user[user.index(after: at)...]
        } else {
            local = Substring(user)
            domain = ""
        }
        var out = ""
        var iterator = template.makeIterator()
        while let character = iterator.next() {
            guard character == "%" else { out.append(character); continue }
            switch iterator.next() {
            case "u": out += transform(user)
            case "n": out += transform(String(local))
            case "d": out += transform(String(domain))
            case "%": out.append("%")
            case let other?: out.append("%"); out.append(other)
            case nil: out.append("%")
            }
        }
        return out
    }

    /// Checks a template for the placeholders `expand` knows, so a typo fails at start-up.
    /// An attribute description as RFC 4512 spells one: a name (`uid`, `mailLocalAddress`) or
    /// a numeric OID, with options (`;lang-en`) left out.
    public static func isAttributeName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, text.unicodeScalars.allSatisfy(\.isASCII) else { return false }
        if first.properties.isAlphabetic {
            return text.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" }
        }
        let arcs = text.split(separator: ".", omittingEmptySubsequences: false)
        return arcs.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
    }

    public static func validateTemplate(_ template: String) -> String? {
        guard template.hasPrefix("("), template.hasSuffix(")") else { return "must be a parenthesised LDAP filter" }
        guard template.contains("%u") || template.contains("%n") else { return "must contain %u or %n" }
        return placeholders(in: template) == nil ? "only %u, %n, %d and %% are known placeholders" : nil
    }

    /// The placeholders of a login template (`u`, `n`, `d`, `%`), or nil when one is not known.
    static func placeholders(in template: String) -> Set<Character>? {
        var found: Set<Character> = []
        var iterator = template.makeIterator()
        while let character = iterator.next() {
            guard character == "%" else { continue }
            guard let next = iterator.next(), "und%".contains(next) else { return nil }
            found.insert(next)
        }
        return found
    }

    /// Attributes the template compares for equality with the whole login name (`(uid=%u)`,
    /// `(mail=%u)`): an entry's values of these are the login names that may reach it, which
    /// is how a change to an entry finds the users it concerns.
    public static func loginAttributes(_ template: String) -> [String] {
        let characters = Array(template)
        var found: [String] = []
        var index = 0
        while index + 3 < characters.count {
            defer { index += 1 }
            guard characters[index] == "=", characters[index + 1] == "%", characters[index + 2] == "u",
                  characters[index + 3] == ")" else { continue }
            var start = index
            while start > 0, characters[start - 1].isLetter || characters[start - 1].isNumber || characters[start - 1] == "-" {
                start -= 1
            }
            guard start > 0, start < index, characters[start - 1] == "(" else { continue }
            let name = String(characters[start..<index])
            if !found.contains(where: { $0.lowercased() == name.lowercased() }) { found.append(name) }
        }
        return found
    }
}
