import Foundation
import XCTest

/// Running as a service: systemd's notifications on a stand-in NOTIFY_SOCKET, and the stop
/// sequence (listeners closed at once, sessions drained for shutdown_grace, exit 0).
extension ProxyIntegrationTests {
    func testNotificationsWatchdogAndAGracefulStop() throws {
        let notify = try NotifyListener(path: Self.labDirectory + "/notify.sock")
        defer { notify.close() }
        let instance = try MailSwitchInstance(name: "service", labDirectory: Self.labDirectory, edits: [
            ("shutdown_grace: \"30s\"", "shutdown_grace: \"2s\""),
        ] + MailSwitchInstance.movedListeners(by: 8600),
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"])
        defer { instance.stop() }
        XCTAssertNotNil(notify.wait(for: "READY=1"), "READY=1 once listening: \(instance.log)")
        XCTAssertTrue(Harness.waitForPort(9743), instance.log)
        XCTAssertNotNil(notify.wait(for: "WATCHDOG=1", timeout: 3), "watchdog pings every WATCHDOG_USEC/2")
        kill(instance.process.processIdentifier, SIGHUP)
        let reloading = notify.wait(for: "RELOADING=1")
        XCTAssertNotNil(reloading)
        XCTAssertTrue(reloading?.contains("MONOTONIC_USEC=") ?? false, reloading ?? "")
        XCTAssertNotNil(notify.wait(for: "READY=1"), "READY=1 after the reload")

        let fixture = try hold((1...10).map { String(format: "user%04d", $0) }, port: "9743")
        let stopAt = Date().timeIntervalSince1970
        kill(instance.process.processIdentifier, SIGTERM)
        XCTAssertNotNil(notify.wait(for: "STOPPING=1", timeout: 2))
        // The listener closes at once: refused well before the 2 s grace is over (the sessions
        // are still open then, see closed_at below).
        try Harness.waitUntil("the listener on 9743 refusing connections after SIGTERM", timeout: 1.5) {
            guard let client = try? RawClient(port: 9743, timeout: 1) else { return true }
            client.close()
            return false
        }
        let result = try fixture.result()
        let ended = sessions(result)
        XCTAssertEqual(ended.filter { $0["ended_by_server"] as? Bool == true }.count, 10, "\(result)")
        for session in ended {
            XCTAssertTrue((session["bye_line"] as? String)?.hasPrefix("* BYE [UNAVAILABLE]") ?? false, "\(session)")
            let closedAt = session["closed_at"] as? Double ?? 0
            XCTAssertGreaterThan(closedAt - stopAt, 1.5, "sessions were given the grace period")
        }
        guard instance.waitForExit(within: 5) else {
            throw HarnessError("not exited within shutdown_grace + 1 s (and a margin): \(instance.log)")
        }
        instance.process.waitUntilExit()
        XCTAssertEqual(instance.process.terminationStatus, 0)
        // The bound is the point: the drain ends with the grace (2 s) plus its 1 s settling time.
        XCTAssertLessThan(Date().timeIntervalSince1970 - stopAt, 2 + 1 + 1.5)
        XCTAssertTrue(instance.log.contains("ending 10 session(s)"), instance.log)
    }

    func testTheSystemdUnitVerifies() throws {
        // systemd-analyze checks that the binaries the unit names exist: point it at this build.
        let unit = try String(contentsOf: Harness.repository.appendingPathComponent("systemd/mailswitch.service"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/mailswitch", with: Harness.mailswitchBinary.path)
        let path = Self.labDirectory + "/mailswitch.service"
        try unit.write(toFile: path, atomically: true, encoding: .utf8)
        let verify = try Harness.run("systemd-analyze", ["verify", path])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
        XCTAssertFalse((verify.stdout + verify.stderr).contains("mailswitch.service:"), "no warnings: \(verify.stderr)")
        XCTAssertTrue(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "the unit is Type=notify with a watchdog")
    }

    func testReloadUnder200SessionsDropsNoneAndAppliesListenersAndRouting() throws {
        let instance = try MailSwitchInstance(name: "reloader", labDirectory: Self.labDirectory,
                                              edits: MailSwitchInstance.movedListeners(by: 8700))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(9843) && Harness.waitForPort(9810), instance.log)
        let imap = try hold((1...50).map { String(format: "user%04d", $0) }, perUser: 4, port: "9843")
        let pop3 = try hold(["user0051"], proto: "pop3", port: "9810")
        assertLands(try imapLogin("dave", "dave-secret", port: "9843"), on: "legacy", "default backend before the reload")

        // New routing (the default backend), one listener removed, one added.
        var text = try String(contentsOfFile: instance.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "default_backend: legacy", with: "default_backend: new")
            .replacingOccurrences(of: "    address: \"127.0.0.1:9810\"\n    tls: starttls\n",
                                  with: "    address: \"127.0.0.1:9899\"\n    tls: none\n")
        XCTAssertTrue(text.contains("127.0.0.1:9899"), "the test's edit applies to the example's layout")
        try text.write(toFile: instance.configPath, atomically: true, encoding: .utf8)
        let reload = try cli(["reload"], instance: instance)
        XCTAssertEqual(reload.status, 0, reload.stderr)
        XCTAssertTrue(reload.stdout.contains("reloaded"), reload.stdout)

        XCTAssertThrowsError(try RawClient(port: 9810, timeout: 1), "the removed listener refuses")
        let added = try pop3Login("bob", "bob-secret", port: "9899")
        XCTAssertEqual(added["ok"] as? Bool, true, "the added listener accepts: \(added)")
        assertLands(try imapLogin("dave", "dave-secret", port: "9843"), on: "new", "the next login uses the new default")

        // A configuration that does not load is refused with its reason; the service keeps serving.
        try (text + "\nnonsense_key: 1\n").write(toFile: instance.configPath, atomically: true, encoding: .utf8)
        let refused = try cli(["reload"], instance: instance)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("nonsense_key"), refused.stderr)
        assertLands(try imapLogin("alice", "alice-secret", port: "9843"), on: "legacy", "still serving")

        imap.stop()
        pop3.stop()
        let held = sessions(try imap.result()) + sessions(try pop3.result())
        XCTAssertEqual(held.count, 201)
        XCTAssertEqual(held.filter { $0["ended_by_server"] as? Bool == true }.count, 0,
                       "no session was dropped by the reloads, not even on the removed listener")
    }

    func testSocketActivationHandsTheListenerItsSocket() throws {
        // Tests/Fixtures/activate.py listens, then becomes mailswitch with the socket as descriptor 3,
        // as systemd does with mailswitch.socket.
        let activate = Harness.repository.appendingPathComponent("Tests/Fixtures/activate.py").path
        let instance = try MailSwitchInstance(name: "activated", labDirectory: Self.labDirectory,
                                              edits: MailSwitchInstance.movedListeners(by: 8800),
                                              launcher: ["/usr/bin/env", "python3", activate, "127.0.0.1:9943"])
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(9943), instance.log)
        assertLands(try imapLogin("alice", "alice-secret", port: "9943"), on: "legacy", "through the passed socket")
        XCTAssertTrue(instance.log.contains("127.0.0.1:9943: using the socket the service manager passed"), instance.log)
        XCTAssertTrue(Harness.waitForPort(9910), "listeners without a passed socket bind their own: \(instance.log)")
        // The socket unit verifies beside its service (systemd pairs them by name).
        let directory = Self.labDirectory + "/units"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in ["mailswitch.socket", "mailswitch.service"] {
            let unit = try String(contentsOf: Harness.repository.appendingPathComponent("systemd/\(name)"), encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/mailswitch", with: Harness.mailswitchBinary.path)
            try unit.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
        }
        let verify = try Harness.run("systemd-analyze", ["verify", directory + "/mailswitch.socket", directory + "/mailswitch.service"])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
    }
}
