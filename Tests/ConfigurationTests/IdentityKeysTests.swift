import Configuration
import Routing
import XCTest

/// `routing.login_rewrite` and a backend's `login_name`.
final class IdentityKeysTests: XCTestCase {
    private var files: ConfigurationFiles!

    override func setUpWithError() throws { files = try ConfigurationFiles() }
    override func tearDown() { files = nil }

    private func routing(_ lines: [String]) -> MinimalYAML {
        MinimalYAML(sections: ["routing:"] + lines.map { "  " + $0 })
    }

    func testWithoutTheKeysLoginsAreUsedAsTyped() throws {
        let loaded = try files.load(MinimalYAML().text)
        XCTAssertEqual(loaded.routing.loginRewrite, LoginRewrite())
        XCTAssertTrue(loaded.routing.loginRewrite.isIdentity)
        XCTAssertEqual(loaded.routing.backends["legacy"]?.loginName, .asTyped)
    }

    func testLoginRewriteLoads() throws {
        let yaml = routing(["login_rewrite:", "  lowercase: true", "  map_domains: { msd.example.org: example.org }",
                            "  strip_domains: [\"example.org\"]"])
        let rewrite = try files.load(yaml.text).routing.loginRewrite
        XCTAssertEqual(rewrite, LoginRewrite(lowercase: true, mapDomains: ["msd.example.org": "example.org"],
                                             stripDomains: ["example.org"]))
        XCTAssertEqual(rewrite.apply("Alice@MSD.example.org"), "alice")
        let any = try files.load(routing(["login_rewrite: { strip_domains: [\"*\"] }"]).text).routing.loginRewrite
        XCTAssertEqual(any.apply("Bob@anywhere.example"), "Bob")
    }

    func testLoginRewriteRefusesWhatIsNoDomain() throws {
        let cases: [([String], String, String)] = [
            (["login_rewrite:", "  strip_domains: [\"alice@example.org\"]"], "routing.login_rewrite.strip_domains[0]",
             "expected a domain such as example.org"),
            (["login_rewrite:", "  map_domains: { msd.example.org: \"\" }"], "routing.login_rewrite.map_domains.msd.example.org",
             "expected a domain such as example.org"),
            (["login_rewrite:", "  lowercase: yes please"], "routing.login_rewrite.lowercase", "expected true or false"),
            (["login_rewrite:", "  upcase: true"], "routing.login_rewrite.upcase",
             "unknown key (known here: lowercase, map_domains, strip_domains)"),
        ]
        for (lines, keyPath, message) in cases {
            let yaml = routing(lines)
            let line = yaml.line(of: lines.last!)
            XCTAssertEqual(try files.failure(yaml.text), "\(keyPath) (line \(line)): \(message)", lines.last!)
        }
    }

    func testLoginNameLoadsAsATemplate() throws {
        let backend = try files.load(MinimalYAML(backend: ["login_name: \"%n@example.org\""]).text).routing.backends["legacy"]
        XCTAssertEqual(backend?.loginName, .template("%n@example.org"))
        for (value, message) in [("\"\"", "login_name must not be empty"),
                                 ("\"%x\"", "login_name only %u, %n, %d and %% are known placeholders"),
                                 ("\"alice\"", "login_name must contain %u, %n or %d"),
                                 ("\"%n @x\"", "login_name must not contain spaces or control characters")] {
            let probe = Probe("login_name: \(value)", in: "backends.legacy")
            XCTAssertEqual(try files.failure(probe.text), probe.error(message), value)
        }
    }

    func testLoginNameLoadsAsAnAttributeTheDirectoryFetches() throws {
        let loaded = try files.load(MinimalYAML(backend: ["login_name: { attribute: uid }"]).text)
        XCTAssertEqual(loaded.routing.backends["legacy"]?.loginName, .attribute("uid"))
        XCTAssertEqual(loaded.directory.entryAttributes, ["uid"])
        XCTAssertEqual(try files.load(MinimalYAML().text).directory.entryAttributes, [])
        for (value, message) in [("{ attribute: \"u id\" }", "\"u id\" is not an LDAP attribute name"),
                                 ("{ attribute: \"(uid)\" }", "\"(uid)\" is not an LDAP attribute name")] {
            let yaml = MinimalYAML(backend: ["login_name: \(value)"])
            XCTAssertEqual(try files.failure(yaml.text),
                           "backends.legacy.login_name.attribute (line \(yaml.line(of: "login_name: \(value)"))): \(message)", value)
        }
        let other = MinimalYAML(backend: ["login_name: { column: uid }"])
        XCTAssertEqual(try files.failure(other.text),
                       "backends.legacy.login_name.column (line \(other.line(of: "login_name: { column: uid }"))): "
                       + "unknown key (known here: attribute)")
    }

    func testVerifyCredentialsLoads() throws {
        XCTAssertEqual(try files.load(MinimalYAML().text).routing.credentialCheck, CredentialCheck())
        let yaml = routing(["verify_credentials: ldap_bind", "verify_cache_ttl: 5m", "verify_connections: 8"])
        let check = try files.load(yaml.text).routing.credentialCheck
        XCTAssertEqual(check.mode, .ldapBind)
        XCTAssertEqual(check.cacheTTL, 300)
        XCTAssertEqual(check.connections, 8)
        let introspecting = routing(["verify_credentials: ldap_bind", "oauth_introspection_url: \"http://127.0.0.1:38080/introspect\"",
                                     "oauth_client_id: mailswitch"])
        let tokens = try files.load(introspecting.text).routing.credentialCheck
        XCTAssertEqual(tokens.introspectionURL, "http://127.0.0.1:38080/introspect")
        XCTAssertEqual(tokens.introspectionClientID, "mailswitch")
        XCTAssertNil(tokens.introspectionClientSecret)
        let cases: [([String], String, String)] = [
            (["verify_credentials: ldap"], "routing.verify_credentials", "\"ldap\" is not one of none | ldap_bind"),
            (["verify_cache_ttl: 5m"], "routing.verify_cache_ttl", "only meaningful with verify_credentials: ldap_bind"),
            (["verify_credentials: ldap_bind", "verify_connections: 0"], "routing.verify_connections",
             "expected a whole number in 1...256"),
            (["oauth_introspection_url: \"https://idp/introspect\""], "routing.oauth_introspection_url",
             "only meaningful with verify_credentials: ldap_bind"),
            (["verify_credentials: ldap_bind", "oauth_introspection_url: \"ftp://idp/x\""], "routing.oauth_introspection_url",
             "expected an http:// or https:// URL"),
            (["verify_credentials: ldap_bind", "oauth_client_id: mailswitch"], "routing.oauth_client_id",
             "only meaningful with oauth_introspection_url"),
        ]
        for (lines, keyPath, message) in cases {
            let yaml = routing(lines)
            XCTAssertEqual(try files.failure(yaml.text), "\(keyPath) (line \(yaml.line(of: lines.last!))): \(message)", lines.last!)
        }
    }

    func testAMasterLoginNeedsTheCheckAndReadsItsPasswordFile() throws {
        let secret = try files.write("master-secret\n", named: "master.secret")
        let backend = ["login: master", "master_user: mailswitch-master", "master_password_file: \"\(secret)\""]
        let checked = MinimalYAML(backend: backend, sections: ["routing:", "  verify_credentials: ldap_bind"])
        XCTAssertEqual(try files.load(checked.text).routing.backends["legacy"]?.login,
                       .master(user: "mailswitch-master", password: Array("master-secret".utf8)))
        // The password never shows in what describes the backend.
        XCTAssertFalse("\(StoreLogin.master(user: "m", password: Array("master-secret".utf8)))".contains("secret"))
        let unchecked = MinimalYAML(backend: backend)
        XCTAssertEqual(try files.failure(unchecked.text),
                       "backends.legacy (line \(unchecked.line(of: "hosts: [\"127.0.0.1:10143\"]"))): login: master needs "
                       + "routing.verify_credentials: ldap_bind (the store would let in anyone who names a user)")
        let lacking = MinimalYAML(backend: ["login: master", "master_user: m"], sections: ["routing:", "  verify_credentials: ldap_bind"])
        XCTAssertEqual(try files.failure(lacking.text),
                       "backends.legacy (line \(lacking.line(of: "hosts: [\"127.0.0.1:10143\"]"))): login: master needs master_user and master_password_file")
        let stray = MinimalYAML(backend: ["master_user: m"])
        XCTAssertEqual(try files.failure(stray.text),
                       "backends.legacy.master_user (line \(stray.line(of: "master_user: m"))): only meaningful with login: master")
    }
}
