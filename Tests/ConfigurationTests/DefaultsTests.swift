import Configuration
import Foundation
import MailProtocol
import Routing
import XCTest

final class DefaultsTests: XCTestCase {
    private var files: ConfigurationFiles!

    override func setUpWithError() throws { files = try ConfigurationFiles() }
    override func tearDown() { files = nil }

    func testEveryOptionalKeyAbsentTakesItsDefault() throws {
        let loaded = try files.load(MinimalYAML().text)
        let legacy = Backend(name: "legacy", imapHosts: [HostPort(host: "127.0.0.1", port: 10143)], pop3Hosts: [])
        let directory = DirectoryConfiguration(uris: ["ldap://127.0.0.1:3389"], bindDN: nil, bindPassword: nil,
                                               base: "ou=people,dc=example,dc=org", filter: "(uid=%u)",
                                               backendAttribute: "mailHost", timeoutSeconds: 3, maxInFlight: 100)
        let listener = ListenerConfiguration(service: .imap, address: HostPort(host: "127.0.0.1", port: 1143), tls: .none,
                                             requireTLS: false, proxyProtocol: false)
        XCTAssertEqual(loaded, ServiceConfiguration(listeners: [listener], directory: directory,
                                                    routing: RoutingTable(backends: ["legacy": legacy], defaultBackend: nil)))
        // Spelled out too: a default changed in the model must be a decision, seen here.
        XCTAssertEqual(loaded.logLevel, "info")
        XCTAssertEqual(loaded.shutdownGraceSeconds, 30)
        XCTAssertNil(loaded.metricsAddress)
        XCTAssertNil(loaded.tls)
        XCTAssertEqual(loaded.trustedProxies, [])
        XCTAssertEqual(loaded.admin.socketPath, "/run/mailswitch/admin.sock")
        XCTAssertEqual(loaded.admin.stateFile, "/run/mailswitch/holds.json")
        XCTAssertEqual(loaded.disconnects.burst, 100)
        XCTAssertEqual(loaded.disconnects.maxDelaySeconds, 10)
        XCTAssertNil(loaded.routing.defaultBackend)
        XCTAssertEqual(loaded.routing.holdValues, [])
        XCTAssertEqual(loaded.routing.readOnlyValues, [])
        XCTAssertEqual(loaded.routing.readOnlyMessage, RoutingTable.defaultReadOnlyMessage)
        let limits = loaded.limits
        // Seconds: login, store connect, store login, failure delay, failure window.
        XCTAssertEqual([limits.loginTimeoutSeconds, limits.backendConnectTimeoutSeconds, limits.backendLoginTimeoutSeconds,
                        limits.authFailureDelaySeconds, limits.authFailures.window], [60, 5, 15, 2, 300])
        XCTAssertEqual([limits.relayBufferBytes, limits.protocolLimits.lineLength, limits.protocolLimits.literalSize,
                        limits.protocolLimits.commandsBeforeLogin, limits.maxConnections, limits.maxConnectionsPerIP,
                        limits.maxSessionsPerUser, limits.authFailures.maxPerAddress, limits.authFailures.maxPerUser],
                       [65_536, 8_192, 8_192, 50, 100_000, 200, 50, 20, 10])
        let ldap = loaded.directory
        XCTAssertEqual([ldap.timeoutSeconds, ldap.cache.ttl, ldap.cache.negativeTTL, ldap.cache.staleTTL, ldap.recheckIntervalSeconds],
                       [3, 60, 10, 3600, 60])
        XCTAssertEqual(ldap.maxInFlight, 100)
        XCTAssertEqual(ldap.changeFeed, .auto)
        XCTAssertEqual(ldap.recheckIntervalSeconds, 60)
        XCTAssertFalse(ldap.replica)
        let store = try XCTUnwrap(loaded.routing.backends["legacy"])
        XCTAssertEqual(store.tls, .none)
        XCTAssertEqual(store.forwardClient, .auto)
        XCTAssertNil(store.maxSessions)
        XCTAssertNil(store.maxLoginsPerSecond)
        XCTAssertEqual(store.tlsSettings, BackendTLSConfiguration())
        XCTAssertTrue(store.tlsSettings.verify)
        XCTAssertEqual(store.tlsSettings.minVersion, .v1_2)
    }

    func testRequireTLSDefaultsToTrueForSTARTTLSOffLoopbackOnly() throws {
        let certificates = ["tls:", "  certificates:", "    - { cert: \"/etc/c.pem\", key: \"/etc/k.pem\" }"]
        for (address, tls, expected) in [("0.0.0.0:143", "starttls", true), ("127.0.0.1:143", "starttls", false),
                                         ("[::1]:143", "starttls", false), ("[::]:143", "starttls", true),
                                         ("0.0.0.0:993", "implicit", false), ("0.0.0.0:143", "none", false)] {
            let text = MinimalYAML(listener: ["tls: \(tls)"], sections: certificates).text
                .replacingOccurrences(of: "127.0.0.1:1143", with: address)
            XCTAssertEqual(try files.load(text).listeners[0].requireTLS, expected, "\(address) \(tls)")
        }
        // The server TLS section's own default.
        XCTAssertEqual(try files.load(MinimalYAML(sections: certificates).text).tls?.minVersion, .v1_2)
    }

    func testStoreHostsWithoutAPortTakeTheProtocolsPort() throws {
        for (tls, imap, pop3) in [("none", 143, 110), ("starttls", 143, 110), ("implicit", 993, 995)] {
            let text = MinimalYAML(backend: ["pop3_hosts: [\"store.test\"]", "tls: \(tls)"]).text
                .replacingOccurrences(of: "127.0.0.1:10143", with: "store.test")
            let store = try XCTUnwrap(files.load(text).routing.backends["legacy"])
            XCTAssertEqual(store.imapHosts, [HostPort(host: "store.test", port: imap)], tls)
            XCTAssertEqual(store.pop3Hosts, [HostPort(host: "store.test", port: pop3)], tls)
        }
    }

    /// The documented example sets every key: each one must arrive where the service reads it.
    func testTheExampleFileLoadsWithEveryValueItStates() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let example = try String(contentsOf: root.appendingPathComponent("config/mailswitch.example.yaml"), encoding: .utf8)
        let secret = try files.write("s3cret\n", named: "ldap.secret")
        let text = example.replacingOccurrences(of: "/etc/mailswitch/ldap.secret", with: secret)
        XCTAssertNotEqual(text, example, "the example names a password file")
        let loaded = try files.load(text)

        XCTAssertEqual(loaded.listeners.map { "\($0.service.rawValue) \($0.address) \($0.tls.rawValue) \($0.requireTLS) \($0.proxyProtocol)" },
                       ["imap 127.0.0.1:1143 starttls false false", "pop3 127.0.0.1:1110 starttls false false",
                        "imap 127.0.0.1:1993 implicit false false", "pop3 127.0.0.1:1995 implicit false false"])
        XCTAssertEqual(loaded.tls?.certificates.map(\.certificate),
                       ["/etc/mailswitch/tls/mail.pem", "/etc/mailswitch/tls/mail-ec.pem", "/etc/mailswitch/tls/other.pem"])
        XCTAssertEqual(loaded.tls?.certificates.map(\.key),
                       ["/etc/mailswitch/tls/mail.key", "/etc/mailswitch/tls/mail-ec.key", "/etc/mailswitch/tls/other.key"])
        XCTAssertEqual(loaded.tls?.certificates.first?.origin, "tls.certificates[0]")
        XCTAssertEqual(loaded.tls?.minVersion, .v1_2)
        XCTAssertEqual(loaded.trustedProxies, [NetworkPrefix("127.0.0.2/32")!])

        // Where the example states a default, the other tests here show the key is read.
        XCTAssertEqual(loaded.directory, DirectoryConfiguration(
            uris: ["ldap://127.0.0.1:3389"], bindDN: "cn=mailswitch,dc=example,dc=org", bindPassword: "s3cret",
            base: "ou=people,dc=example,dc=org", filter: "(&(objectClass=inetOrgPerson)(uid=%u))",
            backendAttribute: "mailHost", timeoutSeconds: 3, maxInFlight: 100))

        let routing = loaded.routing
        XCTAssertEqual(routing.defaultBackend, "legacy")
        XCTAssertEqual(routing.holdValues, ["moving"])
        XCTAssertEqual(routing.holdMessage, "Your mailbox is being moved, please try again in a few minutes.")
        XCTAssertEqual(routing.readOnlyValues, ["moving-ro"])
        XCTAssertEqual(routing.readOnlyMessage, "Your mailbox is being moved and is read-only for now.")
        XCTAssertEqual(loaded.disconnects, DisconnectPolicy(burst: 100, maxDelaySeconds: 10))

        let legacy = try XCTUnwrap(routing.backends["legacy"])
        XCTAssertEqual(legacy.imapHosts, [HostPort(host: "127.0.0.1", port: 10143)])
        XCTAssertEqual(legacy.pop3Hosts, [HostPort(host: "127.0.0.1", port: 10110)])
        XCTAssertEqual(legacy.tls, .none)
        XCTAssertEqual(legacy.forwardClient, .auto)
        let new = try XCTUnwrap(routing.backends["new"])
        XCTAssertEqual(new.imapHosts, [HostPort(host: "127.0.0.1", port: 20993)])
        XCTAssertEqual(new.pop3Hosts, [HostPort(host: "127.0.0.1", port: 20995)])
        XCTAssertEqual(new.tls, .implicit)
        XCTAssertEqual(new.tlsSettings, BackendTLSConfiguration(caFile: "/etc/mailswitch/tls/ca.pem", serverName: "new.store.test",
                                                                 verify: true))

        XCTAssertEqual(loaded.admin, AdminConfiguration(socketPath: "/run/mailswitch/admin.sock",
                                                        stateFile: "/var/lib/mailswitch/holds.json"))
        XCTAssertEqual(loaded.metricsAddress, HostPort(host: "127.0.0.1", port: 9143))
        XCTAssertEqual(loaded.shutdownGraceSeconds, 30)
        XCTAssertEqual(loaded.logLevel, "info")

        var limits = Limits()
        limits.protocolLimits.commandSize = 32_768
        XCTAssertEqual(loaded.limits, limits, "the example states every limit's default")
    }

    func testACommandHoldsAtLeastOneLineAndOneLiteral() throws {
        let loaded = try files.load(MinimalYAML(sections: ["limits:", "  max_line_length: 65536", "  max_literal_size: 65536"]).text)
        XCTAssertEqual(loaded.limits.protocolLimits.commandSize, 131_072)
        let small = try files.load(MinimalYAML(sections: ["limits:", "  max_line_length: 1024"]).text)
        XCTAssertEqual(small.limits.protocolLimits.commandSize, ProtocolLimits().commandSize, "never made smaller")
    }
}
