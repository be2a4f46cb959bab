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

/// A store's login name from an attribute of the user's entry; passwords the directory accepted.
final class StoreNameAndPasswordTests: XCTestCase {
    func testAnAttributeNameComesFromTheEntry() {
        let name = StoreLoginName.attribute("uid")
        XCTAssertEqual(name.name(typed: "Alice@Example.ORG", rewritten: "alice@example.org", attributes: ["uid": "alice"]), "alice")
        // Attribute names are compared without case, as LDAP does.
        XCTAssertEqual(StoreLoginName.attribute("UID").name(typed: "x", rewritten: "x", attributes: ["uid": "a"]), "a")
        // No value (or no entry: a route to the default backend): no name, never a guess.
        XCTAssertNil(name.name(typed: "alice", rewritten: "alice", attributes: [:]))
        XCTAssertNil(name.name(typed: "alice", rewritten: "alice", attributes: ["uid": ""]))
        XCTAssertEqual(name.attribute, "uid")
        XCTAssertNil(StoreLoginName.template("%n").attribute)
    }

    func testAttributeNames() {
        for good in ["uid", "mail", "mailLocalAddress", "x-name", "0.9.2342.19200300.100.1.1"] {
            XCTAssertTrue(LDAPFilter.isAttributeName(good), good)
        }
        for bad in ["", "u id", "(uid)", "uid=x", "1.", "-uid", "ü"] {
            XCTAssertFalse(LDAPFilter.isAttributeName(bad), bad)
        }
    }

    func testAnAcceptedPasswordIsKeptForItsTTLAsADigest() {
        var cache = VerifiedPasswords(ttl: 60)
        let digest: [UInt8] = [1, 2, 3]
        XCTAssertFalse(cache.accepts(dn: "uid=alice,dc=example", digest: digest, now: 0))
        cache.remember(dn: "uid=alice,dc=example", digest: digest, now: 0)
        XCTAssertTrue(cache.accepts(dn: "UID=Alice,dc=example", digest: digest, now: 59))
        // Another password, or the TTL run out: bind again.
        XCTAssertFalse(cache.accepts(dn: "uid=alice,dc=example", digest: [9], now: 1))
        XCTAssertFalse(cache.accepts(dn: "uid=alice,dc=example", digest: digest, now: 60))
        cache.remember(dn: "uid=alice,dc=example", digest: digest, now: 100)
        cache.forget(dn: "uid=alice,dc=example")
        XCTAssertFalse(cache.accepts(dn: "uid=alice,dc=example", digest: digest, now: 101))
    }

    func testTheCacheIsOffWithoutATTLAndBounded() {
        var off = VerifiedPasswords(ttl: 0)
        off.remember(dn: "uid=a", digest: [1], now: 0)
        XCTAssertEqual(off.count, 0)
        var small = VerifiedPasswords(ttl: 60, maxEntries: 3)
        for index in 0..<10 { small.remember(dn: "uid=u\(index)", digest: [1], now: Double(index)) }
        XCTAssertEqual(small.count, 3)
        XCTAssertTrue(small.accepts(dn: "uid=u9", digest: [1], now: 10))
        XCTAssertFalse(small.accepts(dn: "uid=u0", digest: [1], now: 10))
    }
}
