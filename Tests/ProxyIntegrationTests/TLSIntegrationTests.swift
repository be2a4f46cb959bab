import Foundation
import XCTest

/// TLS on both legs, against the same lab: the example configuration offers STARTTLS on 1143
/// and 1110, implicit TLS on 1993 and 1995, and reaches the "new" store over implicit TLS,
/// verified against the lab's CA. Certificates come from the lab (`DIR/tls`).
extension ProxyIntegrationTests {
    private var tlsDirectory: String { Self.labDirectory + "/tls" }
    private var caFile: String { tlsDirectory + "/ca.pem" }

    private func tlsLogin(_ service: String, _ user: String, _ password: String, port: String, tls: String,
                          extra: [String] = []) throws -> [String: Any] {
        try Harness.client(["\(service)-login", "--host", "127.0.0.1", "--port", port, "--user", user,
                            "--password", password, "--tls", tls, "--cafile", caFile] + extra)
    }

    /// `openssl s_client` with `input` on stdin; stdout and stderr together.
    private func sClient(_ arguments: [String], input: String) throws -> String {
        // -ign_eof: wait for the server to close (after LOGOUT/QUIT), not for stdin to end.
        let script = "printf '\(input)' | timeout 10 openssl s_client -ign_eof -CAfile '\(caFile)' -verify_return_error "
            + arguments.map { "'\($0)'" }.joined(separator: " ") + " 2>&1"
        return try Harness.run("sh", ["-c", script], timeout: 30).stdout
    }

    func testImplicitTLSAndSTARTTLSWithPythonClients() throws {
        for (port, tls) in [("1993", "implicit"), ("1143", "starttls")] {
            for (user, store) in [("alice", "legacy"), ("bob", "new"), ("carol", "legacy"), ("erin", "new")] {
                for mech in ["login", "plain"] {
                    let result = try tlsLogin("imap", user, passwords[user]!, port: port, tls: tls,
                                              extra: ["--mech", mech, "--servername", "mail.example.test"])
                    XCTAssertEqual(result["ok"] as? Bool, true, "\(user) over \(tls) \(mech): \(result)")
                    XCTAssertEqual(result["store"] as? String, store, "\(user) over \(tls) \(mech): \(result)")
                    XCTAssertNotNil(result["tls_version"] as? String, "\(result)")
                }
            }
        }
        for (port, tls) in [("1995", "implicit"), ("1110", "starttls")] {
            for (user, store) in [("alice", "legacy"), ("bob", "new"), ("erin", "new")] {
                let result = try tlsLogin("pop3", user, passwords[user]!, port: port, tls: tls)
                XCTAssertEqual(result["ok"] as? Bool, true, "POP3 \(user) over \(tls): \(result)")
                XCTAssertEqual(result["store"] as? String, store, "POP3 \(user) over \(tls): \(result)")
            }
        }
    }

    func testSNIChoosesTheCertificateAndALPNAndResumptionWork() throws {
        let byDefault = try tlsLogin("imap", "alice", "alice-secret", port: "1993", tls: "implicit",
                                     extra: ["--servername", "mail.example.test", "--alpn", "imap"])
        XCTAssertEqual(byDefault["peer_cert_subject_alt_names"] as? [String], ["mail.example.test", "localhost"], "\(byDefault)")
        XCTAssertEqual(byDefault["alpn"] as? String, "imap", "\(byDefault)")
        let other = try tlsLogin("imap", "alice", "alice-secret", port: "1993", tls: "implicit",
                                 extra: ["--servername", "imap.other.test", "--session-reuse"])
        XCTAssertEqual(other["ok"] as? Bool, true, "\(other)")
        XCTAssertEqual(other["peer_cert_subject_alt_names"] as? [String], ["imap.other.test"], "SNI: \(other)")
        XCTAssertEqual(other["session_reused"] as? Bool, true, "TLS session resumption: \(other)")
        let pop3 = try tlsLogin("pop3", "bob", "bob-secret", port: "1995", tls: "implicit", extra: ["--alpn", "pop3,imap"])
        XCTAssertEqual(pop3["alpn"] as? String, "pop3", "\(pop3)")
        // A client offering only a protocol we do not speak goes on without ALPN.
        let foreign = try tlsLogin("imap", "bob", "bob-secret", port: "1993", tls: "implicit", extra: ["--alpn", "h2"])
        XCTAssertEqual(foreign["ok"] as? Bool, true, "\(foreign)")
        XCTAssertNil(foreign["alpn"] as? String)
    }

    func testOpenSSLClientVersionsAndKeyTypes() throws {
        let ecdsa = try sClient(["-connect", "127.0.0.1:1993", "-sigalgs", "ECDSA+SHA256", "-verify_hostname", "mail.example.test"],
                                input: "a LOGOUT\\r\\n")
        XCTAssertTrue(ecdsa.contains("Peer signature type: ECDSA") && ecdsa.contains("Verify return code: 0 (ok)"), ecdsa)
        let rsa = try sClient(["-connect", "127.0.0.1:1993", "-sigalgs", "RSA-PSS+SHA256"], input: "a LOGOUT\\r\\n")
        XCTAssertTrue(rsa.contains("Peer signature type: RSA-PSS") && rsa.contains("Verify return code: 0 (ok)"), rsa)
        let tls12 = try sClient(["-connect", "127.0.0.1:1995", "-tls1_2"], input: "QUIT\\r\\n")
        XCTAssertTrue(tls12.contains("Protocol  : TLSv1.2") && tls12.contains("+OK mailswitch ready."), tls12)
        let tls11 = try sClient(["-connect", "127.0.0.1:1993", "-tls1_1"], input: "a LOGOUT\\r\\n")
        XCTAssertFalse(tls11.contains("* OK"), "TLS 1.1 must be refused: \(tls11)")

        let imap = try sClient(["-quiet", "-starttls", "imap", "-connect", "127.0.0.1:1143", "-verify_hostname", "mail.example.test"],
                               input: "x CAPABILITY\\r\\ny LOGIN alice alice-secret\\r\\nz LOGOUT\\r\\n")
        let capability = imap.split(whereSeparator: \.isNewline).first { $0.hasPrefix("* CAPABILITY") } ?? ""
        XCTAssertTrue(capability.contains("AUTH=PLAIN") && !capability.contains("STARTTLS"), "fresh capabilities after STARTTLS: \(imap)")
        XCTAssertTrue(imap.contains("y OK [CAPABILITY") && imap.contains("X-STORE-LEGACY"), imap)
        let pop3 = try sClient(["-quiet", "-starttls", "pop3", "-connect", "127.0.0.1:1110"],
                               input: "CAPA\\r\\nUSER bob\\r\\nPASS bob-secret\\r\\nSTAT\\r\\nQUIT\\r\\n")
        XCTAssertTrue(pop3.contains("SASL PLAIN LOGIN") && !pop3.contains("STLS"), "fresh CAPA after STLS: \(pop3)")
        XCTAssertTrue(pop3.contains("+OK 1 "), "STAT on the store after STLS: \(pop3)")
    }

    func testCurlRequiringTLS() throws {
        for (url, user, expect) in [("imap://127.0.0.1:1143/", "alice:alice-secret", "INBOX"),
                                    ("imaps://127.0.0.1:1993/", "bob:bob-secret", "INBOX"),
                                    ("pop3://127.0.0.1:1110/1", "bob:bob-secret", "X-Store: new"),
                                    ("pop3s://127.0.0.1:1995/1", "alice:alice-secret", "X-Store: legacy")] {
            let result = try Harness.run("curl", ["-sS", "--max-time", "20", "--ssl-reqd", "--cacert", caFile, url, "-u", user])
            XCTAssertEqual(result.status, 0, "\(url): \(result.stderr)")
            XCTAssertTrue(result.stdout.contains(expect), "\(url): \(result.stdout)")
        }
    }

    func testRequireTLSDefaultsOnAwayFromLoopbackAndTLS13CanBeRequired() throws {
        guard let proxy = Self.proxy else { return XCTFail("no proxy") }
        let path = Self.labDirectory + "/public.yaml"
        try String(contentsOfFile: proxy.configPath, encoding: .utf8)
            .replacingOccurrences(of: "    require_tls: false\n", with: "")
            .replacingOccurrences(of: "127.0.0.1:1110", with: "0.0.0.0:1110")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let check = try Harness.run(Harness.mailswitchBinary.path, ["check-config", "--config", path])
        XCTAssertEqual(check.status, 0, check.stderr)
        XCTAssertTrue(check.stdout.contains("listener imap 127.0.0.1:1143 tls=starttls require_tls=false"), check.stdout)
        XCTAssertTrue(check.stdout.contains("listener pop3 0.0.0.0:1110 tls=starttls require_tls=true"), check.stdout)

        let modern = try MailSwitchInstance(name: "tls13", labDirectory: Self.labDirectory, edits: [
            ("min_version: \"1.2\"            #", "min_version: \"1.3\"            #"),
        ] + MailSwitchInstance.movedListeners(by: 7700))
        defer { modern.stop() }
        XCTAssertTrue(Harness.waitForPort(1993 + 7700), modern.log)
        let tls12 = try sClient(["-connect", "127.0.0.1:\(1993 + 7700)", "-tls1_2"], input: "a LOGOUT\\r\\n")
        XCTAssertFalse(tls12.contains("* OK"), "TLS 1.2 must be refused with min_version 1.3: \(tls12)")
        let tls13 = try sClient(["-connect", "127.0.0.1:\(1993 + 7700)", "-tls1_3"], input: "a LOGOUT\\r\\n")
        XCTAssertTrue(tls13.contains("Protocol  : TLSv1.3") && tls13.contains("* OK"), tls13)
    }

    func testRequireTLSRefusesPlaintextLogins() throws {
        let strict = try MailSwitchInstance(name: "requiretls", labDirectory: Self.labDirectory, edits: [
            ("    require_tls: false\n", "    require_tls: true\n"),
        ] + MailSwitchInstance.movedListeners(by: 5000))
        defer { strict.stop() }
        XCTAssertTrue(Harness.waitForPort(6143), strict.log)
        let raw = try RawClient(port: 6143)
        defer { raw.close() }
        let greeting = raw.line() ?? ""
        XCTAssertTrue(greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED") && !greeting.contains("AUTH="), greeting)
        raw.send("a LOGIN alice alice-secret\r\n")
        XCTAssertEqual(raw.line(), "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.")
        raw.send("b AUTHENTICATE PLAIN\r\n")
        XCTAssertEqual(raw.line()?.hasPrefix("b NO [PRIVACYREQUIRED]"), true)
        // After STARTTLS the same client may log in, and the capabilities say so.
        let imap = try sClient(["-quiet", "-starttls", "imap", "-connect", "127.0.0.1:6143"],
                               input: "x CAPABILITY\\r\\ny LOGIN alice alice-secret\\r\\nz LOGOUT\\r\\n")
        let capability = imap.split(whereSeparator: \.isNewline).first { $0.hasPrefix("* CAPABILITY") } ?? ""
        XCTAssertTrue(capability.contains("AUTH=PLAIN") && !capability.contains("LOGINDISABLED") && !capability.contains("STARTTLS"), imap)
        XCTAssertTrue(imap.contains("y OK [CAPABILITY"), imap)

        // The POP3 listener is a starttls listener on loopback: require_tls stays at its default (off)
        // there, so this instance's POP3 side is checked with its own edit below.
        let pop3Strict = try MailSwitchInstance(name: "requiretls-pop3", labDirectory: Self.labDirectory, edits: [
            ("    address: \"127.0.0.1:1110\"\n    tls: starttls\n", "    address: \"127.0.0.1:7110\"\n    tls: starttls\n    require_tls: true\n"),
        ] + MailSwitchInstance.movedListeners(by: 6000, except: [1110]))
        defer { pop3Strict.stop() }
        XCTAssertTrue(Harness.waitForPort(7110), pop3Strict.log)
        let pop = try RawClient(port: 7110)
        defer { pop.close() }
        _ = pop.line()
        pop.send("CAPA\r\n")
        let capa = pop.lines(until: ".")
        XCTAssertTrue(capa.contains("STLS") && !capa.contains("USER") && !capa.contains { $0.hasPrefix("SASL") }, "\(capa)")
        pop.send("USER alice\r\n")
        XCTAssertEqual(pop.line()?.hasPrefix("-ERR"), true)
        let afterSTLS = try tlsLogin("pop3", "alice", "alice-secret", port: "7110", tls: "starttls")
        XCTAssertEqual(afterSTLS["store"] as? String, "legacy", "\(afterSTLS)")
    }

    func testCommandsInjectedBeforeTheHandshakeAreDiscarded() throws {
        let script = Harness.repository.appendingPathComponent("Tests/Fixtures/tlscheck.py").path
        for (service, port, injectedReply) in [("imap", "1143", "b "), ("pop3", "1110", "+OK")] {
            let output = try Harness.run("python3", [script, "injection", "--protocol", service, "--port", port, "--cafile", caFile])
            let result = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] ?? [:]
            XCTAssertEqual(result["ok"] as? Bool, true, "\(service): \(output.stdout) \(output.stderr)")
            XCTAssertEqual((result["before_tls"] as? [String])?.count, 1, "only the STARTTLS reply before TLS: \(result)")
            let after = result["after_tls"] as? [String] ?? []
            XCTAssertFalse(after.contains { $0.hasPrefix(injectedReply) }, "the injected command was executed: \(result)")
            XCTAssertEqual(after.count, 1, "exactly the reply to the command sent over TLS: \(result)")
        }
    }

    func testTwentyMegabytesOverTLSOnBothLegsAreByteIdentical() throws {
        // bob lives on "new", reached over implicit TLS; the client uses implicit TLS too.
        let result = try Harness.client(["imap-roundtrip", "--host", "127.0.0.1", "--port", "1993", "--tls", "implicit",
                                         "--cafile", caFile, "--user", "bob", "--password", "bob-secret", "--size", "20000000"])
        XCTAssertEqual(result["ok"] as? Bool, true, "\(result)")
        XCTAssertEqual(result["identical"] as? Bool, true, "\(result)")
        XCTAssertEqual(result["sha256_sent"] as? String, result["sha256_received"] as? String)
        XCTAssertGreaterThanOrEqual(result["bytes_received"] as? Int ?? 0, 20_000_000)
    }

    func testBackendCertificateMustVerify() throws {
        try Harness.lab(["start-rogue", "--dir", Self.labDirectory])
        defer { try? Harness.lab(["stop-rogue", "--dir", Self.labDirectory]) }
        let cases: [(name: String, edits: [(String, String)], reason: String)] = [
            ("untrusted", [("hosts: [\"127.0.0.1:20993\"]", "hosts: [\"127.0.0.1:30993\"]"),
                           ("server_name: \"new.store.test\"", "server_name: \"legacy.store.test\"")], "self-signed certificate"),
            ("wrongname", [("server_name: \"new.store.test\"", "server_name: \"wrong.store.test\"")], "hostname mismatch"),
        ]
        for (index, item) in cases.enumerated() {
            let offset = 7000 + index * 100
            let instance = try MailSwitchInstance(name: "backend-\(item.name)", labDirectory: Self.labDirectory,
                                                  edits: item.edits + MailSwitchInstance.movedListeners(by: offset))
            defer { instance.stop() }
            XCTAssertTrue(Harness.waitForPort(1143 + offset), instance.log)
            let imap = try imapLogin("bob", "bob-secret", port: String(1143 + offset))
            XCTAssertEqual(imap["ok"] as? Bool, false, "\(item.name): \(imap)")
            XCTAssertTrue((imap["response"] as? String ?? "").contains("[UNAVAILABLE]"), "\(item.name): \(imap)")
            instance.stop()
            XCTAssertTrue(instance.log.contains("certificate verification failed: \(item.reason)"), "\(item.name): \(instance.log)")
            XCTAssertFalse(instance.log.contains("login ok"), instance.log)
        }
        // The rogue store saw a TLS handshake fail, never a login.
        let rogueLog = (try? String(contentsOfFile: Self.labDirectory + "/rogue/dovecot.log", encoding: .utf8)) ?? ""
        XCTAssertFalse(rogueLog.contains("user=<bob>"), "credentials reached an unverified store: \(rogueLog)")

        // verify: false is possible, with a warning at start.
        let lax = try MailSwitchInstance(name: "backend-noverify", labDirectory: Self.labDirectory, edits: [
            ("hosts: [\"127.0.0.1:20993\"]", "hosts: [\"127.0.0.1:30993\"]"), ("verify: true", "verify: false"),
        ] + MailSwitchInstance.movedListeners(by: 7200))
        defer { lax.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + 7200), lax.log)
        assertLands(try imapLogin("bob", "bob-secret", port: String(1143 + 7200)), on: "rogue", "verify: false")
        XCTAssertTrue(lax.log.contains("backends.new.verify is false"), lax.log)
    }

    func testClientCertificateTowardsAStoreThatDemandsOne() throws {
        // A store that refuses the handshake without a client certificate signed by the lab CA.
        let store = Foundation.Process()
        store.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        store.arguments = ["python3", Harness.repository.appendingPathComponent("Tests/Fixtures/synthetic_store.py").path,
                           "31993", "--tls", "\(tlsDirectory)/legacy.pem", "\(tlsDirectory)/legacy.key", "--client-ca", caFile]
        store.standardOutput = FileHandle.nullDevice
        try store.run()
        defer { store.terminate(); store.waitUntilExit() }
        XCTAssertTrue(Harness.waitForPort(31993))
        let toStore: [(String, String)] = [("hosts: [\"127.0.0.1:20993\"]", "hosts: [\"127.0.0.1:31993\"]"),
                                           ("server_name: \"new.store.test\"", "server_name: \"legacy.store.test\"")]
        let withCertificate = try MailSwitchInstance(name: "backend-clientcert", labDirectory: Self.labDirectory, edits: toStore + [
            ("# client_cert:", "client_cert:"), ("# client_key:", "client_key:"),
        ] + MailSwitchInstance.movedListeners(by: 7500))
        defer { withCertificate.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + 7500), withCertificate.log)
        assertLands(try imapLogin("bob", "bob-secret", port: String(1143 + 7500)), on: "synthetic", "with a client certificate")

        let without = try MailSwitchInstance(name: "backend-noclientcert", labDirectory: Self.labDirectory,
                                             edits: toStore + MailSwitchInstance.movedListeners(by: 7600))
        defer { without.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + 7600), without.log)
        let refused = try imapLogin("bob", "bob-secret", port: String(1143 + 7600))
        XCTAssertTrue((refused["response"] as? String ?? "").contains("[UNAVAILABLE]"), "without a client certificate: \(refused)")
    }

    func testBackendSTARTTLS() throws {
        let instance = try MailSwitchInstance(name: "backend-starttls", labDirectory: Self.labDirectory, edits: [
            ("hosts: [\"127.0.0.1:20993\"]", "hosts: [\"127.0.0.1:20143\"]"),
            ("pop3_hosts: [\"127.0.0.1:20995\"]", "pop3_hosts: [\"127.0.0.1:20110\"]"), ("tls: implicit\n    # The rest", "tls: starttls\n    # The rest"),
        ] + MailSwitchInstance.movedListeners(by: 7300))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1143 + 7300), instance.log)
        assertLands(try imapLogin("bob", "bob-secret", port: String(1143 + 7300)), on: "new", "IMAP STARTTLS to the store")
        assertLands(try imapLogin("erin", passwords["erin"]!, mech: "plain", port: String(1143 + 7300)), on: "new", "8-bit password after STARTTLS")
        assertLands(try pop3Login("bob", "bob-secret", port: String(1110 + 7300)), on: "new", "POP3 STLS to the store")
        instance.stop()
        XCTAssertEqual(instance.log.components(separatedBy: "backend_tls=TLSv1.3").count - 1, 3, instance.log)
    }

    func testBadCertificateFilesAreReportedBeforeListening() throws {
        guard let proxy = Self.proxy else { return XCTFail("no proxy") }
        let text = try String(contentsOfFile: proxy.configPath, encoding: .utf8)
        let cases: [(String, String, String)] = [
            ("\(tlsDirectory)/mail.key", "\(tlsDirectory)/other.key", "tls.certificates[0].key: \(tlsDirectory)/other.key"),
            ("\(tlsDirectory)/mail.pem", "\(tlsDirectory)/missing.pem", "tls.certificates[0].cert: certificate \(tlsDirectory)/missing.pem: No such file or directory"),
            ("\(tlsDirectory)/mail.pem", tlsDirectory, "tls.certificates[0].cert: \(tlsDirectory): not a usable PEM certificate"),
            ("\(tlsDirectory)/ca.pem", "\(tlsDirectory)/nothing.pem", "backends.new.ca_file: CA file \(tlsDirectory)/nothing.pem"),
        ]
        for (index, (old, new, message)) in cases.enumerated() {
            let path = Self.labDirectory + "/badtls\(index).yaml"
            XCTAssertTrue(text.contains(old))
            try text.replacingOccurrences(of: old, with: new)
                .replacingOccurrences(of: "127.0.0.1:1143", with: "127.0.0.1:9143")
                .write(toFile: path, atomically: true, encoding: .utf8)
            let check = try Harness.run(Harness.mailswitchBinary.path, ["check-config", "--config", path])
            XCTAssertEqual(check.status, 1, check.stdout)
            XCTAssertTrue(check.stderr.contains(message), "expected \(message) in: \(check.stderr)")
            let serve = try Harness.run(Harness.mailswitchBinary.path, ["serve", "--config", path], timeout: 20)
            XCTAssertEqual(serve.status, 1)
            XCTAssertTrue(serve.stderr.contains(message), serve.stderr)
            XCTAssertFalse(serve.stderr.contains("listening on"), "a listener opened: \(serve.stderr)")
        }
    }

    func testUnreadableKeyIsReportedWithItsFileName() throws {
        // root reads any file, so the check runs as nobody, on copies nobody may read but the key.
        guard let proxy = Self.proxy else { return XCTFail("no proxy") }
        let directory = Self.labDirectory + "/unreadable"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in ["mail.pem", "mail.key", "mail-ec.pem", "mail-ec.key", "other.pem", "other.key", "ca.pem"] {
            try FileManager.default.copyItem(atPath: "\(tlsDirectory)/\(name)", toPath: "\(directory)/\(name)")
            chmod("\(directory)/\(name)", 0o644)
        }
        try FileManager.default.copyItem(atPath: Self.labDirectory + "/ldap.secret", toPath: directory + "/ldap.secret")
        chmod(directory + "/ldap.secret", 0o644)
        chmod(directory + "/mail.key", 0)
        let text = try String(contentsOfFile: proxy.configPath, encoding: .utf8)
            .replacingOccurrences(of: tlsDirectory + "/", with: directory + "/")
            .replacingOccurrences(of: Self.labDirectory + "/ldap.secret", with: directory + "/ldap.secret")
        try text.write(toFile: directory + "/mailswitch.yaml", atomically: true, encoding: .utf8)
        chmod(directory + "/mailswitch.yaml", 0o644)
        chmod(directory, 0o755)
        chmod(Self.labDirectory, 0o755)
        let check = try Harness.run("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                                Harness.mailswitchBinary.path, "check-config", "--config", directory + "/mailswitch.yaml"])
        XCTAssertEqual(check.status, 1, check.stdout + check.stderr)
        XCTAssertTrue(check.stderr.contains("tls.certificates[0].key: key \(directory)/mail.key: Permission denied"), check.stderr)
    }

    func testReloadLoadsNewCertificatesWhileOpenSessionsCarryOn() throws {
        // An instance with one certificate, in files of its own that the test replaces.
        let directory = Self.labDirectory + "/reload-tls"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in ["mail.pem", "mail.key"] {
            try FileManager.default.copyItem(atPath: "\(tlsDirectory)/\(name)", toPath: "\(directory)/\(name)")
        }
        let pidFile = directory + "/mailswitch.pid"
        let instance = try MailSwitchInstance(name: "reload", labDirectory: Self.labDirectory, edits: [
            ("    - { cert: \"\(tlsDirectory)/mail-ec.pem\", key: \"\(tlsDirectory)/mail-ec.key\" }\n", ""),
            ("    - { cert: \"\(tlsDirectory)/other.pem\", key: \"\(tlsDirectory)/other.key\" }\n", ""),
            ("{ cert: \"\(tlsDirectory)/mail.pem\", key: \"\(tlsDirectory)/mail.key\" }",
             "{ cert: \"\(directory)/mail.pem\", key: \"\(directory)/mail.key\" }"),
        ] + MailSwitchInstance.movedListeners(by: 7400), arguments: ["--pid-file", pidFile])
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(1993 + 7400), instance.log)
        try FileManager.default.copyItem(atPath: "\(tlsDirectory)/other.pem", toPath: "\(directory)/next.pem")
        try FileManager.default.copyItem(atPath: "\(tlsDirectory)/other.key", toPath: "\(directory)/next.key")
        let swapAndReload = "mv '\(directory)/next.pem' '\(directory)/mail.pem' && mv '\(directory)/next.key' '\(directory)/mail.key' && "
            + "'\(Harness.mailswitchBinary.path)' reload --config '\(instance.configPath)' --pid-file '\(pidFile)' && "
            // SIGHUP is asynchronous: wait for the service to log that it reloaded; the command
            // (and so command_status below) fails when that line has not come within 10 s.
            + "for i in $(seq 100); do grep -qF 'reloaded \(instance.configPath)' '\(instance.logPath)' && exit 0; sleep 0.1; done; "
            + "echo 'no reload line in the log within 10 s' >&2; exit 1"
        let script = Harness.repository.appendingPathComponent("Tests/Fixtures/tlscheck.py").path
        let output = try Harness.run("python3", [script, "hold-and-reload", "--port", String(1993 + 7400), "--cafile", caFile,
                                                 "--user", "alice", "--password", "alice-secret", "--run", "sh", "-c", swapAndReload])
        let result = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] ?? [:]
        XCTAssertEqual(result["ok"] as? Bool, true, "\(output.stdout) \(output.stderr)")
        XCTAssertEqual(result["command_status"] as? Int, 0, "the reload happened: \(result)\n\(instance.log)")
        XCTAssertTrue((result["login"] as? String ?? "").hasPrefix("l OK"), "\(result)")
        XCTAssertEqual(result["first_names"] as? [String], ["localhost", "mail.example.test"], "\(result)")
        XCTAssertEqual(result["second_names"] as? [String], ["imap.other.test"], "new connections get the new certificate: \(result)")
        XCTAssertTrue((result["noop_after_reload"] as? String ?? "").hasPrefix("n OK"), "the open session carries on: \(result)")

        // A reload with a broken certificate is refused by `reload` and changes nothing.
        try "not a certificate".write(toFile: "\(directory)/mail.pem", atomically: true, encoding: .utf8)
        let refused = try Harness.run(Harness.mailswitchBinary.path, ["reload", "--config", instance.configPath, "--pid-file", pidFile])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("\(directory)/mail.pem"), refused.stderr)
        let still = try tlsLogin("imap", "alice", "alice-secret", port: String(1993 + 7400), tls: "implicit",
                                 extra: ["--servername", "imap.other.test"])
        XCTAssertEqual(still["peer_cert_subject_alt_names"] as? [String], ["imap.other.test"], "\(still)")
    }
}
