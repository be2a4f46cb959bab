import Routing
import XCTest

final class LoginRewriteTests: XCTestCase {
    func testNothingConfiguredChangesNothing() {
        XCTAssertEqual(LoginRewrite().apply("Alice@EXAMPLE.ORG"), "Alice@EXAMPLE.ORG")
    }

    func testLowercaseThenMapThenStrip() {
        let rewrite = LoginRewrite(lowercase: true, mapDomains: ["MSD.example.org": "example.org"], stripDomains: ["example.org"])
        XCTAssertEqual(rewrite.apply("alice"), "alice")
        XCTAssertEqual(rewrite.apply("ALICE"), "alice")
        XCTAssertEqual(rewrite.apply("Alice@EXAMPLE.ORG"), "alice")
        XCTAssertEqual(rewrite.apply("alice@msd.example.org"), "alice", "mapped to example.org, then stripped")
        XCTAssertEqual(rewrite.apply("alice@other.example"), "alice@other.example")
        XCTAssertEqual(rewrite.apply("we@ird@example.org"), "we@ird", "the last @ splits off the domain")
    }

    func testMappingWithoutStrippingKeepsTheAddressForm() {
        let rewrite = LoginRewrite(mapDomains: ["msd.example.org": "example.org"])
        XCTAssertEqual(rewrite.apply("Alice@MSD.Example.org"), "Alice@example.org", "domains compare without case")
        XCTAssertEqual(LoginRewrite(stripDomains: ["*"]).apply("bob@anything"), "bob")
    }

    func testARewrittenNameStaysEscapedInTheFilter() {
        let rewrite = LoginRewrite(lowercase: true, stripDomains: ["example.org"])
        XCTAssertEqual(LDAPFilter.expand("(uid=%u)", user: rewrite.apply("*)(UID=*@example.org")), "(uid=\\2a\\29\\28uid=\\2a)")
    }
}

final class StoreLoginNameTests: XCTestCase {
    func testAsTypedIsWhatTheClientSent() {
        XCTAssertEqual(StoreLoginName.asTyped.name(typed: "Alice@EXAMPLE.ORG", rewritten: "alice"), "Alice@EXAMPLE.ORG")
    }

    func testTemplatesAreOverTheRewrittenName() {
        XCTAssertEqual(StoreLoginName.template("%n").name(typed: "Alice@EXAMPLE.ORG", rewritten: "alice@example.org"), "alice")
        XCTAssertEqual(StoreLoginName.template("%n@example.org").name(typed: "ALICE", rewritten: "alice"), "alice@example.org")
        XCTAssertEqual(StoreLoginName.template("%u").name(typed: "ALICE", rewritten: "alice"), "alice")
        XCTAssertEqual(StoreLoginName.template("%d/%n%%").name(typed: "x", rewritten: "bob@site"), "site/bob%")
    }

    func testTemplateProblems() {
        XCTAssertNil(StoreLoginName.problem(in: "%n@example.org"))
        XCTAssertNotNil(StoreLoginName.problem(in: ""))
        XCTAssertNotNil(StoreLoginName.problem(in: "fixed"))
        XCTAssertNotNil(StoreLoginName.problem(in: "%q"))
        XCTAssertNotNil(StoreLoginName.problem(in: "%n\r\n"))
    }
}
