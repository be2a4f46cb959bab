#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import XCTest

final class SystemErrorTests: XCTestCase {
    func testOnlyWhatSaysTheHostIsDeadMarksItDown() {
        for dead in [ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET] {
            XCTAssertTrue(SystemError("connect", errno: dead).saysHostIsDown, "errno \(dead)")
        }
        // Out of descriptors or local ports: our own trouble, not the store's.
        for ours in [EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, EACCES] {
            XCTAssertFalse(SystemError("connect", errno: ours).saysHostIsDown, "errno \(ours)")
        }
    }
}
