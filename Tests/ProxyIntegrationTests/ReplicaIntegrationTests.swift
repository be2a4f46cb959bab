import Foundation
import XCTest

/// `directory.replica: true` against the lab's slapd (syncprov): every login is answered from
/// memory, a change reaches the replica through the feed, and every user, not only cached
/// ones, keeps logging in while slapd is down. Listener offset 11300.
extension ProxyIntegrationTests {
    func testTheReplicaRoutesEveryoneWithoutLDAPAndFollowsChanges() throws {
        let offset = 11300
        let imap = 1143 + offset
        let instance = try MailSwitchInstance(name: "replica", labDirectory: Self.labDirectory, edits: [
            ("replica: false", "replica: true"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(imap), instance.log)
        try instance.waitForLogLine("directory replica: ", timeout: 15)
        let metrics = MailSwitchInstance.metricsPort(offset: offset)
        let lookups = "mailswitch_directory_lookup_duration_seconds_count"
        // The start-up readiness probe asked LDAP before the replica was built; nothing since.
        let before = try scrape(port: metrics).sum(lookups)

        assertLands(try imapLogin("alice", "alice-secret", port: "\(imap)"), on: "legacy", "from the replica")
        assertLands(try imapLogin("bob", "bob-secret", port: "\(imap)"), on: "new", "from the replica")
        XCTAssertEqual(try scrape(port: metrics).sum(lookups), before, "no LDAP search for a login")

        // A flip reaches the replica through the feed; the next login follows it.
        let user = "user0047"   // on legacy
        try flip([user], "new")
        defer { try? flip([user], "legacy") }
        try Harness.waitUntil("the flipped user landing on the new store: \(instance.log)", timeout: 5) {
            (try? self.imapLogin(user, self.password(user), port: "\(imap)"))?["store"] as? String == "new"
        }

        // slapd down: users never looked up before still log in.
        try Harness.lab(["stop-slapd", "--dir", Self.labDirectory])
        var restarted = false
        defer { if !restarted { try? Harness.lab(["start-slapd", "--dir", Self.labDirectory]) } }
        for (name, store) in [("user0049", "legacy"), ("user0050", "new"), ("carol", "legacy"), ("erin", "new")] {
            assertLands(try imapLogin(name, password(name), port: "\(imap)"), on: store, "\(name) with slapd down")
        }
        XCTAssertEqual(try scrape(port: metrics).sum(lookups), before, "still no LDAP search")
        // Back: the feed reconnects and rebuilds the replica from a full refresh.
        try Harness.lab(["start-slapd", "--dir", Self.labDirectory])
        restarted = true
        try Harness.waitUntil("the replica rebuilt after slapd returned: \(instance.log)", timeout: 20) {
            instance.log.components(separatedBy: "directory replica: ").count >= 3
        }
        assertLands(try imapLogin("user0051", password("user0051"), port: "\(imap)"), on: "legacy", "after the rebuild")
    }
}
