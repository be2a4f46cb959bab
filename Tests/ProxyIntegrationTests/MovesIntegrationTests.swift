import Foundation
import XCTest

/// Transparent moves against the same lab: slapd with syncprov, two Dovecot stores, and
/// mailswitch following the directory's RFC 4533 feed. Users user0001..user0060 start on
/// "legacy" (odd) or "new" (even); every test puts back what it flipped.
extension ProxyIntegrationTests {
    func password(_ user: String) -> String { passwords[user] ?? "pw-\(user)" }

    func hold(_ users: [String], perUser: Int = 1, proto: String = "imap", port: String = imapPort,
                      idle: Bool = true) throws -> BackgroundFixture {
        var arguments = ["hold", "--host", "127.0.0.1", "--port", port, "--proto", proto, "--per-user", "\(perUser)",
                         "--max-seconds", "60"]
        if idle && proto == "imap" { arguments.append("--idle") }
        for user in users { arguments += ["--user", "\(user):\(password(user))"] }
        let fixture = try BackgroundFixture("sessions.py", arguments, directory: Self.labDirectory, stoppable: true)
        let ready = try fixture.waitUntilReady()
        XCTAssertEqual(ready["failed"] as? Int, 0, "every session logs in: \(ready)")
        XCTAssertEqual(ready["opened"] as? Int, users.count * perUser, "\(ready)")
        return fixture
    }

    func flip(_ users: [String], _ value: String) throws {
        try Harness.lab(["flip", users.joined(separator: ","), value, "--dir", Self.labDirectory])
    }

    func sessions(_ result: [String: Any]) -> [[String: Any]] { result["sessions"] as? [[String: Any]] ?? [] }

    func cli(_ arguments: [String], instance: MailSwitchInstance? = nil) throws -> Harness.Output {
        try Harness.run(Harness.mailswitchBinary.path, arguments + ["--config", (instance ?? Self.proxy!).configPath], timeout: 30)
    }

    // MARK: - Sessions follow the change

    func testIdleSessionEndsWithinASecondOfTheFlipAndTheNextLoginLandsOnTheNewStore() throws {
        let fixture = try hold(["user0003"])
        // The admin socket lists what the test opened.
        let listing = try cli(["sessions", "--user", "user0003", "--json"])
        XCTAssertEqual(listing.status, 0, listing.stderr)
        let listed = (try JSONSerialization.jsonObject(with: Data(listing.stdout.utf8)) as? [String: Any])?["sessions"] as? [[String: Any]] ?? []
        XCTAssertEqual(listed.count, 1, listing.stdout)
        XCTAssertEqual(listed.first?["backend"] as? String, "legacy", listing.stdout)
        XCTAssertEqual(listed.first?["phase"] as? String, "relaying", listing.stdout)
        XCTAssertEqual(listed.first?["protocol"] as? String, "imap", listing.stdout)
        XCTAssertEqual(listed.first?["listener"] as? String, "127.0.0.1:1143", listing.stdout)
        XCTAssertTrue((listed.first?["client"] as? String)?.hasPrefix("127.0.0.1:") ?? false, listing.stdout)
        XCTAssertGreaterThan(listed.first?["bytes_out"] as? Int ?? 0, 0, listing.stdout)
        // Session ids: 15 characters of the 32-letter alphabet (no l, o, 0, 1).
        let id = listed.first?["id"] as? String ?? ""
        XCTAssertEqual(id.count, 15, listing.stdout)
        XCTAssertTrue(id.allSatisfy { "abcdefghijkmnpqrstuvwxyz23456789".contains($0) }, listing.stdout)

        let proxy = try XCTUnwrap(Self.proxy)
        let mark = proxy.logMark
        try flip(["user0003"], "new")
        let flipped = Date().timeIntervalSince1970
        defer { try? flip(["user0003"], "legacy") }
        let result = try fixture.result()
        let session = try XCTUnwrap(sessions(result).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(session)")
        XCTAssertTrue((session["bye_line"] as? String)?.hasPrefix("* BYE [UNAVAILABLE] ") ?? false, "BYE at the IDLE boundary: \(session)")
        let closedAt = try XCTUnwrap(session["closed_at"] as? Double)
        XCTAssertLessThan(closedAt - flipped, 1.0, "ended within a second of ldapmodify")
        assertLands(try imapLogin("user0003", password("user0003")), on: "new", "the next login")
        // The log says why.
        let line = try proxy.waitForLogLine("session ended (route change)", "user=user0003", since: mark)
        for field in ["listener=127.0.0.1:1143", "backend=legacy", "host=127.0.0.1:10143", "duration=", "client=127.0.0.1:", "in=", "out="] {
            XCTAssertTrue(line.contains(field), "\(field) in \(line)")
        }
    }

    func testOnlyTheMovedUsersSessionsEnd() throws {
        let users = (1...50).map { String(format: "user%04d", $0) }
        let moved = Array(users.filter { Int($0.dropFirst(4))! % 2 == 1 }.prefix(10))   // all on legacy
        let fixture = try hold(users, perUser: 4)
        let proxy = try XCTUnwrap(Self.proxy)
        let mark = proxy.logMark
        try flip(moved, "new")
        defer { try? flip(moved, "legacy") }
        // The feed has delivered all ten changes once their 40 sessions have ended (the burst of
        // 100 ends them at once, in the same pass that would wrongly end any other); then stop.
        var endedByTheMove = 0
        try Harness.waitUntil("the moved users' 40 sessions ended by the route change (\(endedByTheMove) so far):\n"
                              + proxy.log(since: mark), timeout: 20) {
            endedByTheMove = proxy.log(since: mark).split(separator: "\n").filter { line in
                let fields = line.split(separator: " ")
                return line.contains("session ended (route change)") && moved.contains { fields.contains(Substring("user=\($0)")) }
            }.count
            return endedByTheMove >= 40
        }
        fixture.stop()
        let result = try fixture.result()
        let all = sessions(result)
        XCTAssertEqual(all.count, 200)
        for session in all {
            let user = session["user"] as? String ?? ""
            let ended = session["ended_by_server"] as? Bool ?? false
            XCTAssertEqual(ended, moved.contains(user), "\(user): \(session)")
        }
        XCTAssertEqual(all.filter { $0["ended_by_server"] as? Bool == true }.count, 40)
    }

    func testPOP3SessionIsClosedOnAFlip() throws {
        let fixture = try hold(["user0005"], proto: "pop3", port: pop3PortNumber)
        try flip(["user0005"], "new")
        defer { try? flip(["user0005"], "legacy") }
        let session = try XCTUnwrap(sessions(try fixture.result()).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(session)")
        XCTAssertNil(session["bye_line"] as? String, "POP3 is closed, not told")
        assertLands(try pop3Login("user0005", password("user0005")), on: "new", "the next POP3 login")
    }

    private var pop3PortNumber: String { Self.pop3Port }

    func testRemovingTheAttributeSendsTheUserToTheDefaultBackend() throws {
        let fixture = try hold(["user0024"])   // on new
        try flip(["user0024"], "-")
        defer { try? flip(["user0024"], "new") }
        let session = try XCTUnwrap(sessions(try fixture.result()).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(session)")
        assertLands(try imapLogin("user0024", password("user0024")), on: "legacy", "routing.default_backend")
    }

    func testKickByBackendEndsOnlyThatBackendsSessions() throws {
        let fixture = try hold(["user0026", "user0027"])   // new, legacy
        let proxy = try XCTUnwrap(Self.proxy)
        let mark = proxy.logMark
        let kicked = try cli(["kick", "--backend", "new"])
        XCTAssertEqual(kicked.status, 0, kicked.stderr)
        XCTAssertTrue(kicked.stdout.contains("ending 1 session"), kicked.stdout)
        // The kick has been carried out once the proxy logs the session's end.
        try proxy.waitForLogLine("session ended (kick)", "user=user0026", since: mark)
        fixture.stop()
        let all = sessions(try fixture.result())
        XCTAssertEqual(all.first { $0["user"] as? String == "user0026" }?["ended_by_server"] as? Bool, true, "\(all)")
        XCTAssertEqual(all.first { $0["user"] as? String == "user0027" }?["ended_by_server"] as? Bool, false, "\(all)")
        XCTAssertTrue((all.first { $0["user"] as? String == "user0026" }?["bye_line"] as? String)?
            .hasPrefix("* BYE [UNAVAILABLE] Disconnected by the administrator") ?? false, "\(all)")
    }

    // MARK: - Holds

    func testHoldByValueRefusesLoginsEndsSessionsAndLetsNothingReachAStore() throws {
        let before = try storeMessageCount("user0007", store: "legacy")
        let fixture = try hold(["user0007"])
        try flip(["user0007"], "moving")
        defer { try? flip(["user0007"], "legacy") }
        let session = try XCTUnwrap(sessions(try fixture.result()).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(session)")
        XCTAssertTrue((session["bye_line"] as? String)?.contains("being moved") ?? false, "\(session)")
        // A login during the hold: the hold's text, and no store is asked.
        let raw = try RawClient(port: 1143)
        defer { raw.close() }
        _ = raw.line()
        raw.send("a LOGIN user0007 \(password("user0007"))\r\n")
        XCTAssertEqual(raw.line(), "a NO [UNAVAILABLE] Your mailbox is being moved, please try again in a few minutes.")
        raw.send("b APPEND INBOX {5+}\r\nhello\r\n")
        XCTAssertEqual(raw.line(), "b BAD Command not permitted before login.")
        XCTAssertEqual(try storeMessageCount("user0007", store: "legacy"), before, "the APPEND reached no store")
        let pop3 = try pop3Login("user0007", password("user0007"))
        XCTAssertEqual(pop3["ok"] as? Bool, false)
        XCTAssertTrue("\(pop3)".contains("[SYS/TEMP]"), "\(pop3)")
        try flip(["user0007"], "new")
        assertLands(try imapLogin("user0007", password("user0007")), on: "new", "after the hold")
    }

    func testHoldFromTheCommandLineSurvivesARestart() throws {
        let instance = try MailSwitchInstance(name: "holds", labDirectory: Self.labDirectory,
                                              edits: MailSwitchInstance.movedListeners(by: 8100))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(9243), instance.log)
        let fixture = try hold(["user0009"], port: "9243")
        let held = try cli(["hold", "user0009", "--reason", "Final sync, back at 14:00"], instance: instance)
        XCTAssertEqual(held.status, 0, held.stderr)
        let session = try XCTUnwrap(sessions(try fixture.result()).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(session)")
        XCTAssertEqual(session["bye_line"] as? String, "* BYE [UNAVAILABLE] Final sync, back at 14:00")
        let refused = try imapLogin("user0009", password("user0009"), port: "9243")
        XCTAssertEqual(refused["ok"] as? Bool, false)
        XCTAssertTrue("\(refused)".contains("Final sync"), "\(refused)")
        // Kept across a restart, and listed.
        instance.stop()
        let again = try MailSwitchInstance(name: "holds", labDirectory: Self.labDirectory, keepState: true,
                                           edits: MailSwitchInstance.movedListeners(by: 8100))
        defer { again.stop() }
        XCTAssertTrue(Harness.waitForPort(9243), again.log)
        let holds = try cli(["holds"], instance: again)
        XCTAssertTrue(holds.stdout.contains("user0009") && holds.stdout.contains("Final sync"), holds.stdout)
        XCTAssertEqual(try imapLogin("user0009", password("user0009"), port: "9243")["ok"] as? Bool, false)
        XCTAssertEqual(try cli(["release", "user0009"], instance: again).status, 0)
        XCTAssertEqual(try cli(["release", "user0009"], instance: again).status, 1, "not held any more")
        assertLands(try imapLogin("user0009", password("user0009"), port: "9243"), on: "legacy", "after release")
    }

    // MARK: - Pacing

    func testThreeHundredSessionsMovedAtOnceAreSpreadOverTheWindow() throws {
        let instance = try MailSwitchInstance(name: "pacing", labDirectory: Self.labDirectory, edits: [
            ("disconnect_burst: 100", "disconnect_burst: 100"),
            ("max_disconnect_delay: \"10s\"", "max_disconnect_delay: \"2s\""),
        ] + MailSwitchInstance.movedListeners(by: 8300))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(9443), instance.log)
        let users = (21...50).map { String(format: "user%04d", $0) }
        let fixture = try hold(users, perUser: 10, port: "9443")
        let odd = users.filter { Int($0.dropFirst(4))! % 2 == 1 }
        let even = users.filter { Int($0.dropFirst(4))! % 2 == 0 }
        try flip(odd, "new")
        try flip(even, "legacy")
        defer {
            try? flip(odd, "legacy")
            try? flip(even, "new")
        }
        let result = try fixture.result()
        let closed = sessions(result).compactMap { $0["closed_at"] as? Double }.sorted()
        XCTAssertEqual(closed.count, 300, "every moved session ended")
        guard closed.count == 300, let first = closed.first, let last = closed.last else { return }
        // Bounds of the pacing itself (burst at once, 2 s window), with room for a loaded machine.
        XCTAssertLessThan(closed[99] - first, 0.5, "the first 100 end at once")
        XCTAssertGreaterThan(last - first, 1.2, "the other 200 are spread, not ended at once")
        XCTAssertLessThan(last - first, 3.5, "and all end within the 2 s window (+ feed delivery)")
        // Evenly: no second half-second carries more than half of the spread sessions.
        let spread = closed.dropFirst(100)
        let busiest = stride(from: first, to: last, by: 0.5).map { start in spread.filter { $0 >= start && $0 < start + 0.5 }.count }.max() ?? 0
        XCTAssertLessThan(busiest, 100, "spread evenly: \(busiest) in one half-second")
        try instance.waitForLogLine("ended 300 sessions over")
    }

    // MARK: - Directory outage

    func testSlapdDownCachedUsersLogInUncachedAreTemporaryAndTheFeedCatchesUp() throws {
        assertLands(try imapLogin("alice", "alice-secret"), on: "legacy", "cached before the outage")
        let fixture = try hold(["user0011"])
        let proxy = try XCTUnwrap(Self.proxy)
        let mark = proxy.logMark
        try Harness.lab(["stop-slapd", "--dir", Self.labDirectory])
        var restarted = false
        defer { if !restarted { try? Harness.lab(["start-slapd", "--dir", Self.labDirectory]) } }
        assertLands(try imapLogin("alice", "alice-secret"), on: "legacy", "cached user while slapd is down")
        let raw = try RawClient(port: 1143)
        _ = raw.line()
        raw.send("a LOGIN user0013 pw-user0013\r\n")
        XCTAssertEqual(raw.line(), "a NO [UNAVAILABLE] Account is temporarily unavailable.", "uncached user")
        raw.close()
        // A change the running directory never announces: made offline, while it is down.
        try Harness.lab(["offline-flip", "user0011", "new", "--dir", Self.labDirectory])
        defer { try? flip(["user0011"], "legacy") }
        try Harness.lab(["start-slapd", "--dir", Self.labDirectory])
        restarted = true
        let session = try XCTUnwrap(sessions(try fixture.result(timeout: 60)).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "the feed reconnected and caught up: \(session)")
        assertLands(try imapLogin("user0011", "pw-user0011"), on: "new", "after the outage")
        XCTAssertTrue(proxy.log(since: mark).contains("change feed disconnected"), "the log says the feed was lost")
    }

    // MARK: - Several instances, poll mode

    func testTwoInstancesBothEndTheMovedUsersSession() throws {
        let second = try MailSwitchInstance(name: "second", labDirectory: Self.labDirectory,
                                            edits: MailSwitchInstance.movedListeners(by: 8200))
        defer { second.stop() }
        XCTAssertTrue(Harness.waitForPort(9343), second.log)
        try second.waitForLogLine("change feed synchronized")
        let one = try hold(["user0015"])
        let two = try hold(["user0015"], port: "9343")
        try flip(["user0015"], "new")
        defer { try? flip(["user0015"], "legacy") }
        for (name, fixture) in [("first", one), ("second", two)] {
            let session = try XCTUnwrap(sessions(try fixture.result()).first)
            XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(name) instance: \(session)")
        }
    }

    func testPollModeFollowsChangesWithoutTheFeed() throws {
        let poller = try MailSwitchInstance(name: "poller", labDirectory: Self.labDirectory, edits: [
            ("change_feed: auto", "change_feed: poll"),
            ("recheck_interval: \"60s\"", "recheck_interval: \"1s\""),
        ] + MailSwitchInstance.movedListeners(by: 8400))
        defer { poller.stop() }
        XCTAssertTrue(Harness.waitForPort(9543), poller.log)
        let fixture = try hold(["user0017"], port: "9543")
        try flip(["user0017"], "new")
        defer { try? flip(["user0017"], "legacy") }
        let session = try XCTUnwrap(sessions(try fixture.result()).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "\(session)")
        XCTAssertFalse(poller.log.contains("change feed synchronized"), "poll mode runs no feed")
    }

    func testAutoFallsBackToPollingWhenTheDirectoryOffersNoSync() throws {
        try Harness.lab(["start-plain-slapd", "--dir", Self.labDirectory])
        let fallback = try MailSwitchInstance(name: "nosync", labDirectory: Self.labDirectory, edits: [
            ("ldap://127.0.0.1:3389", "ldap://127.0.0.1:3393"),
            ("recheck_interval: \"60s\"", "recheck_interval: \"1s\""),
        ] + MailSwitchInstance.movedListeners(by: 8500))
        defer { fallback.stop() }
        XCTAssertTrue(Harness.waitForPort(9643), fallback.log)
        try fallback.waitForLogLine("offers no RFC 4533 sync")
        let fixture = try hold(["user0029"], port: "9643")
        try Harness.lab(["flip", "user0029", "new", "--plain", "--dir", Self.labDirectory])
        let session = try XCTUnwrap(sessions(try fixture.result()).first)
        XCTAssertEqual(session["ended_by_server"] as? Bool, true, "polling found the change: \(session)")
        assertLands(try imapLogin("user0029", password("user0029"), port: "9643"), on: "new", "after the flip")
        let status = try cli(["status"], instance: fallback)
        XCTAssertTrue(status.stdout.contains("change feed: poll"), status.stdout)
    }

    // MARK: - Kicks

    func testKickDuringATwentyMegabyteFetchNeverPutsABYEInsideTheLiteral() throws {
        let fetch = try BackgroundFixture("kickfetch.py", ["--port", Self.imapPort, "--user", "user0021",
                                                           "--password", "pw-user0021"], directory: Self.labDirectory)
        try fetch.waitUntilReady()
        let kicked = try cli(["kick", "user0021"])
        XCTAssertEqual(kicked.status, 0, kicked.stderr)
        let result = try fetch.result()
        XCTAssertEqual(result["closed_by_server"] as? Bool, true, "\(result)")
        XCTAssertEqual(result["literal_intact"] as? Bool, true, "nothing was put inside the literal: \(result)")
        XCTAssertEqual(result["completed"] as? Bool, false, "the session ended mid-literal: \(result)")
        XCTAssertEqual(result["bye_anywhere"] as? Bool, false, "\(result)")
    }

    func testAdminCommandsExitStatuses() throws {
        XCTAssertEqual(try cli(["kick", "nobody-here"]).status, 1, "no sessions: exit 1")
        XCTAssertEqual(try cli(["release", "nobody-here"]).status, 1, "no hold: exit 1")
        let denied = try Harness.run("runuser", ["-u", "nobody", "--", Harness.mailswitchBinary.path, "sessions",
                                                 "--config", Self.proxy!.configPath])
        XCTAssertEqual(denied.status, 4, "permission denied: \(denied.stdout) \(denied.stderr)")
        XCTAssertTrue(denied.stderr.contains("permission denied"), denied.stderr)
        let missing = Self.labDirectory + "/nodaemon.yaml"
        let text = try String(contentsOfFile: Self.proxy!.configPath, encoding: .utf8)
            .replacingOccurrences(of: "/proxy.sock", with: "/nobody-listens.sock")
        try text.write(toFile: missing, atomically: true, encoding: .utf8)
        let none = try Harness.run(Harness.mailswitchBinary.path, ["sessions", "--config", missing])
        XCTAssertEqual(none.status, 3, "no daemon: \(none.stderr)")
        let status = try cli(["status"])
        XCTAssertEqual(status.status, 0, status.stderr)
        for line in ["version: ", "configuration: \(Self.proxy!.configPath), loaded ", "uptime: ", "listeners: 127.0.0.1:1143",
                     "change feed: sync: following ldap://127.0.0.1:3389", "route cache: ", "sessions by backend: "] {
            XCTAssertTrue(status.stdout.contains(line), "\(line) in \(status.stdout)")
        }
        let route = try cli(["route", "alice"])
        XCTAssertEqual(route.status, 0, route.stderr)
        XCTAssertTrue(route.stdout.contains("source:    cache") || route.stdout.contains("source:    directory"), route.stdout)
        let again = try cli(["route", "alice"])
        XCTAssertTrue(again.stdout.contains("source:    cache (age "), "a second ask is answered from the cache: \(again.stdout)")
    }

    // MARK: - Helpers

    /// Messages in the user's INBOX, asked of the store directly (not through mailswitch).
    func storeMessageCount(_ user: String, store: String) throws -> Int {
        let port = store == "legacy" ? "10143" : "20143"
        let script = "import imaplib,sys; c=imaplib.IMAP4('127.0.0.1',\(port)); c.login(sys.argv[1],sys.argv[2]); "
            + "t,d=c.status('INBOX','(MESSAGES)'); print(d[0].decode().split('MESSAGES ')[1].rstrip(')')); c.logout()"
        let output = try Harness.run("python3", ["-c", script, user, password(user)])
        guard let count = Int(output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw HarnessError("STATUS on \(store): \(output.stdout) \(output.stderr)")
        }
        return count
    }
}
