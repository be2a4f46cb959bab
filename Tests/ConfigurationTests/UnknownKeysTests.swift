import Configuration
import XCTest

/// A misspelt key is an error at every level, naming the key, its line and the keys known there:
/// these lists are also the whole set of keys the loader reads.
final class UnknownKeysTests: XCTestCase {
    private var files: ConfigurationFiles!

    override func setUpWithError() throws { files = try ConfigurationFiles() }
    override func tearDown() { files = nil }

    private static let knownKeys: [(section: String, keys: [String])] = [
        ("", ["admin", "backends", "directory", "limits", "listeners", "log", "metrics", "routing", "shutdown_grace", "tls",
              "trusted_proxies"]),
        ("listeners[0]", ["address", "oauth", "protocol", "proxy_protocol", "require_tls", "tls"]),
        ("directory", ["backend_attribute", "base", "bind_dn", "bind_password_file", "cache_ttl", "change_feed", "filter",
                       "max_in_flight", "negative_cache_ttl", "recheck_interval", "replica", "stale_ttl", "timeout", "uris"]),
        ("backends.legacy", ["ca_file", "client_cert", "client_key", "forward_client", "forward_client_address", "hosts",
                             "login", "login_name", "master_password_file", "master_user", "max_logins_per_second", "max_sessions",
                             "min_version", "pop3_hosts", "server_name", "tls", "verify"]),
        ("routing", ["default_backend", "disconnect_burst", "hold_message", "hold_values", "login_rewrite",
                     "max_disconnect_delay", "oauth_client_id", "oauth_client_secret_file", "oauth_introspection_url",
                     "read_only_message", "read_only_values", "verify_cache_ttl", "verify_connections", "verify_credentials"]),
        ("limits", ["auth_failure_delay", "auth_failure_window", "backend_connect_timeout", "backend_login_timeout",
                    "login_timeout", "max_auth_failures_per_ip", "max_auth_failures_per_user", "max_commands_before_login",
                    "max_connections", "max_connections_per_ip", "max_line_length", "max_literal_size",
                    "max_sessions_per_user", "relay_buffer_bytes"]),
        ("log", ["level"]),
        ("tls", ["certificates", "min_version"]),
        ("admin", ["socket", "state_file"]),
        ("metrics", ["address"]),
    ]

    func testUnknownKeysAreRefusedAtEveryLevel() throws {
        for (section, keys) in Self.knownKeys {
            let probe = Probe("colour: red", in: section)
            XCTAssertEqual(try files.failure(probe.text),
                           probe.error("unknown key (known here: \(keys.joined(separator: ", ")))"), section)
        }
        // A certificate's entry, a list item of its own.
        let certificate = MinimalYAML(sections: ["tls:", "  certificates:",
                                                 "    - { cert: \"/etc/c.pem\", key: \"/etc/k.pem\", chain: \"/etc/ch.pem\" }"])
        let line = certificate.line(of: "- { cert: \"/etc/c.pem\", key: \"/etc/k.pem\", chain: \"/etc/ch.pem\" }")
        XCTAssertEqual(try files.failure(certificate.text),
                       "tls.certificates[0].chain (line \(line)): unknown key (known here: cert, key)")
    }

    /// A key that looks right but sits one level off is unknown where it is.
    func testAKeyInTheWrongSectionIsUnknownThere() throws {
        let probe = Probe("login_timeout: 5s", in: "directory")
        XCTAssertEqual(try files.failure(probe.text)?.hasPrefix(probe.error("unknown key (known here: backend_attribute")), true)
    }

    func testSectionsAreMappings() throws {
        for section in ["routing", "limits", "log", "tls", "admin", "metrics"] {
            let yaml = MinimalYAML(sections: ["\(section): [1, 2]"])
            XCTAssertEqual(try files.failure(yaml.text),
                           "\(section) (line \(yaml.line(of: "\(section): [1, 2]"))): expected a mapping of keys")
        }
        XCTAssertEqual(try files.failure("- just\n- a list\n"), "top level (line 1): expected a mapping of keys")
    }

    /// A section with nothing under it (only comments) is an empty one, its keys at their defaults.
    func testAnEmptySectionTakesItsDefaults() throws {
        for section in ["routing", "limits", "log", "admin"] {
            XCTAssertNoThrow(try files.load(MinimalYAML(sections: ["\(section):", "  # nothing yet"]).text), section)
        }
    }
}
