import Configuration
import Foundation
import XCTest

/// Configuration files written to a directory of their own, and what loading them says.
final class ConfigurationFiles {
    let directory: String
    private var count = 0

    init() throws {
        directory = NSTemporaryDirectory() + "mailswitch-config-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func write(_ text: String, named name: String? = nil) throws -> String {
        count += 1
        let path = directory + "/" + (name ?? "config-\(count).yaml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func load(_ text: String) throws -> ServiceConfiguration {
        try ConfigLoader(path: write(text)).load()
    }

    /// The error loading `text` gives, without the file's path in front; nil when it loads.
    func failure(_ text: String) throws -> String? {
        let path = try write(text)
        do {
            _ = try ConfigLoader(path: path).load()
            return nil
        } catch {
            return Self.withoutPath(error.description, path: path)
        }
    }

    /// What `adminSocketPath()` answers: the path, or its error without the file's path.
    func adminSocket(_ text: String) throws -> (path: String?, error: String?) {
        let path = try write(text)
        do {
            return (try ConfigLoader(path: path).adminSocketPath(), nil)
        } catch {
            return (nil, Self.withoutPath(error.description, path: path))
        }
    }

    private static func withoutPath(_ message: String, path: String) -> String {
        message.hasPrefix(path + ": ") ? String(message.dropFirst(path.count + 2)) : message
    }
}

/// The smallest configuration that loads, with lines added to each section. Every added line
/// is indented for its section, so a case names only its key and value.
struct MinimalYAML {
    var listener: [String] = []
    var directory: [String] = []
    var backend: [String] = []
    /// Whole top-level sections, after the required ones.
    var sections: [String] = []

    var text: String {
        (["listeners:", "  - protocol: imap", "    address: \"127.0.0.1:1143\""] + listener.map { "    " + $0 }
            + ["directory:", "  uris: [\"ldap://127.0.0.1:3389\"]", "  base: \"ou=people,dc=example,dc=org\"",
               "  filter: \"(uid=%u)\"", "  backend_attribute: \"mailHost\""] + directory.map { "  " + $0 }
            + ["backends:", "  legacy:", "    hosts: [\"127.0.0.1:10143\"]"] + backend.map { "    " + $0 }
            + sections).joined(separator: "\n") + "\n"
    }

    /// The 1-based line of `text`'s first line that reads `content` once its indentation (and a
    /// list's dash) is set aside.
    func line(of content: String) -> Int {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let wanted = content.drop(while: { $0 == " " || $0 == "-" })
        guard let index = lines.firstIndex(where: { $0.drop(while: { $0 == " " || $0 == "-" }) == wanted }) else {
            XCTFail("no line reads \(content)")
            return 0
        }
        return index + 1
    }
}

/// One `key: value` line placed in a section of the minimal configuration, and the key path an
/// error about it names.
struct Probe {
    var yaml = MinimalYAML()
    let content: String
    let keyPath: String

    /// `section` as an error names it: "" (top level), "directory", "listeners[0]",
    /// "backends.legacy", or a top-level section ("limits", "admin", "tls", …).
    init(_ content: String, in section: String) {
        self.content = content
        let key = String(content.prefix { $0 != ":" })
        keyPath = section.isEmpty ? key : "\(section).\(key)"
        switch section {
        case "": yaml.sections = [content]
        case "listeners[0]": yaml.listener = [content]
        case "directory": yaml.directory = [content]
        case "backends.legacy": yaml.backend = [content]
        case "tls": yaml.sections = ["tls:", "  certificates:", "    - { cert: \"/etc/c.pem\", key: \"/etc/k.pem\" }", "  " + content]
        default: yaml.sections = ["\(section):", "  " + content]
        }
    }

    var text: String { yaml.text }
    var line: Int { yaml.line(of: content) }

    /// The error that names this line's key.
    func error(_ message: String) -> String { "\(keyPath) (line \(line)): \(message)" }
}
