import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Several `directory.uris` against the real lab: a server that refuses connections and one
/// that accepts and never answers are skipped in order, without a login waiting for them, and
/// a slapd that goes away and comes back is noticed both ways. Each test runs an instance of
/// its own (listener offsets 10500 and 10600).
extension ProxyIntegrationTests {
    private static let labURI = "ldap://127.0.0.1:3389"

    /// LOGIN over a raw connection: the tagged reply and how long it took after the greeting.
    private func timedRawLogin(_ user: String, port: Int) throws -> (reply: String, seconds: Double) {
        let client = try RawClient(port: port, timeout: 15)
        defer { client.close() }
        guard client.line()?.hasPrefix("* OK") == true else { throw HarnessError("no greeting on \(port)") }
        let started = Date()
        client.send("a LOGIN \(user) \(password(user))\r\n")
        let reply = client.lines(until: "a ").last ?? ""
        return (reply, Date().timeIntervalSince(started))
    }

    /// user0001..user0060 live on "legacy" (odd) or "new" (even).
    private func store(of user: String) -> String { (Int(user.dropFirst(4)) ?? 0) % 2 == 1 ? "legacy" : "new" }

    private func inUse(_ scrape: Scrape, _ server: String) -> Double? {
        scrape.samples["mailswitch_directory_server_in_use{server=\"\(server)\"}"]
    }

    private func up(_ scrape: Scrape, _ server: String) -> Double? {
        scrape.samples["mailswitch_directory_server_up{server=\"\(server)\"}"]
    }

    func testDirectoryFailoverSkipsARefusingAndAHungServerWithoutDelayingLogins() throws {
        let offset = 10500
        let refusing = "ldap://127.0.0.1:3999"
        let hung = "ldap://127.0.0.1:3997"
        XCTAssertNil(try? RawClient(port: 3999, timeout: 1), "something listens on 3999: a refused connect would not be tested")
        let silent = try SilentListener(port: 3997, purpose: "a directory server that accepts and never answers")
        defer { silent.close() }
        let instance = try MailSwitchInstance(name: "failover", labDirectory: Self.labDirectory, edits: [
            ("uris: [\"\(Self.labURI)\"]", "uris: [\"\(refusing)\", \"\(hung)\", \"\(Self.labURI)\"]"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        let port = 1143 + offset
        XCTAssertTrue(Harness.waitForPort(port), instance.log)

        // Users never looked up by this instance: every login is a directory search. They go on,
        // one every 0.4 s, until the hung server is marked down (its bind unanswered for
        // `timeout`, 3 s), so logins run while that bind is still pending; none may wait for it.
        let metrics = MailSwitchInstance.metricsPort(offset: offset)
        let users = (31...50).filter { $0 != 38 }.map { String(format: "user%04d", $0) }
        var logins = 0
        var last = try scrape(port: metrics)
        try Harness.waitUntil("the hung server marked down while logins went on (\(logins) logins): \(last.text)",
                              timeout: 10, interval: 0.4) {
            guard logins < users.count else { throw HarnessError("more logins than users: \(users.count)") }
            let user = users[logins]
            logins += 1
            let started = Date()
            let result = try imapLogin(user, password(user), port: "\(port)")
            let seconds = Date().timeIntervalSince(started)
            assertLands(result, on: store(of: user), "\(user) with the first two servers dead")
            XCTAssertLessThan(seconds, 1.0, "\(user): the login took \(seconds)s")
            last = try self.scrape(port: metrics)
            return up(last, hung) == 0
        }
        XCTAssertGreaterThanOrEqual(logins, 2, "logins ran while the hung server's bind was pending")

        let scrape = last
        XCTAssertEqual(inUse(scrape, Self.labURI), 1, "lookups go to the third server: \(scrape.text)")
        XCTAssertEqual(inUse(scrape, refusing), 0, scrape.text)
        XCTAssertEqual(inUse(scrape, hung), 0, scrape.text)
        XCTAssertEqual(up(scrape, refusing), 0, "the refusing server is marked down: \(scrape.text)")
        XCTAssertEqual(up(scrape, Self.labURI), 1, scrape.text)
        XCTAssertGreaterThanOrEqual(scrape["mailswitch_directory_errors_total{server=\"\(refusing)\"}"], 1, scrape.text)

        // The change feed went the same way, and the log says which servers it passed over.
        try instance.waitForLogLine("change feed synchronized with \(Self.labURI)", timeout: 15)
        let skipped = instance.log.split(separator: "\n").first { $0.contains("\(refusing) skipped") }
        XCTAssertNotNil(skipped, "the log names the refusing server as skipped: \(instance.log)")
        XCTAssertTrue(skipped?.contains("\(hung) skipped") ?? false, "and the hung one: \(skipped ?? "")")
        XCTAssertFalse(instance.log.contains("change feed synchronized with \(refusing)"), instance.log)
        XCTAssertFalse(instance.log.contains("change feed synchronized with \(hung)"), instance.log)

        // Still answering at once while the dead servers are retried in the background.
        let started = Date()
        assertLands(try imapLogin("user0038", password("user0038"), port: "\(port)"), on: "new", "after the feed settled")
        XCTAssertLessThan(Date().timeIntervalSince(started), 1.0)
    }

    func testSlapdStoppedUncachedLoginsFailAtOnceAndWorkAgainSoonAfterItReturns() throws {
        let offset = 10600
        let instance = try MailSwitchInstance(name: "failover-outage", labDirectory: Self.labDirectory,
                                              edits: MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        let port = 1143 + offset
        let metrics = MailSwitchInstance.metricsPort(offset: offset)
        XCTAssertTrue(Harness.waitForPort(port), instance.log)
        assertLands(try imapLogin("user0041", password("user0041"), port: "\(port)"), on: "legacy", "before the outage")

        try Harness.lab(["stop-slapd", "--dir", Self.labDirectory])
        var restarted = false
        defer { if !restarted { try? Harness.lab(["start-slapd", "--dir", Self.labDirectory]) } }
        // The first right after the connection broke, the second while the server is skipped.
        for user in ["user0043", "user0045"] {
            let (reply, seconds) = try timedRawLogin(user, port: port)
            XCTAssertEqual(reply, "a NO [UNAVAILABLE] Account is temporarily unavailable.", "\(user), uncached, slapd down")
            XCTAssertLessThan(seconds, 1.0, "\(user): the refusal took \(seconds)s")
        }
        let down = try scrape(port: metrics)
        XCTAssertEqual(up(down, Self.labURI), 0, "slapd is marked down: \(down.text)")
        XCTAssertEqual(inUse(down, Self.labURI), 0, "and not in use: \(down.text)")
        XCTAssertTrue(instance.log.contains("no directory server can be used: \(Self.labURI) down ("), instance.log)

        try Harness.lab(["start-slapd", "--dir", Self.labDirectory])
        restarted = true
        let returned = Date()
        var answer = ""
        try Harness.waitUntil("an uncached user logging in again once slapd is back: \(answer)\n\(instance.log)", timeout: 15) {
            answer = (try? self.timedRawLogin("user0047", port: port).reply) ?? "no answer"
            return answer.hasPrefix("a OK")
        }
        let seconds = Date().timeIntervalSince(returned)
        XCTAssertLessThan(seconds, 8, "back within the back-off (the outage was a few seconds): \(seconds)s")
        let back = try scrape(port: metrics)
        XCTAssertEqual(inUse(back, Self.labURI), 1, back.text)
        XCTAssertEqual(up(back, Self.labURI), 1, back.text)
        assertLands(try imapLogin("user0049", password("user0049"), port: "\(port)"), on: "legacy", "after the outage")
    }

    func testLookupsMoveToTheSecondServerWhileTheFirstIsDownAndBackWhenItReturns() throws {
        let offset = 10500
        let second = "ldap://127.0.0.1:3393"   // the lab's other slapd: same users, no syncprov
        try Harness.lab(["start-plain-slapd", "--dir", Self.labDirectory])
        let instance = try MailSwitchInstance(name: "failover-return", labDirectory: Self.labDirectory, edits: [
            ("uris: [\"\(Self.labURI)\"]", "uris: [\"\(Self.labURI)\", \"\(second)\"]"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        let port = 1143 + offset
        let metrics = MailSwitchInstance.metricsPort(offset: offset)
        XCTAssertTrue(Harness.waitForPort(port), instance.log)
        assertLands(try imapLogin("user0051", password("user0051"), port: "\(port)"), on: "legacy", "both servers up")
        let before = try scrape(port: metrics)
        XCTAssertEqual(inUse(before, Self.labURI), 1, "the first server is preferred: \(before.text)")
        XCTAssertEqual(inUse(before, second), 0, before.text)

        try Harness.lab(["stop-slapd", "--dir", Self.labDirectory])
        var restarted = false
        defer { if !restarted { try? Harness.lab(["start-slapd", "--dir", Self.labDirectory]) } }
        for user in ["user0053", "user0054"] {   // uncached: the second server answers
            let started = Date()
            let result = try imapLogin(user, password(user), port: "\(port)")
            let seconds = Date().timeIntervalSince(started)
            assertLands(result, on: store(of: user), "\(user) with the first server down")
            XCTAssertLessThan(seconds, 1.0, "\(user): the login took \(seconds)s")
        }
        let during = try scrape(port: metrics)
        XCTAssertEqual(inUse(during, second), 1, "lookups moved to the second server: \(during.text)")
        XCTAssertEqual(inUse(during, Self.labURI), 0, during.text)
        XCTAssertEqual(up(during, Self.labURI), 0, during.text)

        try Harness.lab(["start-slapd", "--dir", Self.labDirectory])
        restarted = true
        var last = during
        try Harness.waitUntil("lookups returning to the first server once its back-off runs out: \(last.text)", timeout: 10) {
            last = (try? self.scrape(port: metrics)) ?? last
            return self.inUse(last, Self.labURI) == 1
        }
        XCTAssertEqual(inUse(last, second), 0, last.text)
        XCTAssertEqual(up(last, Self.labURI), 1, last.text)
        assertLands(try imapLogin("user0055", password("user0055"), port: "\(port)"), on: "legacy", "back on the first server")
        // The feed waited for the server with syncprov instead of polling for good.
        try Harness.waitUntil("the feed resuming on the first server: \(instance.log)", timeout: 15) {
            instance.log.components(separatedBy: "change feed synchronized with \(Self.labURI) (resumed)").count == 2
        }
        XCTAssertTrue(instance.log.contains("\(second): no RFC 4533 sync"), "the replica was passed over: \(instance.log)")
        XCTAssertFalse(instance.log.contains("offers no RFC 4533 sync"), instance.log)
    }
}
