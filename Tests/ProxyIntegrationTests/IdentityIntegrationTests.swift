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
        try assertStoreHeardNothing("legacy", since: storeBefore, of: "user0023", sentinel: "user0021", on: port)
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

    /// Two backends on the lab's "modern" store, which knows users only as user@example.org:
    /// one sent the template's name with the client's own credentials, one logged in to as the
    /// store's master user on behalf of the entry's mail attribute. Passwords are checked in
    /// the directory, bearer tokens at the lab's introspection stub. Routes, and the entry's
    /// mail attribute, come from the in-memory replica.
    private func modernInstance(offset: Int) throws -> MailSwitchInstance {
        let backends = """
            backends:
              modern:
                hosts: ["127.0.0.1:40143"]
                pop3_hosts: ["127.0.0.1:40110"]
                login_name: "%n@example.org"
              modern-master:
                hosts: ["127.0.0.1:40143"]
                pop3_hosts: ["127.0.0.1:40110"]
                login_name: { attribute: mail }
                login: master
                master_user: "mailswitch-master"
                master_password_file: "\(Self.labDirectory)/master.secret"

            """
        return try MailSwitchInstance(name: "identity-modern", labDirectory: Self.labDirectory, edits: [
            ("filter: \"(&(objectClass=inetOrgPerson)(uid=%u))\"",
             "filter: \"(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))\""),
            ("  # verify_credentials: ldap_bind\n", "  verify_credentials: ldap_bind\n"),
            ("  # oauth_introspection_url: \"https://idp.example.org/oauth2/introspect\"\n",
             "  oauth_introspection_url: \"http://127.0.0.1:38080/introspect\"\n"),
            ("    # oauth: true\n", "    oauth: true\n"),
            ("  - protocol: pop3\n    address: \"127.0.0.1:1110\"\n    tls: starttls\n",
             "  - protocol: pop3\n    address: \"127.0.0.1:1110\"\n    tls: starttls\n    oauth: true\n"),
            ("backends:\n", backends),
            ("replica: false", "replica: true"),
        ] + MailSwitchInstance.movedListeners(by: offset))
    }

    /// The store's log since `mark` holds nothing with `text`, once a password login of
    /// `sentinel` made after the refused ones has reached it.
    private func assertStoreHeardNothing(_ store: String, since mark: Int, of text: String, sentinel: String, on port: String,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
        let name = store == "modern" ? "\(sentinel)@example.org" : sentinel
        assertLands(try imapLogin(sentinel, password(sentinel), port: port), on: store, "sentinel", file: file, line: line)
        try Harness.waitUntil("\(store)'s log showing \(name)'s login", timeout: 10) {
            String(self.storeLog(store).dropFirst(mark)).contains("Login: user=<\(name)>")
        }
        let heard = String(storeLog(store).dropFirst(mark)).components(separatedBy: "Login: user=<\(name)>")[0]
        XCTAssertFalse(heard.contains(text), "\(store) heard of a refused login:\n\(heard)", file: file, line: line)
    }

    private func curl(_ arguments: [String]) throws -> Harness.Output {
        try Harness.run("curl", ["-sS", "--max-time", "15"] + arguments, timeout: 30)
    }

    func testEachStoreGetsItsOwnNameAMasterLoginOrTheClientsToken() throws {
        let offset = 12100
        let imap = "\(1143 + offset)", pop3 = "\(1110 + offset)"
        try Harness.lab(["flip", "user0034", "modern", "--dir", Self.labDirectory])
        try Harness.lab(["flip", "user0036", "modern-master", "--dir", Self.labDirectory])
        defer { try? Harness.lab(["flip", "user0034,user0036", "new", "--dir", Self.labDirectory]) }
        let instance = try modernInstance(offset: offset)
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.logTail())
        try instance.waitForLogLine("directory replica: ", timeout: 15)

        // Typed as "user0034": the store, which knows only the address, is sent the template's.
        assertLands(try imapLogin("user0034", password("user0034"), port: imap), on: "modern", "template, IMAP LOGIN")
        assertLands(try pop3Login("user0034", password("user0034"), mech: "plain", port: pop3), on: "modern", "template, POP3 AUTH PLAIN")
        // A master login on the user's behalf: the store never sees the user's password.
        let masterMark = storeLog("modern").count
        assertLands(try imapLogin("user0036", password("user0036"), port: imap), on: "modern", "master, IMAP")
        assertLands(try pop3Login("User0036@Example.org", password("user0036"), port: pop3), on: "modern", "master, POP3 USER/PASS")
        try Harness.waitUntil("the modern store logging two master logins", timeout: 10) {
            String(self.storeLog("modern").dropFirst(masterMark))
                .components(separatedBy: "Master user logging in as user0036@example.org").count == 3
        }
        let refused = try imapLogin("user0036", "not-the-password", port: imap)
        XCTAssertEqual(refused["ok"] as? Bool, false, "\(refused)")
        XCTAssertTrue("\(refused)".contains("AUTHENTICATIONFAILED"), "\(refused)")

        // Bearer tokens: checked at the stub, then passed to the routed store unchanged.
        for mech in ["oauthbearer", "xoauth2"] {
            assertLands(try imapLogin("user0034@example.org", "token-user0034", mech: mech, port: imap), on: "modern", "IMAP \(mech)")
            assertLands(try pop3Login("user0034@example.org", "token-user0034", mech: mech, port: pop3), on: "modern", "POP3 \(mech)")
        }
        let tokenMark = storeLog("modern").count
        let mark = instance.logMark
        for (token, why) in [("token-nobody", "the token is not active"), ("token-user0036", "the token belongs to another user")] {
            let answer = try imapLogin("user0034@example.org", token, mech: "oauthbearer", port: imap)
            XCTAssertEqual(answer["ok"] as? Bool, false, "\(token): \(answer)")
            _ = try instance.waitForLogLine(why, since: mark)
        }
        // A login after them reaches the store and its log: what the store heard of the refused
        // ones would be in the log before it.
        try assertStoreHeardNothing("modern", since: tokenMark, of: "oauth2(", sentinel: "user0034", on: imap)
        // A store that offers no OAuth is never sent the token: refused with the RFC's error.
        let legacyMark = storeLog("legacy").count
        let noOAuth = try imapLogin("user0035@example.org", "token-user0035", mech: "oauthbearer", port: imap)
        XCTAssertEqual(noOAuth["ok"] as? Bool, false, "\(noOAuth)")
        _ = try instance.waitForLogLine("store does not offer OAUTHBEARER", since: mark)
        try assertStoreHeardNothing("legacy", since: legacyMark, of: "user0035", sentinel: "user0037", on: imap)

        // curl, as a site's scripts would use it.
        let bearer = try curl(["imap://127.0.0.1:\(imap)/INBOX/;UID=1", "--login-options", "AUTH=OAUTHBEARER",
                               "--oauth2-bearer", "token-user0034", "-u", "user0034@example.org:"])
        XCTAssertEqual(bearer.status, 0, bearer.stderr)
        XCTAssertTrue(bearer.stdout.contains("X-Store: modern"), bearer.stdout)
        let pop3Bearer = try curl(["pop3://127.0.0.1:\(pop3)/1", "--login-options", "AUTH=OAUTHBEARER",
                                   "--oauth2-bearer", "token-user0034", "-u", "user0034@example.org:"])
        XCTAssertEqual(pop3Bearer.status, 0, pop3Bearer.stderr)
        XCTAssertTrue(pop3Bearer.stdout.contains("X-Store: modern"), pop3Bearer.stdout)
        let plain = try curl(["imap://127.0.0.1:\(imap)/INBOX/;UID=1", "--login-options", "AUTH=PLAIN",
                              "-u", "user0036:\(password("user0036"))"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stdout.contains("X-Store: modern"), plain.stdout)
        // fetchmail, over STARTTLS as it does by itself, typing the bare name the store never knew.
        let rc = Self.labDirectory + "/identity-fetchmailrc", out = Self.labDirectory + "/identity-fetched"
        try? FileManager.default.removeItem(atPath: out)
        try """
            poll 127.0.0.1 service \(imap) protocol IMAP auth password user "user0034" password "\(password("user0034"))"
                sslcertck sslcertfile "\(Self.labDirectory)/tls/ca.pem" sslcommonname mail.example.test
                keep fetchall mda "/bin/sh -c 'cat >> \(out)'"

            """.write(toFile: rc, atomically: true, encoding: .utf8)
        XCTAssertEqual(chmod(rc, 0o600), 0)
        let fetched = try Harness.run("fetchmail", ["--nodetach", "--nosyslog", "-f", rc], timeout: 60)
        XCTAssertEqual(fetched.status, 0, fetched.stdout + fetched.stderr)
        let message = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        XCTAssertTrue(message.contains("X-Store: modern"), "fetchmail got: \(message)\n\(fetched.stderr)")
        let badToken = try curl(["imap://127.0.0.1:\(imap)/", "--login-options", "AUTH=OAUTHBEARER",
                                 "--oauth2-bearer", "token-nobody", "-u", "user0034@example.org:"])
        XCTAssertEqual(badToken.status, 67, "curl's 'login denied': \(badToken.stderr)")
    }
}
