import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// /metrics and /health on the example's `metrics.address` (127.0.0.1:9143 for the main
/// instance): the counters move by exactly what the tests drive, and probes leave no sessions.
extension ProxyIntegrationTests {
    static let metricNames = [
        "mailswitch_sessions_open", "mailswitch_logins_total", "mailswitch_login_duration_seconds",
        "mailswitch_directory_lookup_duration_seconds", "mailswitch_route_cache_total", "mailswitch_change_feed_state",
        "mailswitch_change_feed_changes_total", "mailswitch_directory_errors_total", "mailswitch_backend_connect_errors_total",
        "mailswitch_relay_bytes_total", "mailswitch_sessions_ended_total", "mailswitch_tls_handshakes_total",
        "mailswitch_limit_refusals_total", "mailswitch_backend_host_up", "mailswitch_directory_server_up",
        "mailswitch_directory_server_in_use",
    ]

    /// One scrape: the exposition text and its samples by series (`name{labels}`).
    struct Scrape {
        let text: String
        let samples: [String: Double]

        init(_ text: String) {
            self.text = text
            var samples: [String: Double] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
                samples[String(line[..<space])] = value
            }
            self.samples = samples
        }

        subscript(series: String) -> Double { samples[series] ?? 0 }

        /// The sum over every series of `name` whose labels include all of `labels`.
        func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
            samples.filter { key, _ in
                guard key == name || key.hasPrefix(name + "{") else { return false }
                return labels.allSatisfy { key.contains("\($0.key)=\"\($0.value)\"") }
            }.values.reduce(0, +)
        }

        /// Names declared by `# TYPE` lines.
        var declaredNames: Set<String> {
            Set(text.split(separator: "\n").compactMap { line in
                line.hasPrefix("# TYPE ") ? line.split(separator: " ").dropFirst(2).first.map(String.init) : nil
            })
        }
    }

    func scrape(port: Int = 9143) throws -> Scrape {
        let output = try Harness.run("curl", ["-sS", "--max-time", "5", "http://127.0.0.1:\(port)/metrics"], timeout: 10)
        guard output.status == 0 else { throw HarnessError("scrape failed: \(output.stderr)") }
        return Scrape(output.stdout)
    }

    /// Status code, headers and body of one request with curl.
    func http(_ path: String, method: String = "GET", port: Int = 9143) throws -> (status: Int, headers: String, body: String) {
        let headersFile = Self.labDirectory + "/http-headers-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: headersFile) }
        var arguments = ["-sS", "--max-time", "5", "-D", headersFile, "-w", "\n%{http_code}"]
        arguments += method == "HEAD" ? ["-I"] : ["-X", method]
        let output = try Harness.run("curl", arguments + ["http://127.0.0.1:\(port)\(path)"], timeout: 10)
        guard output.status == 0 else { throw HarnessError("curl \(path) failed: \(output.stderr)") }
        let lines = output.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let headers = (try? String(contentsOfFile: headersFile, encoding: .utf8)) ?? ""
        return (Int(lines.last ?? "") ?? 0, headers, method == "HEAD" ? "" : lines.dropLast().joined(separator: "\n"))
    }

    /// Scrapes until `condition` holds (the proxy ends a session a moment after the client);
    /// throws, with the last scrape, when it has not within `timeout`.
    func scrape(port: Int = 9143, until condition: (Scrape) -> Bool, timeout: Double = 10,
                file: StaticString = #filePath, line: UInt = #line) throws -> Scrape {
        var last = try scrape(port: port)
        return try Harness.waitFor("a scrape of :\(port) meeting the test's condition; the last:\n\(last.text)",
                                   timeout: timeout, interval: 0.1, file: file, line: line) {
            last = try scrape(port: port)
            return condition(last) ? last : nil
        }
    }

    // MARK: - Counting what the tests drive

    func testMetricsCountLoginsByResultAndOpenSessions() throws {
        let logins = "mailswitch_logins_total"
        let held = "user0041"   // on legacy
        let before = try scrape()

        assertLands(try imapLogin("alice", "alice-secret"), on: "legacy", "a login that succeeds")
        XCTAssertEqual(try imapLogin("alice", "not-her-password")["ok"] as? Bool, false, "a wrong password")
        let holding = try cli(["hold", held])
        XCTAssertEqual(holding.status, 0, holding.stderr)
        let refused = try imapLogin(held, password(held))
        let release = try cli(["release", held])
        XCTAssertEqual(release.status, 0, release.stderr)
        XCTAssertEqual(refused["ok"] as? Bool, false, "a held user: \(refused)")

        let ended = "mailswitch_sessions_ended_total"
        let after = try scrape { $0.sum(ended) - before.sum(ended) >= 3 }
        XCTAssertEqual(after["\(logins){result=\"ok\"}"] - before["\(logins){result=\"ok\"}"], 1, after.text)
        XCTAssertEqual(after["\(logins){result=\"auth_failed\"}"] - before["\(logins){result=\"auth_failed\"}"], 1, after.text)
        XCTAssertEqual(after["\(logins){result=\"held\"}"] - before["\(logins){result=\"held\"}"], 1, after.text)
        for result in ["temp_failed", "refused", "timeout"] {
            XCTAssertEqual(after["\(logins){result=\"\(result)\"}"], before["\(logins){result=\"\(result)\"}"], "\(result): \(after.text)")
        }
        XCTAssertEqual(after["mailswitch_login_duration_seconds_count"] - before["mailswitch_login_duration_seconds_count"], 1,
                       "the successful login's latency is recorded once")
        // Three sessions, each ended by its client (or, after LOGOUT, by the store answering it).
        XCTAssertEqual(after.sum(ended) - before.sum(ended), 3, after.text)
        XCTAssertEqual(after.sum(ended, ["reason": "client"]) + after.sum(ended, ["reason": "store"])
                       - before.sum(ended, ["reason": "client"]) - before.sum(ended, ["reason": "store"]), 3, after.text)
        XCTAssertGreaterThan(after.sum("mailswitch_relay_bytes_total", ["direction": "store_to_client", "backend": "legacy"]),
                             before.sum("mailswitch_relay_bytes_total", ["direction": "store_to_client", "backend": "legacy"]),
                             "bytes are counted when the session ends")
        XCTAssertEqual(after.sum("mailswitch_sessions_open"), before.sum("mailswitch_sessions_open"), "nothing left open")

        // A session held open shows on its listener and backend, and leaves when it ends.
        let open = "mailswitch_sessions_open"
        let scope = ["listener": "127.0.0.1:1143", "protocol": "imap", "backend": "legacy"]
        let fixture = try hold(["user0043"])
        let during = try scrape()
        XCTAssertEqual(during.sum(open, scope) - after.sum(open, scope), 1, during.text)
        XCTAssertEqual(during.sum(open) - after.sum(open), 1, "only that one: \(during.text)")
        fixture.stop()
        _ = try fixture.result()
        let closed = try scrape { $0.sum(open) == after.sum(open) }
        XCTAssertEqual(closed.sum(open), after.sum(open), closed.text)
        XCTAssertEqual(closed.sum(ended) - after.sum(ended), 1, closed.text)
    }

    func testMetricsCountClientTLSHandshakesAndTheirSessions() throws {
        let handshakes = "mailswitch_tls_handshakes_total"
        let before = try scrape()
        let result = try Harness.client(["imap-login", "--host", "127.0.0.1", "--port", "1993", "--tls", "implicit",
                                         "--cafile", Self.labDirectory + "/tls/ca.pem", "--user", "bob", "--password", "bob-secret"])
        assertLands(result, on: "new", "IMAPS")
        let after = try scrape { $0.sum("mailswitch_sessions_ended_total") > before.sum("mailswitch_sessions_ended_total") }
        XCTAssertEqual(after.sum(handshakes, ["result": "ok"]) - before.sum(handshakes, ["result": "ok"]), 1, after.text)
        XCTAssertEqual(after.sum(handshakes, ["result": "failed"]), before.sum(handshakes, ["result": "failed"]), after.text)
        XCTAssertEqual(after["mailswitch_logins_total{result=\"ok\"}"] - before["mailswitch_logins_total{result=\"ok\"}"], 1)
        XCTAssertGreaterThan(after.sum("mailswitch_relay_bytes_total", ["backend": "new"]),
                             before.sum("mailswitch_relay_bytes_total", ["backend": "new"]))
        // A client that connects to the IMAPS port and hangs up: a failed handshake.
        let probe = try RawClient(port: 1993)
        probe.close()
        let failed = try scrape { $0.sum(handshakes, ["result": "failed"]) > after.sum(handshakes, ["result": "failed"]) }
        XCTAssertEqual(failed.sum(handshakes, ["result": "failed"]) - after.sum(handshakes, ["result": "failed"]), 1, failed.text)
    }

    // MARK: - Every metric exists

    func testMetricsEveryNameAppearsInALiveScrape() throws {
        let scrape = try scrape()
        let declared = scrape.declaredNames
        for name in Self.metricNames {
            XCTAssertTrue(declared.contains(name), "\(name) is missing from /metrics:\n\(scrape.text)")
        }
        // Series that exist before anything happened, at their configured labels.
        XCTAssertNotNil(scrape.samples["mailswitch_directory_errors_total{server=\"ldap://127.0.0.1:3389\"}"], scrape.text)
        XCTAssertNotNil(scrape.samples["mailswitch_backend_connect_errors_total{backend=\"new\",host=\"127.0.0.1:20993\"}"], scrape.text)
        XCTAssertNotNil(scrape.samples["mailswitch_login_duration_seconds_bucket{le=\"0.1\"}"], scrape.text)
        // A test before may have restarted slapd: the feed reconnects within a few seconds.
        let following = try self.scrape(until: { $0["mailswitch_change_feed_state"] == 2 }, timeout: 15)
        XCTAssertEqual(following["mailswitch_change_feed_state"], 2, "following the lab's syncprov feed")
        XCTAssertFalse(scrape.text.contains("user="), "no user label")
    }

    // MARK: - /health and HTTP

    func testMetricsHealthAnswersProbesWithoutSessions() throws {
        let logBefore = Self.proxy!.log.count
        let sessionsBefore = try cli(["sessions", "--json"]).stdout
        let health = try http("/health")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.body, "ok\n")
        XCTAssertTrue(health.headers.lowercased().contains("connection: close"), health.headers)
        XCTAssertEqual(try http("/health", method: "HEAD").status, 200)
        let metrics = try http("/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.headers.contains("Content-Type: text/plain; version=0.0.4"), metrics.headers)
        XCTAssertEqual(try http("/nothing-here").status, 404)
        XCTAssertEqual(try http("/").status, 404)
        XCTAssertEqual(try http("/metrics", method: "POST").status, 405)
        XCTAssertEqual(try http("/health?probe=1").status, 200, "a query string is ignored")

        // A request head over 8 KiB is refused, and a connection that says nothing is closed.
        let big = try RawClient(port: 9143)
        defer { big.close() }
        big.send("GET /health HTTP/1.1\r\nX-Filler: \(String(repeating: "x", count: 9000))\r\n\r\n")
        XCTAssertEqual(big.line(), "HTTP/1.1 431 Request Header Fields Too Large")
        let garbage = try RawClient(port: 9143)
        defer { garbage.close() }
        garbage.send("HELLO\r\n\r\n")
        XCTAssertEqual(garbage.line(), "HTTP/1.1 400 Bad Request")

        XCTAssertEqual(try cli(["sessions", "--json"]).stdout, sessionsBefore, "probes are not sessions")
        let logAfter = String(Self.proxy!.log.dropFirst(logBefore))
        XCTAssertFalse(logAfter.contains("session=") || logAfter.contains("session ended"), "probes write no session log lines: \(logAfter)")
    }

    func testMetricsHealthSaysDrainingOnceTheStopBegins() throws {
        let offset = 8900
        let port = MailSwitchInstance.metricsPort(offset: offset)
        let instance = try MailSwitchInstance(name: "metrics-drain", labDirectory: Self.labDirectory,
                                              edits: MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.log)
        XCTAssertTrue(Harness.waitForPort(port), instance.log)
        XCTAssertEqual(try http("/health", port: port).status, 200)
        // A session keeps the drain going (shutdown_grace 30s).
        let fixture = try hold(["user0045"], port: String(1143 + offset))
        defer {
            fixture.stop()
            _ = try? fixture.result()
        }
        XCTAssertEqual(try scrape(port: port).sum("mailswitch_sessions_open", ["backend": "legacy"]), 1)
        kill(instance.process.processIdentifier, SIGTERM)
        var health = try http("/health", port: port)
        try Harness.waitUntil("/health answering 503 once the stop began (last: \(health.status)): \(instance.log)", timeout: 5) {
            health = try http("/health", port: port)
            return health.status == 503
        }
        XCTAssertEqual(health.body, "draining\n")
        XCTAssertEqual(try http("/metrics", port: port).status, 200, "metrics are served while draining")
        XCTAssertThrowsError(try RawClient(port: 1143 + offset, timeout: 1), "the mail listeners are closed")
    }
}
