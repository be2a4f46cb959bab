import Foundation
import XCTest

/// One user, many login names; each store sent the name it wants.
extension ProxyIntegrationTests {
    func testAnOldDivisionAddressReachesTheUserAndTheStoreGetsItsOwnName() throws {
        let offset = 11800
        let instance = try MailSwitchInstance(name: "identity", labDirectory: Self.labDirectory, edits: [
            ("  # login_rewrite:\n  #   lowercase: true\n  #   map_domains: { msd.example.org: example.org }\n"
             + "  #   strip_domains: [\"example.org\"]\n",
             "  login_rewrite:\n    lowercase: true\n    map_domains: { msd.example.org: example.org }\n"
             + "    strip_domains: [\"example.org\"]\n"),
            ("    # login_name: \"%n\"\n", "    login_name: \"%n\"\n"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.logTail())
        // The directory knows uid=user0005; the legacy store knows "user0005" and nothing else.
        for login in ["User0005@MSD.Example.ORG", "USER0005", "user0005@example.org"] {
            let mark = instance.logMark
            assertLands(try imapLogin(login, password("user0005"), port: "\(1143 + offset)"), on: "legacy", login)
            _ = try instance.waitForLogLine("login ok", "user=user0005", since: mark)
        }
        assertLands(try imapLogin("user0005@msd.example.org", password("user0005"), mech: "plain", port: "\(1143 + offset)"),
                    on: "legacy", "AUTHENTICATE PLAIN")
        assertLands(try pop3Login("User0005@msd.example.org", password("user0005"), port: "\(1110 + offset)"),
                    on: "legacy", "POP3 USER/PASS")
    }

    func testAHoldAndAKickReachEveryLoginNameOfTheEntry() throws {
        let offset = 11900
        let port = "\(1143 + offset)"
        let instance = try MailSwitchInstance(name: "identity-entry", labDirectory: Self.labDirectory, edits: [
            ("filter: \"(&(objectClass=inetOrgPerson)(uid=%u))\"",
             "filter: \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))\""),
            ("    # login_name: \"%n\"\n", "    login_name: \"%n\"\n"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.logTail())
        // A session opened under the address, kicked by the uid: one entry, one user.
        let fixture = try BackgroundFixture("sessions.py", ["hold", "--host", "127.0.0.1", "--port", port, "--proto", "imap",
                                                            "--per-user", "1", "--max-seconds", "60", "--idle",
                                                            "--user", "user0013@example.org:\(password("user0013"))"],
                                            directory: Self.labDirectory, stoppable: true)
        let ready = try fixture.waitUntilReady()
        XCTAssertEqual(ready["opened"] as? Int, 1, "\(ready)")
        let kicked = try cli(["kick", "user0013"], instance: instance)
        XCTAssertEqual(kicked.status, 0, kicked.stdout + kicked.stderr)
        let ended = sessions(try fixture.result())
        XCTAssertEqual(ended.count, 1)
        XCTAssertEqual(ended.first?["ended_by_server"] as? Bool, true, "\(ended)")
        // A hold set on the uid refuses the address too, until it is released.
        let held = try cli(["hold", "user0015", "--reason", "Final sync, back soon"], instance: instance)
        XCTAssertEqual(held.status, 0, held.stdout + held.stderr)
        let refused = try imapLogin("user0015@example.org", password("user0015"), port: port)
        XCTAssertNotEqual(refused["ok"] as? Bool, true, "\(refused)")
        XCTAssertTrue("\(refused)".contains("Final sync, back soon"), "\(refused)")
        let released = try cli(["release", "user0015"], instance: instance)
        XCTAssertEqual(released.status, 0, released.stdout + released.stderr)
        assertLands(try imapLogin("user0015@example.org", password("user0015"), port: port), on: "legacy", "released")
    }

    /// The lab stores' own log: which logins reached a store.
    private func storeLog(_ store: String) -> String {
        (try? String(contentsOfFile: Self.labDirectory + "/\(store)/dovecot.log", encoding: .utf8)) ?? ""
    }

    func testPasswordsAreCheckedInTheDirectoryAndAWrongOneNeverReachesAStore() throws {
        let offset = 12000
        let port = "\(1143 + offset)"
        let metrics = MailSwitchInstance.metricsPort(offset: offset)
        let instance = try MailSwitchInstance(name: "identity-verify", labDirectory: Self.labDirectory, edits: [
            ("filter: \"(&(objectClass=inetOrgPerson)(uid=%u))\"",
             "filter: \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))\""),
            ("  # verify_credentials: ldap_bind\n", "  verify_credentials: ldap_bind\n"),
            ("  # verify_cache_ttl: \"5m\"\n", "  verify_cache_ttl: \"5m\"\n"),
            ("    # login_name: { attribute: uid }\n", "    login_name: { attribute: uid }\n"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.logTail())

        // The address finds the entry; the legacy store, which knows only "user0021", is sent
        // the entry's uid.
        assertLands(try imapLogin("user0021@example.org", password("user0021"), port: port), on: "legacy", "IMAP LOGIN")
        assertLands(try imapLogin("user0021@example.org", password("user0021"), mech: "plain", port: port), on: "legacy",
                    "AUTHENTICATE PLAIN")
        assertLands(try pop3Login("user0021@example.org", password("user0021"), port: "\(1110 + offset)"), on: "legacy", "POP3")

        // A wrong password is refused as one, after the delay, and no store hears of it.
        let storeBefore = storeLog("legacy").count
        let mark = instance.logMark
        let wrong = try imapLogin("user0023", "not-the-password", port: port)
        XCTAssertEqual(wrong["ok"] as? Bool, false, "\(wrong)")
        XCTAssertTrue("\(wrong)".contains("AUTHENTICATIONFAILED"), "\(wrong)")
        _ = try instance.waitForLogLine("login refused: password refused by the directory", since: mark)
        XCTAssertFalse(String(storeLog("legacy").dropFirst(storeBefore)).contains("user0023"),
                       "the store saw the wrong password's login")
        let checks = try scrape(port: metrics) { $0.sum("mailswitch_password_checks_total", ["result": "refused"]) >= 1 }
        XCTAssertGreaterThanOrEqual(checks.sum("mailswitch_password_checks_total", ["result": "accepted"]), 1, checks.text)
        XCTAssertGreaterThanOrEqual(checks.sum("mailswitch_password_checks_total", ["result": "cached"]), 1, checks.text)
        XCTAssertFalse(instance.log.contains("not-the-password"), "a password in the log")

        // The directory down: a password accepted within verify_cache_ttl still opens the
        // mailbox; any other is a temporary failure, never a refusal.
        try Harness.lab(["stop-slapd", "--dir", Self.labDirectory])
        var restarted = false
        defer { if !restarted { try? Harness.lab(["start-slapd", "--dir", Self.labDirectory]) } }
        assertLands(try imapLogin("user0021@example.org", password("user0021"), port: port), on: "legacy", "cached, slapd down")
        for (user, pass) in [("user0021@example.org", "a-guess"), ("user0025", password("user0025"))] {
            let answer = try imapLogin(user, pass, port: port)
            XCTAssertEqual(answer["ok"] as? Bool, false, "\(user): \(answer)")
            XCTAssertTrue("\(answer)".contains("UNAVAILABLE"), "\(user), slapd down: \(answer)")
        }
        try Harness.lab(["start-slapd", "--dir", Self.labDirectory])
        restarted = true
        try Harness.waitUntil("user0025 logging in once slapd is back\n\(instance.logTail())", timeout: 15) {
            (try? self.imapLogin("user0025", self.password("user0025"), port: port))?["ok"] as? Bool == true
        }
    }
}
