import Configuration
import XCTest

/// Every key that names a file goes through one check: a string, not empty or null, no NUL; a
/// Unix socket's path is also absolute and fits `sun_path`.
final class PathTests: XCTestCase {
    private var files: ConfigurationFiles!

    override func setUpWithError() throws { files = try ConfigurationFiles() }
    override func tearDown() { files = nil }

    /// Each file key as a probe holding `value`, and where the loaded configuration keeps it.
    private func fileKeys(_ value: String) throws -> [(Probe, (ServiceConfiguration) -> String?)] {
        var stateFile = Probe("state_file: \(value)", in: "admin")
        stateFile.yaml.sections.insert("  socket: \"/run/ms/admin.sock\"", at: 1)
        var cert = Probe("cert: \(value)", in: "tls.certificates[0]")
        cert.yaml.sections = ["tls:", "  certificates:", "    - cert: \(value)", "      key: \"/etc/k.pem\""]
        var key = Probe("key: \(value)", in: "tls.certificates[0]")
        key.yaml.sections = ["tls:", "  certificates:", "    - cert: \"/etc/c.pem\"", "      key: \(value)"]
        var caFile = Probe("ca_file: \(value)", in: "backends.legacy")
        caFile.yaml.backend.insert("tls: starttls", at: 0)
        var clientCert = Probe("client_cert: \(value)", in: "backends.legacy")
        clientCert.yaml.backend = ["tls: starttls", "client_cert: \(value)", "client_key: \"/etc/k.pem\""]
        var clientKey = Probe("client_key: \(value)", in: "backends.legacy")
        clientKey.yaml.backend = ["tls: starttls", "client_cert: \"/etc/c.pem\"", "client_key: \(value)"]
        return [
            (stateFile, { $0.admin.stateFile }),
            (cert, { $0.tls?.certificates.first?.certificate }),
            (key, { $0.tls?.certificates.first?.key }),
            (caFile, { $0.routing.backends["legacy"]?.tlsSettings.caFile }),
            (clientCert, { $0.routing.backends["legacy"]?.tlsSettings.clientCertificate?.certificate }),
            (clientKey, { $0.routing.backends["legacy"]?.tlsSettings.clientCertificate?.key }),
        ]
    }

    func testFileKeysTakeAPath() throws {
        for value in ["\"/etc/mailswitch/x.pem\"", "relative/x.pem", "'/with space/x'"] {
            let expected = value.trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
            for (probe, read) in try fileKeys(value) {
                XCTAssertEqual(try read(files.load(probe.text)), expected, probe.keyPath)
            }
        }
        XCTAssertEqual(try files.load(Probe("socket: \"/run/ms/admin.sock\"", in: "admin").text).admin.stateFile,
                       "/run/ms/holds.json", "next to the socket when not given")
    }

    func testFileKeysRefuseWhatIsNotAPath() throws {
        let cases = [("[a]", "expected a string"), ("{ a: 1 }", "expected a string"), ("\"\"", "expected a path"),
                     ("~", "expected a path"), ("null", "expected a path"), ("", "expected a path"),
                     ("\"/etc/a\\0b\"", "a path cannot contain a NUL character")]
        for (value, message) in cases {
            for (probe, _) in try fileKeys(value) {
                XCTAssertEqual(try files.failure(probe.text), probe.error(message), "\(probe.keyPath): \(value)")
            }
        }
    }

    func testThePasswordFileIsAPathAndIsRead() throws {
        for (contents, password) in [("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), ("s3cret", "s3cret"), ("a b\n\n", "a b\n")] {
            let secret = try files.write(contents, named: "secret")
            let yaml = MinimalYAML(directory: ["bind_dn: \"cn=ms\"", "bind_password_file: \"\(secret)\""])
            XCTAssertEqual(try files.load(yaml.text).directory.bindPassword, password)
        }
        let missing = Probe("bind_password_file: \"/nonexistent/secret\"", in: "directory")
        XCTAssertEqual(try files.failure(missing.text), missing.error("cannot read /nonexistent/secret"))
        for (value, message) in [("[a]", "expected a string"), ("\"\"", "expected a path"), ("~", "expected a path")] {
            let probe = Probe("bind_password_file: \(value)", in: "directory")
            XCTAssertEqual(try files.failure(probe.text), probe.error(message), value)
        }
        let alone = Probe("bind_dn: \"cn=ms\"", in: "directory")
        XCTAssertEqual(try files.failure(alone.text), "directory (line 5): bind_dn needs bind_password_file")
    }

    func testTheAdminSocketIsAnAbsolutePathThatFitsSunPath() throws {
        let longest = "/" + String(repeating: "s", count: 106)
        for value in ["\"/run/ms/admin.sock\"", longest] {
            let probe = Probe("socket: \(value)", in: "admin")
            XCTAssertEqual(try files.load(probe.text).admin.socketPath, value.trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
            XCTAssertEqual(try files.adminSocket(probe.text).path, value.trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
        }
        let cases = [("\"run/admin.sock\"", "expected an absolute path shorter than 108 bytes"),
                     (longest + "s", "expected an absolute path shorter than 108 bytes"),
                     ("12", "expected an absolute path shorter than 108 bytes"),
                     ("", "expected an absolute path shorter than 108 bytes"),
                     ("[\"/run/a.sock\"]", "expected a string"), ("{ path: /run/a.sock }", "expected a string"),
                     ("\"/run/a\\0b\"", "a path cannot contain a NUL character")]
        for (value, message) in cases {
            let probe = Probe("socket: \(value)", in: "admin")
            XCTAssertEqual(try files.failure(probe.text), probe.error(message), value)
            // The admin commands read only this key, and refuse it alike rather than fall back.
            let answer = try files.adminSocket(probe.text)
            XCTAssertNil(answer.path, value)
            XCTAssertEqual(answer.error, probe.error(message), value)
        }
    }

    func testAdminCommandsReadOnlyTheAdminSection() throws {
        XCTAssertEqual(try files.adminSocket(MinimalYAML().text).path, "/run/mailswitch/admin.sock")
        // Elsewhere broken, or without the LDAP secret it names: the socket is still found.
        var elsewhere = MinimalYAML(directory: ["bind_dn: \"cn=ms\"", "bind_password_file: \"/root/unreadable\""],
                                    sections: ["limits:", "  colour: red", "admin:", "  socket: \"/run/ms/a.sock\""])
        XCTAssertEqual(try files.adminSocket(elsewhere.text).path, "/run/ms/a.sock")
        elsewhere.sections = ["bogus: 1"]
        XCTAssertEqual(try files.adminSocket(elsewhere.text).path, "/run/mailswitch/admin.sock")
        // But the admin section itself is checked as a full load checks it.
        let stateFile = Probe("state_file: [a]", in: "admin")
        XCTAssertEqual(try files.adminSocket(stateFile.text).error, stateFile.error("expected a string"))
        let unknown = Probe("sock: \"/run/a.sock\"", in: "admin")
        XCTAssertEqual(try files.adminSocket(unknown.text).error, unknown.error("unknown key (known here: socket, state_file)"))
        let list = MinimalYAML(sections: ["admin: [\"/run/a.sock\"]"])
        XCTAssertEqual(try files.adminSocket(list.text).error, "admin (line 12): expected a mapping of keys")
        XCTAssertEqual(try files.adminSocket("- a\n").error, "top level (line 1): expected a mapping of keys")
        XCTAssertEqual(try files.adminSocket("").error, "the file is empty")
        XCTAssertEqual(try files.adminSocket("admin: {\n").error?.hasPrefix("not valid YAML: "), true)
        let missing = ConfigLoader(path: files.directory + "/absent.yaml")
        XCTAssertThrowsError(try missing.adminSocketPath()) { error in
            XCTAssertTrue("\(error)".contains("absent.yaml: cannot read the file"), "\(error)")
        }
    }
}
