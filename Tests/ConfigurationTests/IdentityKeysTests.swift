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
}
