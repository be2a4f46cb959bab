import Foundation
import XCTest

/// The read-only hold against the same lab: a user kept on the old store while a migration
/// tool (mbsync, from Debian's isync) makes its final pass there directly; everything that
/// would change the mailbox through mailswitch is refused, and the store's maildir stays as
/// it was.
extension ProxyIntegrationTests {
    /// The user's messages (folder, unique name, flags) and folders on a store, from the maildir.
    private func maildir(_ user: String, store: String) -> [String] {
        let root = "\(Self.labDirectory)/\(store)/mail/\(user)"
        var found: [String] = []
        let folders = [""] + ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { $0.hasPrefix(".") }
        for folder in folders {
            found.append("folder \(folder.isEmpty ? "INBOX" : folder)")
            for sub in ["cur", "new"] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(folder)/\(sub)")) ?? [] {
                    // Moving new/ to cur/ is the store's housekeeping, not a change of the mailbox.
                    let parts = name.components(separatedBy: ":2,")
                    found.append("\(folder) \(parts[0]) flags=\(parts.count > 1 ? parts[1] : "")")
                }
            }
        }
        if let subscriptions = try? String(contentsOfFile: "\(root)/subscriptions", encoding: .utf8) {
            found.append("subscriptions \(subscriptions)")
        }
        return found.sorted()
    }

    private func readOnlyClient(_ protocolName: String, _ user: String, port: String) throws -> [String: Any] {
        let script = Harness.repository.appendingPathComponent("Tests/Fixtures/readonly.py").path
        let output = try Harness.run("python3", [script, protocolName, "--port", port, "--user", user, "--password", "pw-\(user)"])
        guard let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] else {
            throw HarnessError("readonly.py: \(output.stdout) \(output.stderr)")
        }
        return object
    }

    private func step(_ result: [String: Any], _ name: String) -> (status: String, text: String) {
        let step = (result["steps"] as? [String: Any])?[name] as? [String: Any]
        return (step?["status"] as? String ?? "missing", step?["text"] as? String ?? "")
    }

    private func assertRefusedEverythingThatWrites(_ result: [String: Any], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(step(result, "select").status, "OK", "\(result)", file: file, line: line)
        XCTAssertEqual(result["read_only"] as? Bool, true, "SELECT was sent as EXAMINE: \(result)", file: file, line: line)
        XCTAssertEqual(step(result, "fetch").status, "OK", "\(result)", file: file, line: line)
        for name in ["store", "append", "expunge", "move", "copy", "create", "subscribe"] {
            let (status, text) = step(result, name)
            XCTAssertEqual(status, "NO", "\(name): \(result)", file: file, line: line)
            XCTAssertTrue(text.contains("[CANNOT]"), "\(name): \(text)", file: file, line: line)
        }
        let pipelined = result["pipelined"] as? [String] ?? []
        XCTAssertEqual(pipelined.map { String($0.prefix(5)) }, ["p1 OK", "p2 NO", "p3 OK"], "in command order: \(pipelined)",
                       file: file, line: line)
        XCTAssertEqual(step(result, "noop").status, "OK", "the session stays usable: \(result)", file: file, line: line)
    }

    /// mbsync's final pass, old store to new store, directly (not through mailswitch).
    private func startMigrationTool(_ user: String) throws -> (process: Foundation.Process, exit: ExitWatch) {
        let directory = "\(Self.labDirectory)/mbsync-\(user)"
        try FileManager.default.createDirectory(atPath: "\(directory)/state", withIntermediateDirectories: true)
        let configuration = """
            IMAPAccount old
            Host 127.0.0.1
            Port 10143
            User \(user)
            Pass pw-\(user)
            SSLType None
            AuthMechs LOGIN

            IMAPStore old
            Account old

            IMAPAccount new
            Host 127.0.0.1
            Port 20143
            User \(user)
            Pass pw-\(user)
            SSLType None
            AuthMechs LOGIN

            IMAPStore new
            Account new

            Channel move
            Far :old:
            Near :new:
            Patterns *
            Create Near
            Sync Pull
            SyncState \(directory)/state/

            """
        try configuration.write(toFile: "\(directory)/mbsyncrc", atomically: true, encoding: .utf8)
        let process = Foundation.Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/mbsync")
        process.arguments = ["-c", "\(directory)/mbsyncrc", "move"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        let exit = ExitWatch(process)
        try process.run()
        return (process, exit)
    }

    func testReadOnlyHoldByValueWhileTheMigrationToolMakesItsFinalPass() throws {
        let user = "user0031"
        let open = try hold([user])
        try flip([user], "moving-ro:legacy")
        defer { try? flip([user], "legacy") }
        let ended = try XCTUnwrap(sessions(try open.result()).first)
        XCTAssertEqual(ended["ended_by_server"] as? Bool, true, "a read-write session ends when the hold begins: \(ended)")

        let before = maildir(user, store: "legacy")
        XCTAssertFalse(before.isEmpty)
        let migration = try startMigrationTool(user)
        let imap = try readOnlyClient("imap", user, port: Self.imapPort)
        let pop3 = try readOnlyClient("pop3", user, port: Self.pop3Port)
        guard migration.exit.wait(timeout: 60) else {
            migration.process.terminate()
            migration.process.waitUntilExit()
            throw HarnessError("mbsync's final pass did not finish within 60 s")
        }
        migration.process.waitUntilExit()

        assertRefusedEverythingThatWrites(imap)
        XCTAssertEqual(step(pop3, "retr").status, "OK", "\(pop3)")
        XCTAssertEqual(step(pop3, "dele").status, "error", "\(pop3)")
        XCTAssertTrue(step(pop3, "dele").text.contains("[SYS/TEMP]"), "\(pop3)")
        XCTAssertEqual(step(pop3, "quit").status, "OK", "\(pop3)")
        XCTAssertEqual(maildir(user, store: "legacy"), before, "nothing changed on the old store")
        XCTAssertEqual(migration.process.terminationStatus, 0, "mbsync's pass succeeded beside the client")
        XCTAssertGreaterThanOrEqual(try storeMessageCount(user, store: "new"), 2, "mbsync copied the mailbox")

        // The final flip: read-only sessions end, the next login lands on the new store unfiltered.
        let readOnly = try hold([user])
        try flip([user], "new")
        let moved = try XCTUnwrap(sessions(try readOnly.result()).first)
        XCTAssertEqual(moved["ended_by_server"] as? Bool, true, "\(moved)")
        assertLands(try imapLogin(user, "pw-\(user)"), on: "new", "after the final flip")
        let roundtrip = try Harness.client(["imap-roundtrip", "--port", Self.imapPort, "--user", user,
                                            "--password", "pw-\(user)", "--size", "10000"])
        XCTAssertEqual(roundtrip["ok"] as? Bool, true, "APPEND works again: \(roundtrip)")
    }

    func testReadOnlyHoldFromTheCommandLineAndItsRelease() throws {
        let user = "user0033"
        let open = try hold([user])
        let held = try cli(["hold", user, "--read-only", "--reason", "Read-only until 14:00"])
        XCTAssertEqual(held.status, 0, held.stderr)
        XCTAssertEqual(try XCTUnwrap(sessions(try open.result()).first)["ended_by_server"] as? Bool, true)
        let holds = try cli(["holds"])
        XCTAssertTrue(holds.stdout.contains("read-only on legacy"), holds.stdout)
        let before = maildir(user, store: "legacy")
        let imap = try readOnlyClient("imap", user, port: Self.imapPort)
        assertRefusedEverythingThatWrites(imap)
        XCTAssertTrue(step(imap, "store").text.contains("Read-only until 14:00"), "\(imap)")
        XCTAssertEqual(maildir(user, store: "legacy"), before)
        let listing = try cli(["sessions", "--user", user])
        XCTAssertTrue(listing.stdout.contains("0 session(s)"), "no sessions left open: \(listing.stdout)")

        let filtered = try hold([user])
        let released = try cli(["release", user])
        XCTAssertEqual(released.status, 0, released.stderr)
        XCTAssertEqual(try XCTUnwrap(sessions(try filtered.result()).first)["ended_by_server"] as? Bool, true,
                       "releasing ends the filtered session")
        let roundtrip = try Harness.client(["imap-roundtrip", "--port", Self.imapPort, "--user", user,
                                            "--password", "pw-\(user)", "--size", "10000"])
        XCTAssertEqual(roundtrip["ok"] as? Bool, true, "unfiltered again: \(roundtrip)")
    }
}
