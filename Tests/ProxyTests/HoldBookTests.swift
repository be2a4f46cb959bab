import Foundation
@testable import Proxy
import XCTest

final class HoldBookTests: XCTestCase {
    func testAHoldCoversItsNameAndItsEntryAndSurvivesARestart() throws {
        let file = NSTemporaryDirectory() + "holds-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let book = try HoldBook(file: file)
        XCTAssertNil(book.hold(for: "alice", entry: "uid=alice,dc=example"))
        _ = try book.add(user: "alice", reason: "Moving.", dn: "uid=alice,dc=example")
        XCTAssertEqual(book.hold(for: "ALICE")?.reason, "Moving.", "the name, without case")
        XCTAssertEqual(book.hold(for: "alice@example.org", entry: "UID=alice,DC=example")?.user, "alice", "the entry")
        XCTAssertNil(book.hold(for: "alice@example.org"), "another name, entry unknown yet")
        XCTAssertNil(book.hold(for: "bob", entry: "uid=bob,dc=example"))
        let reopened = try HoldBook(file: file)
        XCTAssertEqual(reopened.hold(for: "a@b", entry: "uid=alice,dc=example")?.dn, "uid=alice,dc=example")
        XCTAssertTrue(try reopened.remove(user: "alice"))
        XCTAssertNil(reopened.hold(for: "x", entry: "uid=alice,dc=example"), "released with its name")
    }
}
