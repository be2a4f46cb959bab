import Routing
import XCTest

final class DirectoryReplicaTests: XCTestCase {
    private let uidOrMail = try! ReplicaFilter.parse("(|(uid=%u)(mail=%u))").get()

    func testLookupsFollowUpsertsAndRemovals() {
        var replica = DirectoryReplica(filter: uidOrMail)
        replica.upsert(key: "u-alice", dn: "uid=alice,ou=people,dc=example,dc=org",
                       attributes: ["uid": ["alice"], "mail": ["Alice@Example.org"]], backendValue: "legacy")
        replica.upsert(key: "u-bob", dn: "uid=bob,ou=people,dc=example,dc=org", attributes: ["uid": ["bob"]], backendValue: nil)
        XCTAssertEqual(replica.lookup("ALICE"), .found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "legacy"))
        XCTAssertEqual(replica.lookup("alice@example.org"), .found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "legacy"))
        XCTAssertEqual(replica.lookup("bob"), .found(dn: "uid=bob,ou=people,dc=example,dc=org", backendValue: nil))
        XCTAssertEqual(replica.lookup("carol"), .notFound)
        // A flip replaces the entry; a new login value moves the index; a move to another OU
        // (the same entryUUID under a new DN) leaves nothing behind.
        replica.upsert(key: "u-alice", dn: "uid=alice,ou=people,dc=example,dc=org", attributes: ["uid": ["alice2"]], backendValue: "new")
        XCTAssertEqual(replica.lookup("alice"), .notFound)
        XCTAssertEqual(replica.lookup("alice2"), .found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "new"))
        replica.upsert(key: "u-alice", dn: "uid=alice,ou=staff,dc=example,dc=org", attributes: ["UID": ["alice2"]], backendValue: "new")
        XCTAssertEqual(replica.lookup("alice2"), .found(dn: "uid=alice,ou=staff,dc=example,dc=org", backendValue: "new"))
        XCTAssertEqual(replica.count, 2)
        replica.remove(key: "u-bob")
        XCTAssertEqual(replica.lookup("bob"), .notFound)
        XCTAssertEqual(replica.count, 1)
    }

    func testTheAttributesAStoreNamesUsersByAreKeptAndAnswered() {
        var replica = DirectoryReplica(filter: uidOrMail)
        replica.upsert(key: "u-alice", dn: "uid=alice,dc=example", attributes: ["mail": ["alice@example.org"]],
                       backendValue: "new", entryAttributes: ["uid": "alice"])
        XCTAssertEqual(replica.lookup("alice@example.org"),
                       .found(dn: "uid=alice,dc=example", backendValue: "new", attributes: ["uid": "alice"]))
        XCTAssertEqual(replica.lookup("alice@example.org").attributes, ["uid": "alice"])
    }

    func testTwoEntriesWithOneLoginValueAreAmbiguousUntilOneGoes() {
        var replica = DirectoryReplica(filter: uidOrMail)
        replica.upsert(key: "a", dn: "uid=a,dc=x", attributes: ["mail": ["shared@example.org"], "uid": ["a"]], backendValue: "legacy")
        replica.upsert(key: "b", dn: "uid=b,dc=x", attributes: ["mail": ["shared@example.org"], "uid": ["b"]], backendValue: "new")
        XCTAssertEqual(replica.lookup("shared@example.org"), .ambiguous(count: 2))
        XCTAssertEqual(replica.lookup("b"), .found(dn: "uid=b,dc=x", backendValue: "new"))
        replica.remove(key: "a")
        XCTAssertEqual(replica.lookup("shared@example.org"), .found(dn: "uid=b,dc=x", backendValue: "new"))
    }

    func testTheMostCommonFilterMatchesTheObjectClassAsTheServerWould() throws {
        var replica = DirectoryReplica(filter: try ReplicaFilter.parse("(&(objectClass=inetOrgPerson)(uid=%u))").get())
        replica.upsert(key: "p", dn: "uid=alice,dc=x", attributes: ["objectClass": ["top", "InetOrgPerson"], "uid": ["alice"]],
                       backendValue: "legacy")
        replica.upsert(key: "g", dn: "cn=staff,dc=x", attributes: ["objectClass": ["groupOfNames"], "uid": ["staff"]],
                       backendValue: "legacy")
        XCTAssertEqual(replica.lookup("Alice"), .found(dn: "uid=alice,dc=x", backendValue: "legacy"))
        XCTAssertEqual(replica.lookup("staff"), .notFound, "not an inetOrgPerson: the server would not find it")
        // A second holder of the login value that fails the filter does not make it ambiguous.
        replica.upsert(key: "g2", dn: "cn=alice,ou=groups,dc=x", attributes: ["objectClass": ["groupOfNames"], "uid": ["alice"]],
                       backendValue: "new")
        XCTAssertEqual(replica.lookup("alice"), .found(dn: "uid=alice,dc=x", backendValue: "legacy"))
    }

    func testEachBranchMatchesItsOwnAttribute() throws {
        let filter = try ReplicaFilter.parse("(|(&(objectClass=person)(uid=%u))(mail=%u))").get()
        var replica = DirectoryReplica(filter: filter)
        // "bob" is a mail value here, but the uid branch wants a person: only the mail branch can match.
        replica.upsert(key: "x", dn: "cn=x,dc=x", attributes: ["objectClass": ["device"], "uid": ["bob"], "mail": ["x@example.org"]],
                       backendValue: "legacy")
        XCTAssertEqual(replica.lookup("bob"), .notFound)
        XCTAssertEqual(replica.lookup("x@example.org"), .found(dn: "cn=x,dc=x", backendValue: "legacy"))
    }

    func testReplicaFiltersTheReplicaCanMatchItself() throws {
        XCTAssertEqual(try ReplicaFilter.parse("(uid=%u)").get().loginAttributes, ["uid"])
        XCTAssertEqual(try ReplicaFilter.parse("(|(uid=%u)(mail=%u))").get().loginAttributes, ["uid", "mail"])
        XCTAssertEqual(try ReplicaFilter.parse("(| (uid=%u) (mail=%u) (UID=%u))").get().loginAttributes, ["uid", "mail"])
        let common = try ReplicaFilter.parse("(&(objectClass=inetOrgPerson)(uid=%u))").get()
        XCTAssertEqual(common, .and([.equals(attribute: "objectClass", value: "inetOrgPerson"), .equalsLogin(attribute: "uid")]))
        XCTAssertEqual(common.fixedAttributes, ["objectClass"])
        XCTAssertNoThrow(try ReplicaFilter.parse("(|(&(objectClass=person)(uid=%u))(&(objectClass=account)(mail=%u)))").get())
        for refused in ["(uid=%n)", "(uid=%u*)", "(!(uid=%u))", "(|(uid=%u)(mail=%n@example.org))", "(|)", "uid=%u",
                        "(mail=%u@example.org)", "(objectClass=person)", "(|(uid=%u)(objectClass=person))",
                        "(&(objectClass=per*)(uid=%u))", "(uid>=%u)", "(uid=%u))"] {
            XCTAssertThrowsError(try ReplicaFilter.parse(refused).get(), refused)
        }
    }
}
