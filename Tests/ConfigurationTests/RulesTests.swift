import Configuration
import Routing
import XCTest

/// What a value must be beyond its type, and the rules that join keys: each refusal names the
/// key (or the section) and its line.
final class RulesTests: XCTestCase {
    private var files: ConfigurationFiles!

    override func setUpWithError() throws { files = try ConfigurationFiles() }
    override func tearDown() { files = nil }

    private func assertRefused(_ probe: Probe, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(try files.failure(probe.text), probe.error(message), probe.content, file: file, line: line)
    }

    func testRequiredKeys() throws {
        let lines = MinimalYAML().text.split(separator: "\n").map(String.init)
        let without = { (range: Range<Int>) in (lines[..<range.lowerBound] + lines[range.upperBound...]).joined(separator: "\n") + "\n" }
        XCTAssertEqual(try files.failure(without(0..<3)), "top level (line 1): missing key: listeners")
        XCTAssertEqual(try files.failure(without(3..<8)), "top level (line 1): missing key: directory")
        XCTAssertEqual(try files.failure(without(8..<11)), "top level (line 1): missing key: backends")
        XCTAssertEqual(try files.failure(without(2..<3)), "listeners[0] (line 2): missing key: address")
        let noProtocol = MinimalYAML().text.replacingOccurrences(of: "  - protocol: imap\n    address", with: "  - address")
        XCTAssertEqual(try files.failure(noProtocol), "listeners[0] (line 2): missing key: protocol")
        for (index, key) in ["uris", "base", "filter", "backend_attribute"].enumerated() {
            XCTAssertEqual(try files.failure(without((4 + index)..<(5 + index))), "directory (line 5): missing key: \(key)")
        }
        XCTAssertEqual(try files.failure(MinimalYAML(sections: ["metrics: {}"]).text), "metrics (line 12): missing key: address")
        let tls = MinimalYAML(sections: ["tls:", "  min_version: \"1.3\""])
        XCTAssertEqual(try files.failure(tls.text), "tls (line 13): missing key: certificates")
    }

    func testListsThatMustNotBeEmpty() throws {
        let minimal = MinimalYAML().text
        let noURIs = minimal.replacingOccurrences(of: "[\"ldap://127.0.0.1:3389\"]", with: "[]")
        XCTAssertEqual(try files.failure(noURIs), "directory.uris (line 5): at least one URI is needed")
        let noHosts = minimal.replacingOccurrences(of: "hosts: [\"127.0.0.1:10143\"]", with: "hosts: []")
        XCTAssertEqual(try files.failure(noHosts), "backends.legacy (line 11): needs hosts, pop3_hosts or both")
        let noBackends = minimal.replacingOccurrences(of: "  legacy:\n    hosts: [\"127.0.0.1:10143\"]\n", with: "  {}\n")
        XCTAssertEqual(try files.failure(noBackends), "backends (line 10): at least one backend is needed")
        let noCertificates = MinimalYAML(sections: ["tls:", "  certificates: []"])
        XCTAssertEqual(try files.failure(noCertificates.text), "tls.certificates (line 13): at least one certificate is needed")
        let halfCertificate = MinimalYAML(sections: ["tls:", "  certificates:", "    - cert: \"/etc/c.pem\""])
        XCTAssertEqual(try files.failure(halfCertificate.text), "tls.certificates[0] (line 14): needs cert and key")
        XCTAssertEqual(try files.failure(minimal.replacingOccurrences(of: "listeners:\n  - protocol: imap\n    address: \"127.0.0.1:1143\"\n",
                                                                       with: "listeners: []\n")),
                       "listeners (line 1): at least one listener is needed")
    }

    func testAddresses() throws {
        let minimal = MinimalYAML().text
        for (address, message) in [("\"localhost:1143\"", "must be a numeric IP address and a port, such as \"0.0.0.0:143\" or \"[::]:143\""),
                                   ("\"127.0.0.1\"", "\"127.0.0.1\" is not host:port"),
                                   ("\"127.0.0.1:99999\"", "\"127.0.0.1:99999\" is not host:port"),
                                   ("\"127.0.0.01:143\"", "must be a numeric IP address and a port, such as \"0.0.0.0:143\" or \"[::]:143\""),
                                   ("[1]", "expected a string")] {
            let text = minimal.replacingOccurrences(of: "address: \"127.0.0.1:1143\"", with: "address: \(address)")
            XCTAssertEqual(try files.failure(text), "listeners[0].address (line 3): \(message)", address)
        }
        XCTAssertEqual(try files.load(minimal.replacingOccurrences(of: "127.0.0.1:1143", with: "[::]:143")).listeners[0].address,
                       HostPort(host: "::", port: 143))
        assertRefused(Probe("address: \"localhost:9143\"", in: "metrics"),
                      "must be a numeric IP address and a port, such as \"127.0.0.1:9143\"")
        assertRefused(Probe("address: \"127.0.0.1\"", in: "metrics"), "\"127.0.0.1\" is not host:port")
        XCTAssertEqual(try files.load(Probe("address: \"[::1]:9143\"", in: "metrics").text).metricsAddress,
                       HostPort(host: "::1", port: 9143))
        // A store may be named: it is resolved when connecting.
        let hosts = Probe("pop3_hosts: [\"store.test:1110\", \"store.test\", \"[fd00::1]:110\"]", in: "backends.legacy")
        XCTAssertEqual(try files.load(hosts.text).routing.backends["legacy"]?.pop3Hosts,
                       [HostPort(host: "store.test", port: 1110), HostPort(host: "store.test", port: 110),
                        HostPort(host: "fd00::1", port: 110)])
        let badHost = Probe("pop3_hosts: [\"store test\"]", in: "backends.legacy")
        XCTAssertEqual(try files.failure(badHost.text),
                       "backends.legacy.pop3_hosts[0] (line \(badHost.line)): \"store test\" is not host:port")
        let trusted = Probe("trusted_proxies: [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.1\"]", in: "")
        XCTAssertEqual(try files.load(trusted.text).trustedProxies,
                       ["10.0.0.0/8", "fd00::/8", "192.0.2.1"].map { NetworkPrefix($0)! })
        let badPrefix = Probe("trusted_proxies: [\"10.0.0.0/33\"]", in: "")
        XCTAssertEqual(try files.failure(badPrefix.text), "trusted_proxies[0] (line \(badPrefix.line)): \"10.0.0.0/33\" is not an IP "
                       + "address or a prefix such as \"10.0.0.0/8\" or \"fd00::/8\"")
        assertRefused(Probe("trusted_proxies: \"10.0.0.0/8\"", in: ""), "expected a list")
    }

    func testListenerRules() throws {
        assertRefused(Probe("require_tls: true", in: "listeners[0]"), "require_tls: true needs tls: starttls or implicit")
        let withoutCertificates = Probe("tls: implicit", in: "listeners[0]")
        XCTAssertEqual(try files.failure(withoutCertificates.text),
                       "listeners[0] (line 2): tls: implicit needs certificates: add a top-level tls.certificates list")
        let unproxied = Probe("proxy_protocol: true", in: "listeners[0]")
        XCTAssertEqual(try files.failure(unproxied.text),
                       "listeners[0] (line 2): proxy_protocol: true needs trusted_proxies (who may send the header)")
    }

    func testDirectoryRules() throws {
        let minimal = MinimalYAML().text
        let http = minimal.replacingOccurrences(of: "ldap://127.0.0.1:3389", with: "http://ldap.test")
        XCTAssertEqual(try files.failure(http),
                       "directory.uris[0] (line 5): \"http://ldap.test\" is not an ldap://, ldaps:// or ldapi:// URI")
        for uri in ["ldaps://ldap.test", "ldapi://%2Frun%2Fslapd.sock"] {
            XCTAssertEqual(try files.load(minimal.replacingOccurrences(of: "ldap://127.0.0.1:3389", with: uri)).directory.uris, [uri])
        }
        for (filter, problem) in [("uid=%u", "must be a parenthesised LDAP filter"), ("(uid=alice)", "must contain %u or %n"),
                                  ("(uid=%u%x)", "only %u, %n, %d and %% are known placeholders")] {
            let text = minimal.replacingOccurrences(of: "filter: \"(uid=%u)\"", with: "filter: \"\(filter)\"")
            XCTAssertEqual(try files.failure(text), "directory.filter (line 7): \(problem)", filter)
        }
        let polled = MinimalYAML(directory: ["change_feed: poll", "replica: true"])
        XCTAssertEqual(try files.failure(polled.text), "directory.replica (line \(polled.line(of: "replica: true"))): "
                       + "replica: true is built from the RFC 4533 feed: change_feed must be auto or sync")
        let partial = MinimalYAML(directory: ["replica: true"]).text
            .replacingOccurrences(of: "filter: \"(uid=%u)\"", with: "filter: \"(|(uid=%n)(mail=%u))\"")
        let failure = try files.failure(partial)
        XCTAssertEqual(failure?.hasPrefix("directory.filter (line 7): directory.replica needs a filter the replica can match itself"),
                       true, failure ?? "loads")
        let common = MinimalYAML(directory: ["replica: true"]).text
            .replacingOccurrences(of: "filter: \"(uid=%u)\"", with: "filter: \"(&(objectClass=inetOrgPerson)(uid=%u))\"")
        XCTAssertEqual(try files.load(common).directory.replica, true, "the most common filter is matched in memory")
        XCTAssertEqual(try files.load(MinimalYAML(directory: ["change_feed: sync", "replica: true"]).text).directory.replica, true)
        let either = MinimalYAML(directory: ["replica: true"]).text
            .replacingOccurrences(of: "filter: \"(uid=%u)\"", with: "filter: \"(|(uid=%u)(mail=%u))\"")
        XCTAssertEqual(try files.load(either).directory.replica, true, "an OR of equalities is answered from the replica")
    }

    func testRoutingValues() throws {
        let routing = { (lines: [String]) in MinimalYAML(sections: ["routing:"] + lines.map { "  " + $0 }) }
        let loaded = try files.load(routing(["default_backend: legacy", "hold_values: [\"moving\", \"frozen\"]",
                                             "hold_message: \"Back soon.\"", "read_only_values: [\"moving-ro\"]",
                                             "read_only_message: \"Read-only for now.\""]).text).routing
        XCTAssertEqual(loaded.defaultBackend, "legacy")
        XCTAssertEqual(loaded.holdValues, ["moving", "frozen"])
        XCTAssertEqual(loaded.holdMessage, "Back soon.")
        XCTAssertEqual(loaded.readOnlyValues, ["moving-ro"])
        XCTAssertEqual(loaded.readOnlyMessage, "Read-only for now.")
        let cases: [([String], String, String)] = [
            (["default_backend: nowhere"], "routing.default_backend", "\"nowhere\" is not a backend (have: legacy)"),
            (["hold_values: [\"\"]"], "routing.hold_values[0]", "a hold value must not be empty"),
            (["hold_values: [\"LEGACY\"]"], "routing.hold_values[0]", "\"LEGACY\" is also a backend's name"),
            (["read_only_values: [\"ro:legacy\"]"], "routing.read_only_values[0]",
             "a read-only value is a word without \":\" (the store follows it in LDAP: \"ro:legacy:legacy\")"),
            (["hold_values: [\"moving\"]", "read_only_values: [\"Moving\"]"], "routing.read_only_values[0]",
             "\"Moving\" is also a backend's name or a hold value"),
            (["hold_message: \"\""], "routing.hold_message", "expected one line of text"),
            (["read_only_message: \"two\\nlines\""], "routing.read_only_message", "expected one line of text"),
            (["hold_values: moving"], "routing.hold_values", "expected a list"),
        ]
        for (lines, keyPath, message) in cases {
            let yaml = routing(lines)
            XCTAssertEqual(try files.failure(yaml.text), "\(keyPath) (line \(yaml.line(of: lines.last!))): \(message)", lines.last!)
        }
    }

    func testBackendTLSRules() throws {
        for key in ["ca_file: \"/etc/ca.pem\"", "server_name: store.test", "verify: false", "min_version: \"1.3\""] {
            assertRefused(Probe(key, in: "backends.legacy"), "only meaningful with tls: starttls or implicit")
        }
        var lonely = Probe("client_cert: \"/etc/c.pem\"", in: "backends.legacy")
        lonely.yaml.backend.insert("tls: implicit", at: 0)
        assertRefused(lonely, "client_cert and client_key go together")
        var both = Probe("forward_client_address: true", in: "backends.legacy")
        both.yaml.backend.insert("forward_client: auto", at: 0)
        assertRefused(both, "forward_client replaces forward_client_address: keep one")
        var full = MinimalYAML(backend: ["tls: implicit", "ca_file: \"/etc/ca.pem\"", "server_name: store.test", "verify: false",
                                         "client_cert: \"/etc/c.pem\"", "client_key: \"/etc/k.pem\"", "min_version: \"1.3\"",
                                         "forward_client: proxy_v2", "max_sessions: 10", "max_logins_per_second: 2.5"])
        full.sections = []
        let store = try XCTUnwrap(files.load(full.text).routing.backends["legacy"])
        XCTAssertEqual(store.tlsSettings, BackendTLSConfiguration(
            caFile: "/etc/ca.pem", serverName: "store.test", verify: false,
            clientCertificate: CertificateFiles(certificate: "/etc/c.pem", key: "/etc/k.pem", origin: "backends.legacy.client_cert"),
            minVersion: .v1_3))
        XCTAssertEqual(store.forwardClient, .proxyV2)
        XCTAssertEqual(store.maxSessions, 10)
        XCTAssertEqual(store.maxLoginsPerSecond, 2.5)
        XCTAssertEqual(store.imapHosts, [HostPort(host: "127.0.0.1", port: 10143)])
    }

    func testWholeFileProblems() throws {
        XCTAssertEqual(try files.failure(""), "the file is empty")
        XCTAssertEqual(try files.failure("listeners: [\n")?.hasPrefix("not valid YAML: "), true)
        XCTAssertThrowsError(try ConfigLoader(path: files.directory + "/absent.yaml").load()) { error in
            XCTAssertTrue("\(error)".hasPrefix(files.directory + "/absent.yaml: cannot read the file ("), "\(error)")
        }
    }
}
