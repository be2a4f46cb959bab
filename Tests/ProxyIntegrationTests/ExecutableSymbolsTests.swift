import Foundation
import XCTest

/// The daemon watches its sockets through its own epoll sets and leaves libc's epoll alone:
/// an executable that defined `epoll_ctl` or `epoll_wait` would replace them for libdispatch
/// and everything else in the process (what `epoll_hangup.c` once did).
final class ExecutableSymbolsTests: XCTestCase {
    func testTheExecutableUsesLibcsEpollAndDefinesNoneOfItsOwn() throws {
        let binary = Harness.mailswitchBinary.path
        let defined = try Harness.run("nm", ["-D", "--defined-only", binary])
        let undefined = try Harness.run("nm", ["-D", "--undefined-only", binary])
        XCTAssertEqual(defined.status, 0, defined.stderr)
        XCTAssertEqual(undefined.status, 0, undefined.stderr)
        let names = { (output: Harness.Output) in Set(output.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) }) }
        let exported = names(defined)
        let imported = names(undefined)
        for symbol in ["epoll_ctl", "epoll_wait", "epoll_pwait"] {
            XCTAssertFalse(exported.contains(symbol), "the executable defines \(symbol), replacing libc's for the whole process")
        }
        // The other side of the same check: the loops do call libc's.
        XCTAssertTrue(imported.contains(where: { $0.hasPrefix("epoll_ctl") }), "epoll_ctl is not taken from libc: \(imported.count) imports")
        XCTAssertTrue(imported.contains(where: { $0.hasPrefix("epoll_wait") }), "epoll_wait is not taken from libc")
    }
}
