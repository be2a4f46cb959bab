import Configuration
import Routing
import XCTest

/// Durations, numbers, switches and choices: for each key, what it accepts and the error that
/// names it (key path and line) when the value is of the wrong type or out of range.
final class KeyTypesTests: XCTestCase {
    private var files: ConfigurationFiles!

    override func setUpWithError() throws { files = try ConfigurationFiles() }
    override func tearDown() { files = nil }

    private func assertLoads<T: Equatable>(_ probe: Probe, _ read: (ServiceConfiguration) -> T, _ expected: T,
                                           file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Result { read(try files.load(probe.text)) }.value, expected, probe.content, file: file, line: line)
    }

    private func assertRefused(_ probe: Probe, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(try files.failure(probe.text), probe.error(message), probe.content, file: file, line: line)
    }

    private static let durations: [(String, String, @Sendable (ServiceConfiguration) -> Double, zero: Bool)] = [
        ("", "shutdown_grace", { $0.shutdownGraceSeconds }, false),
        ("routing", "max_disconnect_delay", { $0.disconnects.maxDelaySeconds }, false),
        ("limits", "login_timeout", { $0.limits.loginTimeoutSeconds }, false),
        ("limits", "backend_connect_timeout", { $0.limits.backendConnectTimeoutSeconds }, false),
        ("limits", "backend_login_timeout", { $0.limits.backendLoginTimeoutSeconds }, false),
        ("limits", "auth_failure_delay", { $0.limits.authFailureDelaySeconds }, true),
        ("limits", "auth_failure_window", { $0.limits.authFailures.window }, false),
        ("directory", "timeout", { $0.directory.timeoutSeconds }, false),
        ("directory", "cache_ttl", { $0.directory.cache.ttl }, false),
        ("directory", "negative_cache_ttl", { $0.directory.cache.negativeTTL }, false),
        ("directory", "stale_ttl", { $0.directory.cache.staleTTL }, false),
        ("directory", "recheck_interval", { $0.directory.recheckIntervalSeconds }, false),
    ]

    func testDurationsTakeUnitsOrSeconds() {
        for (section, key, read, zero) in Self.durations {
            for (text, seconds) in [("\"500ms\"", 0.5), ("\"3s\"", 3), ("\"2m\"", 120), ("\"1h\"", 3600), ("7", 7), ("1.5", 1.5),
                                    ("\" 4s \"", 4), ("90s", 90)] {
                assertLoads(Probe("\(key): \(text)", in: section), read, seconds)
            }
            let message = "expected a \(zero ? "" : "positive ")duration such as \"3s\", \"500ms\" or \"2m\""
            for bad in ["\"soon\"", "\"3 parsecs\"", "\"-1s\"", "-2", "\"inf\"", "\"nan\"", "\"3d\"", "\"\"", "true"] {
                assertRefused(Probe("\(key): \(bad)", in: section), message)
            }
            if zero {
                assertLoads(Probe("\(key): \"0s\"", in: section), read, 0)
                assertLoads(Probe("\(key): 0", in: section), read, 0)
            } else {
                assertRefused(Probe("\(key): \"0s\"", in: section), message)
                assertRefused(Probe("\(key): 0", in: section), message)
            }
            for wrongType in ["[1]", "{ seconds: 3 }"] {
                assertRefused(Probe("\(key): \(wrongType)", in: section), "expected a string")
            }
        }
    }

    private static let wholeNumbers: [(String, String, ClosedRange<Int>, @Sendable (ServiceConfiguration) -> Int?)] = [
        ("routing", "disconnect_burst", 1...1_000_000, { $0.disconnects.burst }),
        ("limits", "relay_buffer_bytes", 4096...4_194_304, { $0.limits.relayBufferBytes }),
        ("limits", "max_line_length", 1024...65_536, { $0.limits.protocolLimits.lineLength }),
        ("limits", "max_literal_size", 256...65_536, { $0.limits.protocolLimits.literalSize }),
        ("limits", "max_commands_before_login", 5...10_000, { $0.limits.protocolLimits.commandsBeforeLogin }),
        ("limits", "max_connections", 1...10_000_000, { $0.limits.maxConnections }),
        ("limits", "max_connections_per_ip", 1...10_000_000, { $0.limits.maxConnectionsPerIP }),
        ("limits", "max_sessions_per_user", 1...100_000, { $0.limits.maxSessionsPerUser }),
        ("limits", "max_auth_failures_per_ip", 1...1_000_000, { $0.limits.authFailures.maxPerAddress }),
        ("limits", "max_auth_failures_per_user", 1...1_000_000, { $0.limits.authFailures.maxPerUser }),
        ("directory", "max_in_flight", 1...10_000, { $0.directory.maxInFlight }),
        ("backends.legacy", "max_sessions", 1...10_000_000, { $0.routing.backends["legacy"]?.maxSessions }),
    ]

    func testWholeNumbersHoldToTheirRange() {
        for (section, key, range, read) in Self.wholeNumbers {
            assertLoads(Probe("\(key): \(range.lowerBound)", in: section), read, range.lowerBound)
            assertLoads(Probe("\(key): \(range.upperBound)", in: section), read, range.upperBound)
            let message = "expected a whole number in \(range.lowerBound)...\(range.upperBound)"
            for bad in ["\(range.lowerBound - 1)", "\(range.upperBound + 1)", "\"many\"", "2.5", "[1]", "true"] {
                assertRefused(Probe("\(key): \(bad)", in: section), message)
            }
        }
    }

    func testLoginRateIsAPositiveNumber() {
        let read: (ServiceConfiguration) -> Double? = { $0.routing.backends["legacy"]?.maxLoginsPerSecond }
        assertLoads(Probe("max_logins_per_second: 5", in: "backends.legacy"), read, 5)
        assertLoads(Probe("max_logins_per_second: 0.5", in: "backends.legacy"), read, 0.5)
        for bad in ["0", "-1", "\"fast\"", ".inf", "[5]"] {
            assertRefused(Probe("max_logins_per_second: \(bad)", in: "backends.legacy"), "expected a positive number")
        }
    }

    func testSwitchesAreTrueOrFalse() {
        let cases: [(String, String, (ServiceConfiguration) -> Bool?)] = [
            ("listeners[0]", "proxy_protocol", { $0.listeners[0].proxyProtocol }),
            ("listeners[0]", "oauth", { $0.listeners[0].oauth }),
            ("directory", "replica", { $0.directory.replica }),
            ("backends.legacy", "forward_client_address", { $0.routing.backends["legacy"].map { $0.forwardClient == .auto } }),
        ]
        for (section, key, read) in cases {
            var probe = Probe("\(key): false", in: section)
            assertLoads(probe, read, false)
            for bad in ["\"maybe\"", "2", "[true]"] {
                probe = Probe("\(key): \(bad)", in: section)
                assertRefused(probe, "expected true or false")
            }
        }
        var probe = Probe("proxy_protocol: true", in: "listeners[0]")
        probe.yaml.sections = ["trusted_proxies: [\"10.0.0.0/8\"]"]
        assertLoads(probe, { $0.listeners[0].proxyProtocol }, true)
        assertLoads(Probe("oauth: true", in: "listeners[0]"), { $0.listeners[0].oauth }, true)
        XCTAssertEqual(try files.load(MinimalYAML().text).listeners[0].oauth, false, "oauth is off unless asked for")
        assertLoads(Probe("forward_client_address: true", in: "backends.legacy"), { $0.routing.backends["legacy"]?.forwardClient }, .auto)
        assertRefused(Probe("require_tls: maybe", in: "listeners[0]"), "expected true or false")
        var verify = Probe("verify: maybe", in: "backends.legacy")
        verify.yaml.backend.insert("tls: starttls", at: 0)
        assertRefused(verify, "expected true or false")
        verify = Probe("verify: false", in: "backends.legacy")
        verify.yaml.backend.insert("tls: starttls", at: 0)
        assertLoads(verify, { $0.routing.backends["legacy"]?.tlsSettings.verify }, false)
    }

    func testChoicesNameTheirValues() throws {
        let cases: [(String, String, String, String)] = [
            ("listeners[0]", "tls", "none", "none | starttls | implicit"),
            ("backends.legacy", "tls", "starttls", "none | starttls | implicit"),
            ("backends.legacy", "forward_client", "proxy_v2", "auto | proxy_v2 | none"),
            ("directory", "change_feed", "poll", "auto | sync | poll | off"),
            ("tls", "min_version", "\"1.3\"", "1.2 | 1.3"),
        ]
        for (section, key, good, choices) in cases {
            XCTAssertNotNil(Result { try files.load(Probe("\(key): \(good)", in: section).text) }.value, "\(key): \(good)")
            assertRefused(Probe("\(key): bogus", in: section), "\"bogus\" is not one of \(choices)")
            assertRefused(Probe("\(key): [imap]", in: section), "expected a string")
        }
        // The minimal configuration states its listener's protocol: that line is edited instead.
        let pop3 = MinimalYAML().text.replacingOccurrences(of: "protocol: imap", with: "protocol: pop3")
        XCTAssertEqual(try files.load(pop3).listeners[0].service, .pop3)
        let smtp = MinimalYAML().text.replacingOccurrences(of: "protocol: imap", with: "protocol: smtp")
        XCTAssertEqual(try files.failure(smtp), "listeners[0].protocol (line 2): \"smtp\" is not one of imap | pop3")
        var backendVersion = Probe("min_version: \"1.1\"", in: "backends.legacy")
        backendVersion.yaml.backend.insert("tls: implicit", at: 0)
        assertRefused(backendVersion, "\"1.1\" is not one of 1.2 | 1.3")
        let level = Probe("level: loud", in: "log")
        assertRefused(level, "expected one of trace, debug, info, notice, warning, error, critical")
        XCTAssertEqual(try files.load(Probe("level: debug", in: "log").text).logLevel, "debug")
        XCTAssertEqual(try files.load(Probe("change_feed: off", in: "directory").text).directory.changeFeed, .off)
        XCTAssertEqual(try files.load(Probe("forward_client: none", in: "backends.legacy").text).routing.backends["legacy"]?.forwardClient,
                       ForwardClient.none)
    }
}

extension Result where Failure == any Error {
    var value: Success? { try? get() }
}
