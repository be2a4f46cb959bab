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
}
