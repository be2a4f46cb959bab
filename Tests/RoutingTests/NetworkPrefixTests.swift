import MailProtocol
import Routing
import XCTest

final class NetworkPrefixTests: XCTestCase {
    private func address(_ text: String) -> IPAddress { IPAddress(text)! }

    func testParsingAndCanonicalDescription() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),            // host bits are cleared
            ("192.0.2.1", "192.0.2.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("255.255.255.255/0", "0.0.0.0/0"),
            ("172.16.0.0/12", "172.16.0.0/12"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("fdab:cdef::1/8", "fd00::/8"),
            ("2001:DB8:0:0::/32", "2001:db8::/32"),
            ("2001:db8:ffff:ffff:ffff::/65", "2001:db8:ffff:ffff:8000::/65"),
            ("2001:db8::ffff:ffff/127", "2001:db8::ffff:fffe/127"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
        ]
        for (text, canonical) in cases {
            XCTAssertEqual(NetworkPrefix(text)?.description, canonical, text)
            XCTAssertEqual(NetworkPrefix(canonical), NetworkPrefix(text), text)
        }
        XCTAssertEqual(NetworkPrefix("10.0.0.0/8")?.length, 8)
        XCTAssertEqual(NetworkPrefix("10.9.9.9/8")?.network, address("10.0.0.0"))
        XCTAssertEqual(NetworkPrefix(address: address("10.1.2.3"), length: 16), NetworkPrefix("10.1.0.0/16"))
        XCTAssertNil(NetworkPrefix(address: address("10.1.2.3"), length: 33))
        XCTAssertNil(NetworkPrefix(address: address("::1"), length: 129))
        XCTAssertNil(NetworkPrefix(address: address("::1"), length: -1))
    }

    func testRejectsBadAddressesAndLengths() {
        for text in ["", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08",
                     "10.0.0.0/8/8", "10.0.0/8", "10.0.0.0/ 8", "10.0.0.0 /8", "fe80::1%eth0/64", "10.0.0.0/1000",
                     "[::1]/128", "10.0.0.0/x", "01.0.0.0/8", "::/0128"] {
            XCTAssertNil(NetworkPrefix(text), text.debugDescription)
        }
    }

    func testIPv4Containment() throws {
        let ten = try XCTUnwrap(NetworkPrefix("10.0.0.0/8"))
        XCTAssertTrue(ten.contains(address("10.0.0.0")))
        XCTAssertTrue(ten.contains(address("10.255.255.255")))
        XCTAssertFalse(ten.contains(address("11.0.0.0")))
        XCTAssertFalse(ten.contains(address("9.255.255.255")))

        let host = try XCTUnwrap(NetworkPrefix("192.0.2.1/32"))
        XCTAssertTrue(host.contains(address("192.0.2.1")))
        XCTAssertFalse(host.contains(address("192.0.2.0")))
        XCTAssertFalse(host.contains(address("192.0.2.2")))

        let all = try XCTUnwrap(NetworkPrefix("0.0.0.0/0"))
        for text in ["0.0.0.0", "255.255.255.255", "8.8.8.8", "::ffff:1.2.3.4"] {
            XCTAssertTrue(all.contains(address(text)), text)
        }
        XCTAssertFalse(all.contains(address("::1")))
        XCTAssertFalse(all.contains(address("2001:db8::1")))

        let odd = try XCTUnwrap(NetworkPrefix("172.16.0.0/12"))
        XCTAssertTrue(odd.contains(address("172.31.255.255")))
        XCTAssertFalse(odd.contains(address("172.32.0.0")))
    }

    func testIPv6Containment() throws {
        let loopback = try XCTUnwrap(NetworkPrefix("::1/128"))
        XCTAssertTrue(loopback.contains(address("::1")))
        XCTAssertFalse(loopback.contains(address("::2")))
        XCTAssertFalse(loopback.contains(address("::")))

        let ula = try XCTUnwrap(NetworkPrefix("fd00::/8"))
        XCTAssertTrue(ula.contains(address("fd00::1")))
        XCTAssertTrue(ula.contains(address("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")))
        XCTAssertFalse(ula.contains(address("fe00::")))
        XCTAssertFalse(ula.contains(address("fc00::")))
        XCTAssertFalse(ula.contains(address("10.0.0.1")))

        // A boundary in the second half of the address.
        let slash65 = try XCTUnwrap(NetworkPrefix("2001:db8:0:1::/65"))
        XCTAssertTrue(slash65.contains(address("2001:db8:0:1:7fff:ffff:ffff:ffff")))
        XCTAssertFalse(slash65.contains(address("2001:db8:0:1:8000::")))
        XCTAssertFalse(slash65.contains(address("2001:db8:0:2::")))

        let all = try XCTUnwrap(NetworkPrefix("::/0"))
        XCTAssertTrue(all.contains(address("::")))
        XCTAssertTrue(all.contains(address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")))
    }

    func testMappedAddressesMatchIPv4PrefixesAndTheOtherWayRound() throws {
        // A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d: it is still in 10.0.0.0/8.
        let ten = try XCTUnwrap(NetworkPrefix("10.0.0.0/8"))
        XCTAssertTrue(ten.contains(address("::ffff:10.1.2.3")))
        XCTAssertFalse(ten.contains(address("::ffff:11.1.2.3")))
        XCTAssertFalse(ten.contains(address("::10.1.2.3")))              // IPv4-compatible is not mapped
        XCTAssertFalse(ten.contains(address("2001:db8::a01:203")))
        XCTAssertFalse(ten.contains(address("::ffff:0:a01:203")))

        // And an IPv4 client is in a prefix written in the mapped form.
        let mapped = try XCTUnwrap(NetworkPrefix("::ffff:10.0.0.0/104"))
        XCTAssertTrue(mapped.contains(address("10.1.2.3")))
        XCTAssertTrue(mapped.contains(address("::ffff:10.1.2.3")))
        XCTAssertFalse(mapped.contains(address("11.1.2.3")))

        let host = try XCTUnwrap(NetworkPrefix("192.0.2.7"))
        XCTAssertTrue(host.contains(address("::ffff:192.0.2.7")))
        XCTAssertTrue(try XCTUnwrap(NetworkPrefix("::ffff:192.0.2.7")).contains(address("192.0.2.7")))
    }

    func testLimitsCountIPv4ByAddressAndIPv6ByItsSlash64() {
        XCTAssertEqual(NetworkPrefix.limitKey(for: "192.0.2.7"), "192.0.2.7")
        XCTAssertEqual(NetworkPrefix.limitKey(for: "::ffff:192.0.2.7"), "192.0.2.7", "a mapped address is its IPv4 client")
        XCTAssertEqual(NetworkPrefix.limitKey(for: "2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        XCTAssertEqual(NetworkPrefix.limitKey(for: "2001:db8:1:2:bbbb::9"), NetworkPrefix.limitKey(for: "2001:db8:1:2::5"),
                       "one subscriber's network is one key")
        XCTAssertNotEqual(NetworkPrefix.limitKey(for: "2001:db8:1:3::1"), NetworkPrefix.limitKey(for: "2001:db8:1:2::1"))
        XCTAssertEqual(NetworkPrefix.limitKey(for: "not an address"), "not an address")
    }
}
