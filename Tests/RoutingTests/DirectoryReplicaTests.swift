import Routing
import XCTest

final class DirectoryReplicaTests: XCTestCase {
    func testLookupsFollowUpsertsAndRemovals() {
        var replica = DirectoryReplica()
        replica.upsert(key: "u-alice", dn: "uid=alice,ou=people,dc=example,dc=org", loginValues: ["alice", "Alice@Example.org"],
                       backendValue: "legacy")
        replica.upsert(key: "u-bob", dn: "uid=bob,ou=people,dc=example,dc=org", loginValues: ["bob"], backendValue: nil)
        XCTAssertEqual(replica.lookup("ALICE"), .found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "legacy"))
        XCTAssertEqual(replica.lookup("alice@example.org"), .found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "legacy"))
        XCTAssertEqual(replica.lookup("bob"), .found(dn: "uid=bob,ou=people,dc=example,dc=org", backendValue: nil))
        XCTAssertEqual(replica.lookup("carol"), .notFound)
        // A flip replaces the entry; a new login value moves the index; a move to another OU
        // (the same entryUUID under a new DN) leaves nothing behind.
        replica.upsert(key: "u-alice", dn: "uid=alice,ou=people,dc=example,dc=org", loginValues: ["alice2"], backendValue: "new")
        XCTAssertEqual(replica.lookup("alice"), .notFound)
        XCTAssertEqual(replica.lookup("alice2"), .found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "new"))
        replica.upsert(key: "u-alice", dn: "uid=alice,ou=staff,dc=example,dc=org", loginValues: ["alice2"], backendValue: "new")
        XCTAssertEqual(replica.lookup("alice2"), .found(dn: "uid=alice,ou=staff,dc=example,dc=org", backendValue: "new"))
        XCTAssertEqual(replica.count, 2)
        replica.remove(key: "u-bob")
        XCTAssertEqual(replica.lookup("bob"), .notFound)
        XCTAssertEqual(replica.count, 1)
    }

    func testTwoEntriesWithOneLoginValueAreAmbiguousUntilOneGoes() {
        var replica = DirectoryReplica()
        replica.upsert(key: "a", dn: "uid=a,dc=x", loginValues: ["shared@example.org", "a"], backendValue: "legacy")
        replica.upsert(key: "b", dn: "uid=b,dc=x", loginValues: ["shared@example.org", "b"], backendValue: "new")
        XCTAssertEqual(replica.lookup("shared@example.org"), .ambiguous(count: 2))
        XCTAssertEqual(replica.lookup("b"), .found(dn: "uid=b,dc=x", backendValue: "new"))
        replica.remove(key: "a")
        XCTAssertEqual(replica.lookup("shared@example.org"), .found(dn: "uid=b,dc=x", backendValue: "new"))
    }

    func testReplicaFiltersAreEqualitiesOrAnORofThem() {
        XCTAssertEqual(try LDAPFilter.replicaAttributes("(uid=%u)").get(), ["uid"])
        XCTAssertEqual(try LDAPFilter.replicaAttributes("(|(uid=%u)(mail=%u))").get(), ["uid", "mail"])
        XCTAssertEqual(try LDAPFilter.replicaAttributes("(| (uid=%u) (mail=%u) (UID=%u))").get(), ["uid", "mail"])
        for refused in ["(&(objectClass=inetOrgPerson)(uid=%u))", "(uid=%n)", "(uid=%u*)", "(!(uid=%u))",
                        "(|(uid=%u)(mail=%n@example.org))", "(|)", "uid=%u", "(mail=%u@example.org)"] {
            XCTAssertThrowsError(try LDAPFilter.replicaAttributes(refused).get(), refused)
        }
    }
}
