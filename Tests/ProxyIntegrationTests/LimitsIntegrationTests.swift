import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Limits and the brute-force defence against the real lab: each test runs an instance of its
/// own with the limit lowered (listener offsets 10000-10400), and plays several clients from
/// different 127.0.0.x source addresses.
extension ProxyIntegrationTests {
    /// The IMAP port of an instance moved by `offset`.
    private func port(_ offset: Int) -> Int { 1143 + offset }

    /// LOGIN over a raw connection from `source`: the tagged reply and how long it took.
    private func rawLogin(_ user: String, _ password: String, port: Int, source: String? = nil) throws -> (reply: String, seconds: Double) {
        let client = try RawClient(port: port, source: source, timeout: 15)
        defer { client.close() }
        guard client.line()?.hasPrefix("* OK") == true else { throw HarnessError("no greeting on \(port)") }
        let started = Date()
        client.send("a LOGIN \"\(user)\" \"\(password)\"\r\n")
        let reply = client.lines(until: "a ").last ?? ""
        return (reply, Date().timeIntervalSince(started))
    }

    private func dovecotLog(_ store: String) -> String {
        (try? String(contentsOfFile: "\(Self.labDirectory)/\(store)/dovecot.log", encoding: .utf8)) ?? ""
    }

    // MARK: - Connections

    func testConnectionsPerAddressAndOverallAreLimitedWithTheProtocolsGoodbye() throws {
        let offset = 10000
        let instance = try MailSwitchInstance(name: "limits-connections", labDirectory: Self.labDirectory, edits: [
            ("max_connections_per_ip: 200", "max_connections_per_ip: 3"),
            ("max_connections: 100000", "max_connections: 5"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(port(offset)), instance.log)
        // The port probe is a connection from 127.0.0.1 too: its place must be given back
        // before the three below are counted.
        _ = try instance.waitForLogLine("client=127.0.0.1", "closing: client disconnected before login")
        let metrics = MailSwitchInstance.metricsPort(offset: offset)

        var open: [RawClient] = []
        defer { open.forEach { $0.close() } }
        for _ in 0..<3 {
            let client = try RawClient(port: port(offset), source: "127.0.0.1")
            XCTAssertEqual(client.line()?.hasPrefix("* OK [CAPABILITY"), true)
            open.append(client)
        }
        let fourth = try RawClient(port: port(offset), source: "127.0.0.1")
        XCTAssertEqual(fourth.line(), "* BYE [UNAVAILABLE] Too many connections from your address.")
        XCTAssertTrue(fourth.isClosedByPeer(), "closed after the goodbye")
        fourth.close()
        // Another address still gets in, up to the overall limit.
        for _ in 0..<2 {
            let client = try RawClient(port: port(offset), source: "127.0.0.2")
            XCTAssertEqual(client.line()?.hasPrefix("* OK [CAPABILITY"), true)
            open.append(client)
        }
        let overall = try RawClient(port: port(offset), source: "127.0.0.3")
        XCTAssertEqual(overall.line(), "* BYE [UNAVAILABLE] Too many connections, try again later.")
        overall.close()
        // POP3 says it its way.
        let pop3 = try RawClient(port: 1110 + offset, source: "127.0.0.4")
        XCTAssertEqual(pop3.line(), "-ERR [SYS/TEMP] Too many connections, try again later.")
        pop3.close()
        // A closed connection gives its place back.
        open.removeFirst().close()
        try Harness.waitUntil("a place free again once a connection closed", timeout: 5) {
            guard let client = try? RawClient(port: self.port(offset), source: "127.0.0.1") else { return false }
            defer { client.close() }
            return client.line()?.hasPrefix("* OK") == true
        }

        let scrape = try scrape(port: metrics)
        XCTAssertEqual(scrape["mailswitch_limit_refusals_total{limit=\"max_connections_per_ip\"}"], 1, scrape.text)
        XCTAssertGreaterThanOrEqual(scrape["mailswitch_limit_refusals_total{limit=\"max_connections\"}"], 2, scrape.text)
        XCTAssertTrue(instance.log.contains("connection from 127.0.0.1 refused: max_connections_per_ip reached"), instance.log)
        XCTAssertTrue(instance.log.contains("refused: max_connections reached"), instance.log)
    }

    // MARK: - Sessions per user and per store

    func testSessionsPerUserAreLimitedWithoutAskingTheStore() throws {
        let offset = 10100
        let instance = try MailSwitchInstance(name: "limits-user", labDirectory: Self.labDirectory, edits: [
            ("max_sessions_per_user: 50", "max_sessions_per_user: 2"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(port(offset)), instance.log)
        let fixture = try hold(["user0057"], perUser: 2, port: "\(port(offset))")
        defer { fixture.stop() }
        let third = try rawLogin("user0057", password("user0057"), port: port(offset))
        XCTAssertEqual(third.reply, "a NO [LIMIT] Too many sessions for this user.")
        assertLands(try imapLogin("user0059", password("user0059"), port: "\(port(offset))"), on: "legacy",
                    "another user is not affected")
        let scrape = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))
        XCTAssertEqual(scrape["mailswitch_limit_refusals_total{limit=\"max_sessions_per_user\"}"], 1, scrape.text)
        XCTAssertEqual(scrape["mailswitch_logins_total{result=\"limited\"}"], 1, scrape.text)
        XCTAssertTrue(instance.log.contains("max_sessions_per_user (2) reached"), instance.log)
    }

    func testAStoresSessionLimitRefusesLoginsTheStoreNeverSees() throws {
        let offset = 10200
        let instance = try MailSwitchInstance(name: "limits-store", labDirectory: Self.labDirectory, edits: [
            ("# max_sessions: 5000", "max_sessions: 2"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(port(offset)), instance.log)
        let fixture = try hold(["user0053", "user0055"], port: "\(port(offset))")   // both on legacy
        let seenBefore = dovecotLog("legacy").components(separatedBy: "user=<user0051>").count
        // A wrong password shows the store was not asked: it would have said AUTHENTICATIONFAILED.
        let refused = try rawLogin("user0051", "wrong-password", port: port(offset))
        XCTAssertEqual(refused.reply, "a NO [UNAVAILABLE] Account is temporarily unavailable.")
        XCTAssertEqual(dovecotLog("legacy").components(separatedBy: "user=<user0051>").count, seenBefore,
                       "the legacy store never saw the refused login")
        assertLands(try imapLogin("user0052", password("user0052"), port: "\(port(offset))"), on: "new",
                    "the other store has no limit")
        fixture.stop()
        _ = try fixture.result()
        try Harness.waitUntil("a slot free again once the sessions ended: \(instance.log)", timeout: 5) {
            (try? self.imapLogin("user0051", self.password("user0051"), port: "\(self.port(offset))"))?["ok"] as? Bool == true
        }
        let scrape = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))
        XCTAssertGreaterThanOrEqual(scrape["mailswitch_limit_refusals_total{limit=\"backend_max_sessions\"}"], 1, scrape.text)
        XCTAssertTrue(instance.log.contains("backend legacy: backend_max_sessions reached"), instance.log)
    }

    func testAStoresLoginRateIsLimited() throws {
        let offset = 10300
        let instance = try MailSwitchInstance(name: "limits-rate", labDirectory: Self.labDirectory, edits: [
            ("# max_logins_per_second: 200", "max_logins_per_second: 0.2"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(port(offset)), instance.log)
        // One login per 5 s: the first passes, the next at once is refused as temporary.
        XCTAssertTrue(try rawLogin("alice", "alice-secret", port: port(offset)).reply.hasPrefix("a OK"))
        let second = try pop3RawLogin("user0033", password("user0033"), port: 1110 + offset)   // legacy too
        XCTAssertEqual(second, "-ERR [SYS/TEMP] Account is temporarily unavailable.")
        XCTAssertTrue(instance.log.contains("backend legacy: backend_max_logins_per_second reached"), instance.log)
    }

    private func pop3RawLogin(_ user: String, _ password: String, port: Int) throws -> String {
        let client = try RawClient(port: port, timeout: 15)
        defer { client.close() }
        guard client.line()?.hasPrefix("+OK") == true else { throw HarnessError("no POP3 greeting on \(port)") }
        client.send("USER \(user)\r\n")
        _ = client.line()
        client.send("PASS \(password)\r\n")
        return client.line() ?? ""
    }

    // MARK: - Brute force

    func testFailedLoginsAreDelayedAlikeAndGuessersAreRefused() throws {
        let offset = 10400
        let instance = try MailSwitchInstance(name: "limits-auth", labDirectory: Self.labDirectory, edits: [
            ("auth_failure_delay: \"2s\"", "auth_failure_delay: \"1s\""),
            ("max_auth_failures_per_ip: 20", "max_auth_failures_per_ip: 3"),
            ("max_auth_failures_per_user: 10", "max_auth_failures_per_user: 2"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(port(offset)), instance.log)

        // An unknown user and a wrong password: the same text, both after the delay.
        let unknown = try rawLogin("nobody-here", "whatever", port: port(offset), source: "127.0.0.11")
        let wrong = try rawLogin("alice", "not-her-password", port: port(offset), source: "127.0.0.11")
        XCTAssertEqual(unknown.reply, "a NO [AUTHENTICATIONFAILED] Authentication failed.")
        XCTAssertEqual(wrong.reply, unknown.reply)
        XCTAssertGreaterThanOrEqual(unknown.seconds, 0.95, "answered after auth_failure_delay")
        XCTAssertGreaterThanOrEqual(wrong.seconds, 0.95, "answered after auth_failure_delay")
        // A third failure from the address, then even the right password is refused there...
        _ = try rawLogin("bob", "not-his-password", port: port(offset), source: "127.0.0.11")
        let blocked = try rawLogin("user0031", password("user0031"), port: port(offset), source: "127.0.0.11")
        XCTAssertEqual(blocked.reply, "a NO [UNAVAILABLE] Too many failed logins, try again later.")
        XCTAssertGreaterThanOrEqual(blocked.seconds, 0.95, "a refusal for failed logins is delayed too")
        // ... but not from elsewhere.
        XCTAssertTrue(try rawLogin("user0031", password("user0031"), port: port(offset), source: "127.0.0.12").reply.hasPrefix("a OK"))

        // Per user: dave logs in from .13, then a guesser fails twice from .14 and .15.
        XCTAssertTrue(try rawLogin("dave", "dave-secret", port: port(offset), source: "127.0.0.13").reply.hasPrefix("a OK"))
        _ = try rawLogin("dave", "guess-1", port: port(offset), source: "127.0.0.14")
        _ = try rawLogin("dave", "guess-2", port: port(offset), source: "127.0.0.15")
        XCTAssertEqual(try rawLogin("dave", "dave-secret", port: port(offset), source: "127.0.0.16").reply,
                       "a NO [UNAVAILABLE] Too many failed logins, try again later.", "a new address is refused for dave")
        XCTAssertTrue(try rawLogin("dave", "dave-secret", port: port(offset), source: "127.0.0.13").reply.hasPrefix("a OK"),
                      "dave's own client, which logged in before, is not locked out")

        let scrape = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))
        XCTAssertEqual(scrape["mailswitch_limit_refusals_total{limit=\"auth_failures_per_ip\"}"], 1, scrape.text)
        XCTAssertEqual(scrape["mailswitch_limit_refusals_total{limit=\"auth_failures_per_user\"}"], 1, scrape.text)
        XCTAssertTrue(instance.log.contains("auth_failures_per_ip reached"), instance.log)
    }
}
