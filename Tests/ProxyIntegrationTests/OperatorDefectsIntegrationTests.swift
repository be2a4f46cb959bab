import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What a new operator met: a configuration without a usable admin socket directory, and a
/// store slower than `login_timeout`.
extension ProxyIntegrationTests {
    func testTheAdminSocketsMissingDirectoryIsMadeAsSystemdWouldMakeIt() throws {
        let directory = "\(Self.labDirectory)/admin-run/mailswitch"
        try? FileManager.default.removeItem(atPath: "\(Self.labDirectory)/admin-run")
        let instance = try MailSwitchInstance(name: "admin-missing", labDirectory: Self.labDirectory, edits: [
            ("\(Self.labDirectory)/admin-missing.sock", "\(directory)/admin.sock"),
        ] + MailSwitchInstance.movedListeners(by: 11400))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + 11400), instance.logTail())
        // The mail listeners open first: wait for the admin socket itself, not for the port.
        _ = try instance.waitForLogLine("admin socket \(directory)/admin.sock")
        var status = stat()
        XCTAssertEqual(stat(directory, &status), 0, "the directory was made")
        XCTAssertEqual(status.st_mode & 0o7777, 0o750, "the unit's RuntimeDirectoryMode")
        XCTAssertEqual(status.st_uid, getuid(), "owned by the service's user")
        let answer = try cli(["status"], instance: instance)
        XCTAssertEqual(answer.status, 0, "the CLI reaches it: \(answer.stdout) \(answer.stderr)")
    }

    func testAnAdminSocketThatCannotBeMadeLeavesTheServiceRunningAndSaysSo() throws {
        // A regular file where the socket's directory would be: nothing can be made under it.
        let blocker = "\(Self.labDirectory)/admin-blocker"
        XCTAssertTrue(FileManager.default.createFile(atPath: blocker, contents: Data()))
        let edits = [("\(Self.labDirectory)/admin-blocked.sock", "\(blocker)/run/admin.sock")]
            + MailSwitchInstance.movedListeners(by: 11500)
        let instance = try MailSwitchInstance(name: "admin-blocked", labDirectory: Self.labDirectory, edits: edits)
        defer { instance.stop() }
        let check = try Harness.run(Harness.mailswitchBinary.path, ["check-config", "--config", instance.configPath])
        XCTAssertEqual(check.status, 0, check.stderr)
        XCTAssertTrue(check.stdout.contains("warning: admin.socket \(blocker)/run/admin.sock: \(blocker) is not a directory"),
                      check.stdout)
        XCTAssertTrue(Harness.waitForPort(1143 + 11500), "mail is served without the admin socket: \(instance.logTail())")
        _ = try instance.waitForLogLine("admin.socket \(blocker)/run/admin.sock", "starting without the admin socket")
        let login = try imapLogin("user0061", password("user0061"), port: "\(1143 + 11500)")
        XCTAssertEqual(login["ok"] as? Bool, true, "logins work without the admin socket: \(login)")
    }

    func testAConfigurationWithoutAnAdminSectionStarts() throws {
        // Every configuration written before the admin socket existed: its default is
        // /run/mailswitch/admin.sock, made here when the service manager did not.
        let madeHere = !FileManager.default.fileExists(atPath: "/run/mailswitch")
        let instance = try MailSwitchInstance(name: "admin-default", labDirectory: Self.labDirectory, edits: [
            ("admin:\n", "unused_admin:\n"),
            ("  socket: \"\(Self.labDirectory)/admin-default.sock\"\n", ""),
            ("  state_file: \"\(Self.labDirectory)/admin-default-holds.json\"\n", ""),
            ("unused_admin:\n", ""),
        ] + MailSwitchInstance.movedListeners(by: 11600))
        defer {
            instance.stop()
            if madeHere { try? FileManager.default.removeItem(atPath: "/run/mailswitch") }
        }
        XCTAssertTrue(Harness.waitForPort(1143 + 11600), instance.logTail())
        XCTAssertFalse(try String(contentsOfFile: instance.configPath, encoding: .utf8).contains("\nadmin:"))
        let login = try imapLogin("user0062", password("user0062"), port: "\(1143 + 11600)")
        XCTAssertEqual(login["ok"] as? Bool, true, "\(login)")
    }

    func testAStoreSlowerThanTheLoginTimeoutGetsATemporaryFailureUnderTheClientsTag() throws {
        // A store that answers logins 6 s late, as Dovecot does for an address with recent
        // failed logins (its auth penalty: 2, 4, 8, 15 s), behind a 3 s login_timeout.
        let store = Foundation.Process()
        store.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        store.arguments = ["python3", Harness.repository.appendingPathComponent("Tests/Fixtures/synthetic_store.py").path,
                           "31144", "--login-delay", "6", "--name", "slow"]
        store.standardOutput = FileHandle.nullDevice
        try store.run()
        defer { store.terminate(); store.waitUntilExit() }
        XCTAssertTrue(Harness.waitForPort(31144))
        let offset = 11700
        let instance = try MailSwitchInstance(name: "slow-store", labDirectory: Self.labDirectory, edits: [
            ("login_timeout: \"60s\"", "login_timeout: \"3s\""),
            ("hosts: [\"127.0.0.1:10143\"]", "hosts: [\"127.0.0.1:31144\"]"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.logTail())
        let mark = instance.logMark
        let client = try RawClient(port: 1143 + offset, timeout: 15)
        defer { client.close() }
        XCTAssertTrue(client.line()?.hasPrefix("* OK") ?? false)
        client.send("a LOGIN user0063 \(password("user0063"))\r\n")
        let reply = client.lines(until: "a ")
        XCTAssertEqual(reply.last, "a NO [UNAVAILABLE] Account is temporarily unavailable.", "\(reply)")
        XCTAssertFalse(reply.contains { $0.contains("inactivity") }, "the client was not idle: \(reply)")
        _ = try instance.waitForLogLine("login refused: the store did not answer the login within login_timeout (3s)",
                                        since: mark)
        let scrape = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))
        XCTAssertEqual(scrape["mailswitch_logins_total{result=\"timeout\"}"], 1, scrape.text)
        XCTAssertEqual(scrape["mailswitch_limit_refusals_total{limit=\"login_timeout\"}"], 0,
                       "a store's slowness is not the client's limit: \(scrape.text)")
    }
}
