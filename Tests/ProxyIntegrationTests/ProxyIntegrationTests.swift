import Foundation
import XCTest

/// End to end: real slapd, real Dovecot stores ("legacy" on 10143/10110, "new" on
/// 20143/20110; "modern", which knows users by address, on 40143/40110), mailswitch from config/mailswitch.example.yaml on 1143/1110, and real
/// clients (python3 imaplib/poplib, curl, raw sockets).
final class ProxyIntegrationTests: XCTestCase {
    nonisolated(unsafe) static var labDirectory = ""
    nonisolated(unsafe) static var proxy: MailSwitchInstance?
    nonisolated(unsafe) static var setUpError: String?

    static let imapPort = "1143"
    static let pop3Port = "1110"

    override class func setUp() {
        super.setUp()
        labDirectory = NSTemporaryDirectory() + "mailswitch-tests-\(getpid())"
        // user0001..user0060: the move tests open sessions for 50 users at once; user0061..
        // user0064 are the operator-defect tests' own (OperatorDefectsIntegrationTests.swift).
        setenv("MAILSWITCH_LAB_USERS", "64", 1)
        do {
            try Harness.lab(["up", "--dir", labDirectory])
            let instance = try MailSwitchInstance(name: "proxy", labDirectory: labDirectory)
            proxy = instance
            guard Harness.waitForPort(1143), Harness.waitForPort(1110) else {
                setUpError = "mailswitch did not start listening: \(instance.log)"
                return
            }
        } catch {
            setUpError = "\(error)"
        }
    }

    override class func tearDown() {
        proxy?.stop()
        try? Harness.lab(["down", "--dir", labDirectory])
        super.tearDown()
    }

    override func setUpWithError() throws {
        if let error = Self.setUpError { throw HarnessError("lab set-up failed: \(error)") }
    }

    func imapLogin(_ user: String, _ password: String, mech: String = "login", port: String = imapPort) throws -> [String: Any] {
        try Harness.client(["imap-login", "--host", "127.0.0.1", "--port", port, "--user", user, "--password", password, "--mech", mech])
    }

    func pop3Login(_ user: String, _ password: String, mech: String = "user", port: String = pop3Port) throws -> [String: Any] {
        try Harness.client(["pop3-login", "--host", "127.0.0.1", "--port", port, "--user", user, "--password", password, "--mech", mech])
    }

    func assertLands(_ result: [String: Any], on store: String, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result["ok"] as? Bool, true, "\(message): \(result)", file: file, line: line)
        XCTAssertEqual(result["store"] as? String, store, "\(message): \(result)", file: file, line: line)
    }

    let passwords = [
        "alice": "alice-secret", "bob": "bob-secret", "carol": #"pässwörd "quoted" back\slash and spaces"#,
        "dave": "dave-secret", "erin": "ünïcödé ✓ {5}", "frank": "frank-secret", "ghost": "ghost-secret",
        "user0001": "pw-user0001", "user0002": "pw-user0002",
    ]

    // MARK: - Routing

    func testEachUserLandsOnTheirStoreOverIMAP() throws {
        let expected = ["alice": "legacy", "bob": "new", "carol": "legacy", "erin": "new",
                        "dave": "legacy",   // entry without mailHost: default backend
                        "ghost": "legacy",  // no LDAP entry at all: default backend
                        "user0001": "legacy", "user0002": "new"]
        for (user, store) in expected.sorted(by: { $0.key < $1.key }) {
            assertLands(try imapLogin(user, passwords[user]!), on: store, "LOGIN \(user)")
        }
        // The password with quotes, backslashes, spaces and UTF-8 through every mechanism.
        for mech in ["plain", "login-sasl"] {
            assertLands(try imapLogin("carol", passwords["carol"]!, mech: mech), on: "legacy", "carol via \(mech)")
            assertLands(try imapLogin("erin", passwords["erin"]!, mech: mech), on: "new", "erin via \(mech)")
        }
    }

    func testEachUserLandsOnTheirStoreOverPOP3() throws {
        for (user, store) in [("alice", "legacy"), ("bob", "new"), ("carol", "legacy"), ("erin", "new"), ("ghost", "legacy")] {
            assertLands(try pop3Login(user, passwords[user]!), on: store, "USER/PASS \(user)")
        }
        assertLands(try pop3Login("carol", passwords["carol"]!, mech: "plain"), on: "legacy", "AUTH PLAIN carol")
        assertLands(try pop3Login("bob", passwords["bob"]!, mech: "plain"), on: "new", "AUTH PLAIN bob")
    }

    func testPostLoginCapabilitiesComeFromTheStore() throws {
        let result = try imapLogin("bob", "bob-secret")
        let capabilities = result["capabilities"] as? [String] ?? []
        XCTAssertTrue(capabilities.contains("X-STORE-NEW"), "\(capabilities)")
        XCTAssertFalse(capabilities.contains("X-STORE-LEGACY"))
        let raw = try RawClient(port: 1143)
        defer { raw.close() }
        _ = raw.line()
        raw.send("a LOGIN bob bob-secret\r\n")
        let reply = raw.lines(until: "a ")
        XCTAssertTrue(reply.last?.hasPrefix("a OK [CAPABILITY ") ?? false, "\(reply)")
        XCTAssertTrue(reply.last?.contains("X-STORE-NEW") ?? false, "\(reply)")
    }

    func testFlippingTheAttributeMovesTheNextLogin() throws {
        assertLands(try imapLogin("user0002", "pw-user0002"), on: "new", "before the flip")
        try Harness.lab(["flip", "user0002", "legacy", "--dir", Self.labDirectory])
        defer { try? Harness.lab(["flip", "user0002", "new", "--dir", Self.labDirectory]) }
        assertLands(try imapLogin("user0002", "pw-user0002"), on: "legacy", "IMAP after ldapmodify")
        assertLands(try pop3Login("user0002", "pw-user0002"), on: "legacy", "POP3 after ldapmodify")
        try Harness.lab(["flip", "user0002", "new", "--dir", Self.labDirectory])
        assertLands(try imapLogin("user0002", "pw-user0002"), on: "new", "after flipping back")
    }

    // MARK: - Relay

    func testTwentyMegabyteAppendAndFetchAreByteIdentical() throws {
        let result = try Harness.client(["imap-roundtrip", "--host", "127.0.0.1", "--port", Self.imapPort,
                                         "--user", "alice", "--password", "alice-secret", "--size", "20000000"])
        XCTAssertEqual(result["ok"] as? Bool, true, "\(result)")
        XCTAssertEqual(result["identical"] as? Bool, true, "\(result)")
        XCTAssertGreaterThanOrEqual(result["bytes_received"] as? Int ?? 0, 20_000_000)
        XCTAssertEqual(result["sha256_sent"] as? String, result["sha256_received"] as? String)
        // Both legs are plain: the bytes went through kernel pipes, not user space.
        // The log line is written when the proxy's side of the session ends, just after the client's.
        try Harness.waitUntil("a spliced 20 MB session of alice's in the log", timeout: 10) {
            (Self.proxy?.log ?? "").split(separator: "\n").contains { line in
                let fields = line.split(separator: " ")
                let out = fields.first { $0.hasPrefix("out=") }.flatMap { Int($0.dropFirst(4)) } ?? 0
                return line.contains("session ended") && fields.contains("user=alice") && fields.contains("relay=splice")
                    && out >= 20_000_000
            }
        }
    }

    func testCurlListsMailboxesAndMessages() throws {
        let imap = try Harness.run("curl", ["-sS", "--max-time", "20", "imap://127.0.0.1:1143/", "-u", "alice:alice-secret"])
        XCTAssertEqual(imap.status, 0, imap.stderr)
        XCTAssertTrue(imap.stdout.contains("INBOX"), imap.stdout)
        let pop3 = try Harness.run("curl", ["-sS", "--max-time", "20", "pop3://127.0.0.1:1110/1", "-u", "bob:bob-secret"])
        XCTAssertEqual(pop3.status, 0, pop3.stderr)
        XCTAssertTrue(pop3.stdout.contains("X-Store: new"), pop3.stdout)
        let refused = try Harness.run("curl", ["-sS", "--max-time", "20", "imap://127.0.0.1:1143/", "-u", "alice:wrong"])
        XCTAssertNotEqual(refused.status, 0, "a wrong password must fail in curl too")
    }

    // MARK: - Pre-login protocol through the proxy

    func testLiteralsIDAndPipelinedCommandsThroughTheProxy() throws {
        let raw = try RawClient(port: 1143)
        defer { raw.close() }
        let greeting = raw.line() ?? ""
        XCTAssertTrue(greeting.hasPrefix("* OK [CAPABILITY IMAP4rev1 "), greeting)
        XCTAssertTrue(greeting.contains("LITERAL+") && greeting.contains("SASL-IR") && greeting.contains("AUTH=PLAIN"), greeting)
        raw.send("i1 ID (\"name\" \"integration-test\")\r\n")
        XCTAssertEqual(raw.lines(until: "i1 "), ["* ID (\"name\" \"mailswitch\")", "i1 OK ID completed."])
        raw.send("b1 SELECT INBOX\r\n")
        XCTAssertEqual(raw.line(), "b1 BAD Command not permitted before login.")
        raw.send("l1 LOGIN {5}\r\n")
        XCTAssertEqual(raw.line(), "+ Ready for literal data")
        let password = #"pässwörd "quoted" back\slash and spaces"#
        raw.send("carol {\(password.utf8.count)}\r\n")
        XCTAssertEqual(raw.line(), "+ Ready for literal data")
        // Pipelined after the login: must reach the store untouched, in order.
        raw.send("\(password)\r\ns1 SELECT INBOX\r\nq1 LOGOUT\r\n")
        let replies = raw.lines(until: "q1 ")
        XCTAssertTrue(replies.contains { $0.hasPrefix("l1 OK [CAPABILITY ") && $0.contains("X-STORE-LEGACY") }, "\(replies)")
        XCTAssertTrue(replies.contains { $0.hasPrefix("s1 OK [READ-WRITE]") }, "\(replies)")
        XCTAssertTrue(replies.last?.hasPrefix("q1 OK Logout completed") ?? false, "\(replies)")
        XCTAssertTrue(raw.isClosedByPeer())
    }

    func testAuthenticateWithSASLIRAndCancellation() throws {
        let raw = try RawClient(port: 1143)
        defer { raw.close() }
        _ = raw.line()
        raw.send("c1 AUTHENTICATE PLAIN\r\n")
        XCTAssertEqual(raw.line(), "+ ")
        raw.send("*\r\n")
        XCTAssertEqual(raw.line(), "c1 BAD Authentication cancelled.")
        let plain = Data("\0erin\0ünïcödé ✓ {5}".utf8).base64EncodedString()
        raw.send("a1 AUTHENTICATE PLAIN \(plain)\r\n")
        let reply = raw.lines(until: "a1 ")
        XCTAssertTrue(reply.last?.hasPrefix("a1 OK [CAPABILITY ") ?? false, "\(reply)")
        XCTAssertTrue(reply.last?.contains("X-STORE-NEW") ?? false, "\(reply)")
    }

    func testPOP3PreLoginThroughTheProxy() throws {
        let raw = try RawClient(port: 1110)
        defer { raw.close() }
        XCTAssertEqual(raw.line(), "+OK mailswitch ready.")
        raw.send("CAPA\r\n")
        let capa = raw.lines(until: ".")
        XCTAssertTrue(capa.contains("USER") && capa.contains("SASL PLAIN LOGIN") && capa.contains("RESP-CODES"), "\(capa)")
        raw.send("STAT\r\n")
        XCTAssertEqual(raw.line(), "-ERR [AUTH] Authentication required.")
        raw.send("USER bob\r\nPASS bob-secret\r\nSTAT\r\nQUIT\r\n")
        XCTAssertEqual(raw.line(), "+OK")
        XCTAssertEqual(raw.line()?.hasPrefix("+OK"), true)
        XCTAssertEqual(raw.line()?.hasPrefix("+OK 1 "), true, "STAT pipelined after PASS reaches the store")
    }

    // MARK: - Failures

    func testWrongPasswordIsAnAuthenticationFailure() throws {
        let imap = try imapLogin("alice", "wrong")
        XCTAssertEqual(imap["ok"] as? Bool, false)
        XCTAssertTrue((imap["response"] as? String ?? "").contains("[AUTHENTICATIONFAILED]"), "\(imap)")
        let pop3 = try pop3Login("alice", "wrong")
        XCTAssertEqual(pop3["ok"] as? Bool, false)
        XCTAssertTrue((pop3["response"] as? String ?? "").contains("[AUTH]"), "\(pop3)")
        // The client may retry on the same connection after a failure.
        let raw = try RawClient(port: 1143)
        defer { raw.close() }
        _ = raw.line()
        raw.send("a LOGIN alice wrong\r\n")
        XCTAssertEqual(raw.lines(until: "a ").last, "a NO [AUTHENTICATIONFAILED] Authentication failed.")
        raw.send("b LOGIN alice alice-secret\r\n")
        XCTAssertTrue(raw.lines(until: "b ").last?.hasPrefix("b OK") ?? false)
    }

    func testAttributeNamingNoBackendIsTemporary() throws {
        let imap = try imapLogin("frank", "frank-secret")
        XCTAssertEqual(imap["ok"] as? Bool, false)
        XCTAssertTrue((imap["response"] as? String ?? "").contains("[UNAVAILABLE]"), "\(imap)")
    }

    func testDeadBackendIsTemporarilyUnavailable() throws {
        try Harness.lab(["stop-store", "new", "--dir", Self.labDirectory])
        defer { try? Harness.lab(["start-store", "new", "--dir", Self.labDirectory]) }
        let imap = try imapLogin("bob", "bob-secret")
        XCTAssertEqual(imap["ok"] as? Bool, false)
        XCTAssertTrue((imap["response"] as? String ?? "").contains("[UNAVAILABLE]"), "\(imap)")
        let pop3 = try pop3Login("bob", "bob-secret")
        XCTAssertEqual(pop3["ok"] as? Bool, false)
        XCTAssertTrue((pop3["response"] as? String ?? "").contains("[SYS/TEMP]"), "\(pop3)")
        // Users on the other store are not affected.
        assertLands(try imapLogin("alice", "alice-secret"), on: "legacy", "legacy still serves")
    }

    func testUnknownUserAndInjectionWithoutDefaultBackend() throws {
        let strict = try MailSwitchInstance(name: "strict", labDirectory: Self.labDirectory, edits: [
            ("  default_backend: legacy\n", ""),
        ] + MailSwitchInstance.movedListeners(by: 1000))
        defer { strict.stop() }
        XCTAssertTrue(Harness.waitForPort(2143), strict.log)
        for (user, why) in [("ghost", "no LDAP entry"), ("dave", "no mailHost"), ("*)(uid=*", "filter injection"), ("*", "wildcard")] {
            let imap = try imapLogin(user, "alice-secret", port: "2143")
            XCTAssertEqual(imap["ok"] as? Bool, false, why)
            XCTAssertTrue((imap["response"] as? String ?? "").contains("[AUTHENTICATIONFAILED]"), "\(why): \(imap)")
        }
        let pop3 = try pop3Login("*)(uid=*", "alice-secret", port: "2110")
        XCTAssertTrue((pop3["response"] as? String ?? "").contains("[AUTH]"), "\(pop3)")
        assertLands(try imapLogin("alice", "alice-secret", port: "2143"), on: "legacy", "known users still route")

        let route = try Harness.run(Harness.mailswitchBinary.path, ["route", "*)(uid=*", "--config", strict.configPath])
        XCTAssertEqual(route.status, 1, route.stdout + route.stderr)
        XCTAssertTrue(route.stdout.contains(#"(uid=\2a\29\28uid=\2a)"#), route.stdout)
        // The login checks above cannot tell escaping from an ambiguous match (both refuse);
        // this one can: the escaped filter matches no entry at all.
        XCTAssertTrue(route.stdout.contains("entry:     (none)"), route.stdout)
    }

    func testDirectoryDownOrSilentIsTemporary() throws {
        // Nothing listens on 3390; 3391 accepts TCP and never answers (an LDAP server hung).
        let silent = try SilentListener(port: 3391, purpose: "the hung-directory case")
        defer { silent.close() }

        for (name, uri, port) in [("ldapdown", "ldap://127.0.0.1:3390", "3143"), ("ldaphung", "ldap://127.0.0.1:3391", "4143")] {
            let instance = try MailSwitchInstance(name: name, labDirectory: Self.labDirectory, edits: [
                ("ldap://127.0.0.1:3389", uri), ("timeout: \"3s\"", "timeout: \"1s\""),
            ] + MailSwitchInstance.movedListeners(by: Int(port)! - 1143))
            defer { instance.stop() }
            XCTAssertTrue(Harness.waitForPort(Int(port)!), instance.log)
            // While one login waits on the directory, the event loop keeps serving others.
            let waiting = try RawClient(port: Int(port)!)
            defer { waiting.close() }
            _ = waiting.line()
            waiting.send("w1 LOGIN alice alice-secret\r\n")
            let other = try RawClient(port: Int(port)!)
            defer { other.close() }
            XCTAssertEqual(other.line()?.hasPrefix("* OK "), true, name)
            other.send("n1 NOOP\r\n")
            XCTAssertEqual(other.line(), "n1 OK NOOP completed.", name)
            XCTAssertEqual(waiting.lines(until: "w1 ").last?.hasPrefix("w1 NO [UNAVAILABLE]"), true, name)
            let imap = try imapLogin("alice", "alice-secret", port: port)
            XCTAssertEqual(imap["ok"] as? Bool, false, name)
            XCTAssertTrue((imap["response"] as? String ?? "").contains("[UNAVAILABLE]"), "\(name): \(imap)")
            let pop3 = try pop3Login("alice", "alice-secret", port: String(Int(port)! - 33))
            XCTAssertTrue((pop3["response"] as? String ?? "").contains("[SYS/TEMP]"), "\(name): \(pop3)")
        }
    }

    func testTimeoutsEndSilentStoresAndSilentClients() throws {
        // 3392 accepts TCP and never says a word: a store hung before its greeting.
        let silent = try SilentListener(port: 3392, purpose: "the silent-store case")
        defer { silent.close() }

        let instance = try MailSwitchInstance(name: "timeouts", labDirectory: Self.labDirectory, edits: [
            ("login_timeout: \"60s\"", "login_timeout: \"3s\""),
            ("backend_login_timeout: \"15s\"", "backend_login_timeout: \"1s\""),
            ("backend_connect_timeout: \"5s\"", "backend_connect_timeout: \"1s\""),
            ("hosts: [\"127.0.0.1:10143\"]", "hosts: [\"127.0.0.1:3392\"]"),   // legacy's IMAP store
        ] + MailSwitchInstance.movedListeners(by: 7800))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(8943), instance.log)

        // The store never greets: the connect timeout (which runs until a plain store's
        // greeting) gives a temporary failure, and the client, still connected, may go on
        // (and retry later).
        let client = try RawClient(port: 8943)
        defer { client.close() }
        XCTAssertEqual(client.line()?.hasPrefix("* OK "), true)
        client.send("a1 LOGIN alice alice-secret\r\n")
        XCTAssertEqual(client.lines(until: "a1 ").last?.hasPrefix("a1 NO [UNAVAILABLE]"), true, instance.log)
        client.send("a2 NOOP\r\n")
        XCTAssertEqual(client.line(), "a2 OK NOOP completed.")

        // A client that never logs in is told why and dropped when the login timeout runs out.
        let quiet = try RawClient(port: 8943)
        defer { quiet.close() }
        XCTAssertEqual(quiet.line()?.hasPrefix("* OK "), true)
        XCTAssertEqual(quiet.line(), "* BYE Disconnected for inactivity.", instance.log)
        XCTAssertTrue(quiet.isClosedByPeer())
    }

    // MARK: - Command line

    func testCheckConfigAndRoute() throws {
        guard let proxy = Self.proxy else { return XCTFail("no proxy") }
        let binary = Harness.mailswitchBinary.path
        let ok = try Harness.run(binary, ["check-config", "--config", proxy.configPath])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("configuration OK"))

        let broken = Self.labDirectory + "/broken.yaml"
        let text = try String(contentsOfFile: proxy.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "pop3_hosts: [\"127.0.0.1:20995\"]", with: "pop3_hosts: [\"127.0.0.1:99999\"]")
            .write(toFile: broken, atomically: true, encoding: .utf8)
        let bad = try Harness.run(binary, ["check-config", "--config", broken])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("backends.new.pop3_hosts[0]"), bad.stderr)
        // The limits and PROXY protocol keys are checked too, with the key named.
        for (old, new, expected) in [
            ("trusted_proxies: [\"127.0.0.2/32\"]", "trusted_proxies: [\"10.0.0.0/33\"]", "trusted_proxies[0]"),
            ("trusted_proxies: [\"127.0.0.2/32\"]\n", "\n", "proxy_protocol: true needs trusted_proxies"),
            ("forward_client: auto", "forward_client: haproxy", "\"haproxy\" is not one of auto | proxy_v2 | none"),
            ("max_sessions_per_user: 50", "max_sessions_per_user: 0", "limits.max_sessions_per_user"),
            ("auth_failure_window: \"5m\"", "auth_failure_window: \"soon\"", "limits.auth_failure_window"),
            ("replica: false", "replica: true", "directory.replica needs a filter the replica can match itself"),
        ] {
            var edited = text.replacingOccurrences(of: old, with: new)
            if expected.hasPrefix("proxy_protocol") { edited = edited.replacingOccurrences(of: "proxy_protocol: false", with: "proxy_protocol: true") }
            // The example's own filter is one the replica matches: a partial match is not.
            if expected.hasPrefix("directory.replica") {
                edited = edited.replacingOccurrences(of: "filter: \"(&(objectClass=inetOrgPerson)(uid=%u))\"", with: "filter: \"(uid=%n)\"")
            }
            XCTAssertNotEqual(edited, text, "the edit \(old) applies")
            try edited.write(toFile: broken, atomically: true, encoding: .utf8)
            let refused = try Harness.run(binary, ["check-config", "--config", broken])
            XCTAssertEqual(refused.status, 1, "\(new): \(refused.stdout)")
            XCTAssertTrue(refused.stderr.contains(expected), "\(new): \(refused.stderr)")
        }

        let alice = try Harness.run(binary, ["route", "alice", "--config", proxy.configPath])
        XCTAssertEqual(alice.status, 0, alice.stderr)
        XCTAssertTrue(alice.stdout.contains("uid=alice,ou=people,dc=example,dc=org"), alice.stdout)
        XCTAssertTrue(alice.stdout.contains("mailHost: legacy"), alice.stdout)
        XCTAssertTrue(alice.stdout.contains("backend legacy -> 127.0.0.1:10143"), alice.stdout)
        XCTAssertTrue(alice.stdout.contains("backend legacy -> 127.0.0.1:10110"), alice.stdout)
        let bob = try Harness.run(binary, ["route", "bob", "--config", proxy.configPath])
        XCTAssertTrue(bob.stdout.contains("backend new -> 127.0.0.1:20993"), bob.stdout)

        let frank = try Harness.run(binary, ["route", "frank", "--config", proxy.configPath])
        XCTAssertEqual(frank.status, 2)
        XCTAssertTrue(frank.stdout.contains("names no configured backend"), frank.stdout)
    }

    func testPasswordsAndSASLPayloadsNeverReachTheLog() throws {
        // At debug level, the most talkative the service gets.
        let chatty = try MailSwitchInstance(name: "debuglog", labDirectory: Self.labDirectory, edits: [
            ("level: info", "level: debug"),
        ] + MailSwitchInstance.movedListeners(by: 4000))
        defer { chatty.stop() }
        XCTAssertTrue(Harness.waitForPort(5143), chatty.log)
        let canary = "canary-Pw-\(getpid())"
        let payloads = [Data("\0alice\0\(canary)".utf8).base64EncodedString(),
                        Data("\0carol\0\(passwords["carol"]!)".utf8).base64EncodedString()]
        assertLands(try imapLogin("carol", passwords["carol"]!, mech: "plain", port: "5143"), on: "legacy", "carol")
        _ = try imapLogin("alice", canary, port: "5143")
        _ = try imapLogin("alice", canary, mech: "plain", port: "5143")
        _ = try pop3Login("alice", canary, port: "5110")
        _ = try pop3Login("alice", canary, mech: "plain", port: "5110")
        let raw = try RawClient(port: 5143)
        defer { raw.close() }
        _ = raw.line()
        raw.send("a1 AUTHENTICATE PLAIN \(payloads[0])\r\n")
        XCTAssertEqual(raw.lines(until: "a1 ").last?.hasPrefix("a1 NO [AUTHENTICATIONFAILED]"), true)
        chatty.stop()
        let log = chatty.log
        XCTAssertTrue(log.contains("login ok") && log.contains("login refused"), log)
        XCTAssertFalse(log.contains(canary), "a password reached the log")
        XCTAssertFalse(log.contains("pässwörd"), "a password reached the log")
        for payload in payloads {
            XCTAssertFalse(log.contains(payload.prefix(12)), "a SASL payload reached the log")
        }
    }
}
