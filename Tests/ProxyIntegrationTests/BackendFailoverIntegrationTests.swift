import Foundation
import XCTest

/// Several hosts per store: a dead one is skipped by new logins until a retry finds it
/// answering, and with every host down the client gets the temporary failure at once.
/// Listener offset 11200.
extension ProxyIntegrationTests {
    func testADeadStoreHostIsSkippedAndAllHostsDownFailsAtOnce() throws {
        let offset = 11200
        let imap = 1143 + offset
        // Nothing listens on 10999: connecting there is refused.
        let instance = try MailSwitchInstance(name: "backend-failover", labDirectory: Self.labDirectory, edits: [
            ("hosts: [\"127.0.0.1:10143\"]", "hosts: [\"127.0.0.1:10999\", \"127.0.0.1:10143\"]"),
            ("pop3_hosts: [\"127.0.0.1:10110\"]", "pop3_hosts: [\"127.0.0.1:10998\", \"127.0.0.1:10997\"]"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(imap), instance.log)

        for attempt in 1...3 {
            let started = Date()
            assertLands(try imapLogin("alice", "alice-secret", port: "\(imap)"), on: "legacy", "login \(attempt) past the dead host")
            XCTAssertLessThan(Date().timeIntervalSince(started), 1.0, "login \(attempt) within a second")
        }
        XCTAssertEqual(instance.log.components(separatedBy: "host 127.0.0.1:10999 is down").count - 1, 1,
                       "logged once, then skipped: \(instance.log)")
        let status = try cli(["status"], instance: instance)
        XCTAssertTrue(status.stdout.contains("backend hosts down: 127.0.0.1:10999"), status.stdout)
        let scrape = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))
        XCTAssertEqual(scrape["mailswitch_backend_host_up{backend=\"legacy\",address=\"127.0.0.1:10999\"}"], 0, scrape.text)

        // POP3 for legacy has no live host at all: the temporary failure, not a hang.
        let client = try RawClient(port: 1110 + offset, timeout: 10)
        XCTAssertEqual(client.line()?.hasPrefix("+OK"), true)
        client.send("USER alice\r\n")
        _ = client.line()
        client.send("PASS alice-secret\r\n")
        XCTAssertEqual(client.line(), "-ERR [SYS/TEMP] Account is temporarily unavailable.")
        client.close()
        // Both are down now; the next login within the back-off does not even try them.
        let again = try RawClient.pop3Login(port: 1110 + offset, user: "alice", password: "alice-secret", timeout: 10)
        XCTAssertEqual(again.greeting?.hasPrefix("+OK"), true)
        XCTAssertEqual(again.answer, "-ERR [SYS/TEMP] Account is temporarily unavailable.")
        XCTAssertTrue(instance.log.contains("every host is down (127.0.0.1:10998, 127.0.0.1:10997)"), instance.log)
    }
}
