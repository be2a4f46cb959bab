#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Routing
import Yams

extension ConfigLoader {
    /// A node with the key path that leads to it, for messages.
    struct Value {
        let node: Node
        let path: String

        func fail(_ message: String) -> Failure {
            let line = node.mark.map { " (line \($0.line))" } ?? ""
            return Failure(description: "\(path.isEmpty ? "top level" : path)\(line): \(message)")
        }

        /// A key with nothing under it (only comments) is an empty mapping.
        func mapping(allowed: Set<String>) throws -> [String: Value] {
            if node.null != nil { return [:] }
            guard let mapping = node.mapping else { throw fail("expected a mapping of keys") }
            var result: [String: Value] = [:]
            for (key, value) in mapping {
                guard let name = key.string else { throw fail("keys must be strings") }
                let child = Value(node: value, path: path.isEmpty ? name : "\(path).\(name)")
                guard allowed.contains(name) else {
                    throw child.fail("unknown key (known here: \(allowed.sorted().joined(separator: ", ")))")
                }
                result[name] = child
            }
            return result
        }

        func entries() throws -> [(String, Value)] {
            guard let mapping = node.mapping else { throw fail("expected a mapping") }
            return try mapping.map { key, value in
                guard let name = key.string else { throw fail("keys must be strings") }
                return (name, Value(node: value, path: path.isEmpty ? name : "\(path).\(name)"))
            }
        }

        func sequence() throws -> [Value] {
            guard let sequence = node.sequence else { throw fail("expected a list") }
            return sequence.enumerated().map { Value(node: $1, path: "\(path)[\($0)]") }
        }

        func string() throws -> String {
            guard case .scalar(let scalar) = node else { throw fail("expected a string") }
            return scalar.string
        }

        func bool() throws -> Bool {
            guard let value = node.bool else { throw fail("expected true or false") }
            return value
        }

        func int(_ range: ClosedRange<Int>) throws -> Int {
            guard let value = node.int, range.contains(value) else {
                throw fail("expected a whole number in \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }

        /// "3s", "500ms", "2m", "1h", or a number of seconds; "0s" only where `zero` allows it.
        func duration(zero: Bool = false) throws -> Double {
            let text = try string().trimmingCharacters(in: .whitespaces)
            let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
            func valid(_ number: Double) -> Bool { number.isFinite && (number > 0 || (zero && number == 0)) }
            for (suffix, factor) in units where text.hasSuffix(suffix) {
                if let number = Double(text.dropLast(suffix.count)), valid(number) { return number * factor }
            }
            if let number = Double(text), valid(number) { return number }
            throw fail("expected a \(zero ? "" : "positive ")duration such as \"3s\", \"500ms\" or \"2m\"")
        }

        /// A positive number (a rate): whole or decimal.
        func positiveNumber() throws -> Double {
            guard case .scalar(let scalar) = node, let number = Double(scalar.string), number.isFinite, number > 0 else {
                throw fail("expected a positive number")
            }
            return number
        }

        func enumeration<E: RawRepresentable & CaseIterable>(_ type: E.Type) throws -> E where E.RawValue == String {
            let text = try string()
            guard let value = E(rawValue: text) else {
                throw fail("\"\(text)\" is not one of \(E.allCases.map(\.rawValue).joined(separator: " | "))")
            }
            return value
        }

        /// A file the service reads or writes. Every key that names one comes through here, so
        /// none takes a list, a mapping or nothing at all for a path.
        func filePath() throws -> String {
            try checkedPath(try string())
        }

        /// The contents of a file holding a secret (a password), read now; a trailing newline
        /// is an editor's, not the secret's. "\r\n" is one Character: dropping two would take
        /// the secret's last one with it.
        func secret() throws -> String {
            let file = try filePath()
            guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else { throw fail("cannot read \(file)") }
            return contents.hasSuffix("\r\n") || contents.hasSuffix("\n") ? String(contents.dropLast()) : contents
        }

        /// A Unix socket's path: absolute, and short enough for `sun_path` with its NUL.
        func socketPath() throws -> String {
            let text = try string()
            guard text.hasPrefix("/"), text.utf8.count < 108 else {
                throw fail("expected an absolute path shorter than 108 bytes")
            }
            return try checkedPath(text)
        }

        // An empty value is YAML's null, which `string()` reads as "": that would be a path the
        // service finds out about only when it first opens it.
        private func checkedPath(_ text: String) throws -> String {
            guard node.null == nil, !text.isEmpty else { throw fail("expected a path") }
            // The C calls that open the file would stop at the NUL and open another one.
            guard !text.utf8.contains(0) else { throw fail("a path cannot contain a NUL character") }
            return text
        }

        /// An address to listen on: numeric, read by inet_pton(3) as the listeners will read it,
        /// so that an address which loads also binds.
        func bindAddress(examples: String) throws -> HostPort {
            let address = try hostPort(defaultPort: nil)
            var ipv4 = in_addr()
            var ipv6 = in6_addr()
            guard inet_pton(AF_INET, address.host, &ipv4) == 1 || inet_pton(AF_INET6, address.host, &ipv6) == 1 else {
                throw fail("must be a numeric IP address and a port, such as \(examples)")
            }
            return address
        }

        func hostPort(defaultPort: Int?) throws -> HostPort {
            let text = try string()
            guard let value = HostPort.parse(text, defaultPort: defaultPort) else {
                throw fail("\"\(text)\" is not host:port")
            }
            return value
        }
    }
}
