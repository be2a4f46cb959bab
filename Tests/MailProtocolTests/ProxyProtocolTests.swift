import MailProtocol
import XCTest

final class IPAddressTests: XCTestCase {
    func testIPv4ParsesAndPrintsAsADottedQuad() throws {
        for text in ["0.0.0.0", "255.255.255.255", "192.168.1.10", "10.0.0.1", "1.20.100.200"] {
            let address = try XCTUnwrap(IPAddress(text), text)
            XCTAssertTrue(address.isIPv4)
            XCTAssertEqual(address.description, text)
        }
        let address = try XCTUnwrap(IPAddress("192.0.2.33"))
        XCTAssertEqual(address.ipv4Value, 0xC000_0221)
        XCTAssertEqual(address.bytes, [192, 0, 2, 33])
        XCTAssertNil(address.ipv6Value)
        XCTAssertEqual(IPAddress(Substring("x192.0.2.33").dropFirst()), address)
    }

    func testIPv4RejectsAnythingButAStrictDottedQuad() {
        for text in ["", "1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.004", "00.1.2.3", "256.1.1.1", "1.2.3.",
                     ".1.2.3", "1..2.3", " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1.2.3.4/8", "0x1.2.3.4",
                     "1.2.3.1000", "１.2.3.4", "1.2.3.4\0"] {
            XCTAssertNil(IPAddress(text), text.debugDescription)
        }
    }

    func testIPv6PrintsInRFC5952CanonicalForm() throws {
        let cases = [
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),          // first of two equal runs
            ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),        // one zero group stays
            ("2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"),            // the longest run wins
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("2001:DB8::ABCD", "2001:db8::abcd"),
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("fe80::1:2:3:4:5:6", "fe80:0:1:2:3:4:5:6"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::FFFF:0102:0304", "::ffff:1.2.3.4"),
            ("0:0:0:0:0:ffff:c000:0280", "::ffff:192.0.2.128"),
            ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
            ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ]
        for (text, canonical) in cases {
            let address = try XCTUnwrap(IPAddress(text), text)
            XCTAssertFalse(address.isIPv4, text)
            XCTAssertEqual(address.description, canonical, text)
            XCTAssertEqual(IPAddress(canonical), address, canonical)
        }
        let address = try XCTUnwrap(IPAddress("2001:db8::1"))
        XCTAssertEqual(address.bytes, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        XCTAssertEqual(address.ipv6Value?.high, 0x2001_0db8_0000_0000)
        XCTAssertEqual(address.ipv6Value?.low, 1)
    }

    func testIPv6RejectsMalformedText() {
        for text in ["", ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1::2", "1::2:", "1:2:3:4:5:6:7:8:",
                     "12345::", "g::1", "fe80::1%eth0", "[::1]", "::1.2.3", "::1.2.3.4:1", "::01.2.3.4",
                     "1:2:3:4:5:6:7:1.2.3.4", "::ffff:256.1.1.1", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",
                     " ::1", "::1 ", "1:::2", "::-1", "1.2.3.4::", "::1.2.3.4.5", "::ffff:1.2.3.4/96"] {
            XCTAssertNil(IPAddress(text), text.debugDescription)
        }
    }

    func testBytesRoundTrip() throws {
        XCTAssertEqual(IPAddress(bytes: [10, 0, 0, 1]), IPAddress("10.0.0.1"))
        let v6: [UInt8] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55]
        let address = try XCTUnwrap(IPAddress(bytes: v6))
        XCTAssertEqual(address.description, "fe80::211:22ff:fe33:4455")
        XCTAssertEqual(address.bytes, v6)
        XCTAssertEqual(IPAddress(bytes: v6[...]), address)
        for count in [0, 1, 3, 5, 15, 17] {
            XCTAssertNil(IPAddress(bytes: [UInt8](repeating: 1, count: count)), "\(count) bytes")
        }
    }

    func testMappedIPv4() throws {
        let v4 = try XCTUnwrap(IPAddress("10.1.2.3"))
        let mapped = try XCTUnwrap(IPAddress("::ffff:10.1.2.3"))
        XCTAssertNotEqual(v4, mapped)    // two spellings, two values: callers normalise on purpose
        XCTAssertEqual(mapped.unmappedIPv4, v4)
        XCTAssertEqual(v4.mappedToIPv6, mapped)
        XCTAssertEqual(mapped.mappedToIPv6, mapped)
        XCTAssertNil(v4.unmappedIPv4)
        XCTAssertNil(IPAddress("::1")?.unmappedIPv4)
        XCTAssertNil(IPAddress("::10.1.2.3")?.unmappedIPv4)            // IPv4-compatible, not mapped
        XCTAssertNil(IPAddress("1::ffff:10.1.2.3")?.unmappedIPv4)
        XCTAssertEqual(Set([v4, mapped, mapped.unmappedIPv4!]).count, 2)
    }
}

final class ProxyProtocolTests: XCTestCase {
    private func v2(_ commandByte: UInt8, _ familyByte: UInt8, _ payload: [UInt8], length: Int? = nil) -> [UInt8] {
        let length = length ?? payload.count
        return ProxyProtocol.v2Signature + [commandByte, familyByte, UInt8(length >> 8), UInt8(length & 0xFF)] + payload
    }

    private func endpoint(_ address: String, _ port: UInt16) -> ProxyHeader.Endpoint {
        ProxyHeader.Endpoint(address: IPAddress(address)!, port: port)
    }

    private func assertInvalid(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        guard case .invalid = ProxyProtocol.parse(bytes) else {
            return XCTFail("\(String(decoding: bytes, as: UTF8.self).debugDescription): \(ProxyProtocol.parse(bytes))", file: file, line: line)
        }
    }

    /// Parses `header` followed by `after`: every strict prefix of the header needs more, the whole
    /// of it gives the header, and nothing of `after` is consumed.
    private func assertHeader(_ header: [UInt8], after: [UInt8] = Array("a1 CAPABILITY\r\n".utf8),
                              file: StaticString = #filePath, line: UInt = #line) -> ProxyHeader? {
        for end in 0..<header.count where ProxyProtocol.parse(header[..<end]) != .needMore {
            XCTFail("prefix of \(end) bytes: \(ProxyProtocol.parse(header[..<end]))", file: file, line: line)
            return nil
        }
        guard case .header(let parsed, let consumed) = ProxyProtocol.parse(header + after) else {
            XCTFail("\(ProxyProtocol.parse(header + after))", file: file, line: line)
            return nil
        }
        XCTAssertEqual(consumed, header.count, "consumed", file: file, line: line)
        XCTAssertEqual(ProxyProtocol.parse(header), .header(parsed, consumed: header.count), file: file, line: line)
        return parsed
    }

    // MARK: Version 1

    func testV1TCP4() {
        let header = assertHeader(Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 993\r\n".utf8))
        XCTAssertEqual(header, ProxyHeader(version: 1, command: .proxy, source: endpoint("192.0.2.1", 56324),
                                           destination: endpoint("198.51.100.2", 993)))
        XCTAssertEqual(header?.source?.description, "192.0.2.1:56324")
    }

    func testV1TCP6() {
        let header = assertHeader(Array("PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 65535 0\r\n".utf8))
        XCTAssertEqual(header, ProxyHeader(version: 1, command: .proxy, source: endpoint("2001:db8::1", 65535),
                                           destination: endpoint("::ffff:192.0.2.1", 0)))
        XCTAssertEqual(header?.source?.description, "[2001:db8::1]:65535")
        // The longest line the specification allows.
        let longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
        XCTAssertEqual(assertHeader(Array(longest.utf8))?.destination?.port, 65535)
    }

    func testV1Unknown() {
        let unknown = ProxyHeader(version: 1, command: .proxy, source: nil, destination: nil)
        XCTAssertEqual(assertHeader(Array("PROXY UNKNOWN\r\n".utf8)), unknown)
        XCTAssertEqual(assertHeader(Array("PROXY UNKNOWN ffff::1 what\0ever 1 2\r\n".utf8)), unknown)
        // Exactly 107 bytes with the CRLF is allowed; 108 is not.
        let full = Array("PROXY UNKNOWN ".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 107 - 16) + Array("\r\n".utf8)
        XCTAssertEqual(full.count, 107)
        XCTAssertEqual(assertHeader(full), unknown)
        let tooLong = Array("PROXY UNKNOWN ".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 108 - 16) + Array("\r\n".utf8)
        assertInvalid(tooLong)
        assertInvalid(Array(tooLong.prefix(107)))
        XCTAssertEqual(ProxyProtocol.parse(tooLong.prefix(106)), .needMore)
    }

    func testV1Invalid() {
        for line in [
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",          // leading zero in a port
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n",
            "PROXY TCP4 ::1 ::1 1 2\r\n",                    // wrong family
            "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
            "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",          // double space
            "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",          // trailing space
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",             // bare LF
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",            // CR without LF
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",             // three fields
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",         // five fields
            "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n",
            "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4\r\n",
            "PROXY UNKNOWNX\r\n",
            "PROXY \r\n",
            "PROXY\r\n",
            "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assertInvalid(Array(line.utf8))
        }
        // No CRLF within 107 bytes: refused as soon as the 107th byte arrives.
        let endless = Array("PROXY UNKNOWN ".utf8) + [UInt8](repeating: UInt8(ascii: "A"), count: 200)
        XCTAssertEqual(ProxyProtocol.parse(endless.prefix(106)), .needMore)
        assertInvalid(Array(endless.prefix(107)))
        assertInvalid(endless)
        assertInvalid(Array("PROXY".utf8) + [UInt8](repeating: UInt8(ascii: "A"), count: 200))
    }

    func testWhatCannotBeAHeaderIsRefusedAtOnce() {
        let login = Array("a1 LOGIN x y\r\n".utf8)
        assertInvalid(Array(login.prefix(1)))
        assertInvalid(login)
        assertInvalid(Array("USER alice\r\n".utf8.prefix(1)))
        XCTAssertEqual(ProxyProtocol.parse([UInt8]()), .needMore)
        XCTAssertEqual(ProxyProtocol.parse(Array("PROX".utf8)), .needMore)
        assertInvalid(Array("PROXX".utf8))
        assertInvalid(Array("PROXY TCP4 1.2.3.x".utf8))       // no need to wait for the CRLF
        assertInvalid(Array("PROXY TCP4 1.2.3.4  ".utf8))
        assertInvalid(Array("PROXY TCP7".utf8))
        assertInvalid(Array("PROXY UNKNOWNX".utf8))
        XCTAssertEqual(ProxyProtocol.parse(Array("PROXY UNKNOWN".utf8)), .needMore)
        XCTAssertEqual(ProxyProtocol.parse(Array("PROXY TCP".utf8)), .needMore)
        XCTAssertEqual(ProxyProtocol.parse(Array("\r\n".utf8)), .needMore)
        assertInvalid(Array("\r\nX".utf8))
        assertInvalid(Array(ProxyProtocol.v2Signature.prefix(11)) + [0x0B])
    }

    // MARK: Version 2

    func testV2INET() {
        let header = assertHeader(v2(0x21, 0x11, [192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x03, 0xE1]))
        XCTAssertEqual(header, ProxyHeader(version: 2, command: .proxy, source: endpoint("192.0.2.1", 56324),
                                           destination: endpoint("198.51.100.2", 993)))
    }

    func testV2INET6() {
        let source = IPAddress("2001:db8::1")!.bytes, destination = IPAddress("2001:db8::2")!.bytes
        let header = assertHeader(v2(0x21, 0x21, source + destination + [0x30, 0x39, 0x00, 0x6E]))
        XCTAssertEqual(header, ProxyHeader(version: 2, command: .proxy, source: endpoint("2001:db8::1", 12345),
                                           destination: endpoint("2001:db8::2", 110)))
    }

    func testV2LocalCarriesNoAddressWhateverItsFamily() {
        let local = ProxyHeader(version: 2, command: .local, source: nil, destination: nil)
        XCTAssertEqual(assertHeader(v2(0x20, 0x00, [])), local)
        XCTAssertEqual(assertHeader(v2(0x20, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2])), local)
        XCTAssertEqual(assertHeader(v2(0x20, 0xFF, [1, 2, 3])), local)     // the family is ignored
        XCTAssertEqual(assertHeader(ProxyProtocol.encodeV2Local()), local)
    }

    func testV2UnixUnspecAndDatagramAreAcceptedWithoutAddresses() {
        let unix = assertHeader(v2(0x21, 0x31, [UInt8](repeating: 0x41, count: 216)))
        XCTAssertEqual(unix, ProxyHeader(version: 2, command: .proxy, source: nil, destination: nil))
        assertInvalid(v2(0x21, 0x31, [UInt8](repeating: 0x41, count: 215)))

        XCTAssertEqual(assertHeader(v2(0x21, 0x00, [])), ProxyHeader(version: 2, command: .proxy, source: nil, destination: nil))
        // UNSPEC has no address block: everything is TLVs.
        XCTAssertEqual(assertHeader(v2(0x21, 0x00, [0x04, 0x00, 0x02, 0xAA, 0xBB]))?.tlvs, [.init(type: 0x04, value: [0xAA, 0xBB])])

        let dgram = assertHeader(v2(0x21, 0x12, [192, 0, 2, 1, 198, 51, 100, 2, 0, 53, 0, 53]))
        XCTAssertEqual(dgram, ProxyHeader(version: 2, command: .proxy, source: nil, destination: nil))
        let unspecTransport = assertHeader(v2(0x21, 0x10, [192, 0, 2, 1, 198, 51, 100, 2, 0, 53, 0, 53]))
        XCTAssertNil(unspecTransport?.source)
    }

    func testV2TLVs() {
        let addresses: [UInt8] = [10, 0, 0, 1, 10, 0, 0, 2, 0x04, 0x00, 0x00, 0x8F]
        let authority = Array("imap.example.org".utf8)
        let tlvs = [UInt8(0x02), 0x00, UInt8(authority.count)] + authority + [0x04, 0x00, 0x00]
        let header = assertHeader(v2(0x21, 0x11, addresses + tlvs))
        XCTAssertEqual(header?.tlvs, [.init(type: ProxyHeader.TLV.authority, value: authority), .init(type: ProxyHeader.TLV.noop, value: [])])
        XCTAssertEqual(header?.source, endpoint("10.0.0.1", 1024))

        // A TLV whose value, or whose own 3-byte header, runs past the header's length.
        assertInvalid(v2(0x21, 0x11, addresses + [0x02, 0x00, 0x05, 1, 2, 3, 4]))
        assertInvalid(v2(0x21, 0x11, addresses + [0x02, 0x00]))
        assertInvalid(v2(0x21, 0x11, addresses + [0x02]))
        // ... even though the bytes that follow would complete it.
        assertInvalid(v2(0x21, 0x11, addresses + [0x02, 0x00, 0x05, 1, 2, 3, 4], length: 16) + [5, 6, 7])
    }

    func testV2Invalid() {
        let addresses: [UInt8] = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]
        assertInvalid(v2(0x11, 0x11, addresses))                 // version 1 in a v2 header
        assertInvalid(v2(0x31, 0x11, addresses))
        assertInvalid(v2(0x01, 0x11, addresses))
        assertInvalid(v2(0x22, 0x11, addresses))                 // command 2
        assertInvalid(v2(0x2F, 0x11, addresses))
        assertInvalid(v2(0x21, 0x41, addresses))                 // family 4
        assertInvalid(v2(0x21, 0x13, addresses))                 // transport 3
        assertInvalid(v2(0x21, 0x11, Array(addresses.prefix(11))))   // short address blocks
        assertInvalid(v2(0x21, 0x21, [UInt8](repeating: 0, count: 35)))
        // Refused from the 16 fixed bytes alone, before any of the payload arrives.
        assertInvalid(Array(v2(0x11, 0x11, []).prefix(13)))
        assertInvalid(Array(v2(0x22, 0x11, []).prefix(13)))
        assertInvalid(Array(v2(0x21, 0x51, []).prefix(14)))
        assertInvalid(v2(0x21, 0x00, [], length: 4097))
        assertInvalid(v2(0x21, 0x00, [], length: 0xFFFF))
        assertInvalid(v2(0x21, 0x11, [], length: 11))
        // 4096 is the largest accepted.
        let biggest = v2(0x21, 0x00, [0x04, 0x0F, 0xFD] + [UInt8](repeating: 0, count: 4093))
        guard case .header(let header, consumed: 16 + 4096) = ProxyProtocol.parse(biggest) else { return XCTFail("4096") }
        XCTAssertEqual(header.tlvs.first?.value.count, 4093)
        XCTAssertEqual(ProxyProtocol.parse(biggest.dropLast()), .needMore)
    }

    func testBytesAfterTheHeaderAreLeftForTheMailProtocol() throws {
        let header = Array("PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r\n".utf8)
        let stream = header + Array("a1 LOGIN alice secret\r\n".utf8)
        guard case .header(_, let consumed) = ProxyProtocol.parse(stream) else { return XCTFail() }
        XCTAssertEqual(String(decoding: stream[consumed...], as: UTF8.self), "a1 LOGIN alice secret\r\n")

        // A v2 header whose following bytes look like another header or a TLV.
        let v2Header = ProxyProtocol.encodeV2(source: IPAddress("10.0.0.1")!, sourcePort: 1, destination: IPAddress("10.0.0.2")!, destinationPort: 2)
        let v2Stream = v2Header + [0x04, 0x00, 0x00] + v2Header
        guard case .header(let parsed, let v2Consumed) = ProxyProtocol.parse(v2Stream) else { return XCTFail() }
        XCTAssertEqual(v2Consumed, 28)
        XCTAssertEqual(parsed.tlvs, [])
        // A slice that does not start at index 0, and a collection without contiguous storage.
        XCTAssertEqual(ProxyProtocol.parse(stream[3...]), .invalid("not a PROXY protocol header"))
        XCTAssertEqual(ProxyProtocol.parse(v2Stream[28...]), .invalid("not a PROXY protocol header"))
        XCTAssertEqual(ProxyProtocol.parse(v2Stream[31...]), ProxyProtocol.parse(v2Stream))
        XCTAssertEqual(ProxyProtocol.parse(v2Stream.lazy.map { $0 }), ProxyProtocol.parse(v2Stream))
        XCTAssertEqual(ProxyProtocol.parse(stream.lazy.map { $0 }), ProxyProtocol.parse(stream))
    }

    // MARK: Encoding

    func testEncodeV2MatchesTheSpecificationLayout() {
        let bytes = ProxyProtocol.encodeV2(source: IPAddress("192.0.2.1")!, sourcePort: 56324,
                                           destination: IPAddress("198.51.100.2")!, destinationPort: 993)
        XCTAssertEqual(bytes, v2(0x21, 0x11, [192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x03, 0xE1]))
        XCTAssertEqual(ProxyProtocol.encodeV2Local(), ProxyProtocol.v2Signature + [0x20, 0x00, 0x00, 0x00])
        XCTAssertEqual(String(decoding: ProxyProtocol.encodeV1Unknown(), as: UTF8.self), "PROXY UNKNOWN\r\n")
        XCTAssertEqual(String(decoding: ProxyProtocol.encodeV1(source: IPAddress("::1")!, sourcePort: 1,
                                                               destination: IPAddress("10.0.0.1")!, destinationPort: 143), as: UTF8.self),
                       "PROXY TCP6 ::1 ::ffff:10.0.0.1 1 143\r\n")
    }

    func testEncodeParseRoundTrips() throws {
        let tlvs: [ProxyHeader.TLV] = [.init(type: ProxyHeader.TLV.alpn, value: Array("imap".utf8)),
                                       .init(type: ProxyHeader.TLV.uniqueID, value: [UInt8](repeating: 7, count: 300))]
        for (source, destination) in [("203.0.113.9", "10.0.0.1"), ("2001:db8::9", "fd00::1"),
                                      ("203.0.113.9", "fd00::1"), ("2001:db8::9", "10.0.0.1"), ("::ffff:1.2.3.4", "::")] {
            let source = try XCTUnwrap(IPAddress(source)), destination = try XCTUnwrap(IPAddress(destination))
            let mixed = source.isIPv4 != destination.isIPv4
            // Mixed families travel as IPv6; the IPv4 end comes back in its mapped form.
            let expected = (mixed ? source.mappedToIPv6 : source, mixed ? destination.mappedToIPv6 : destination)
            for encodedTLVs in [[], tlvs] {
                let encoded = ProxyProtocol.encodeV2(source: source, sourcePort: 40000, destination: destination,
                                                     destinationPort: 993, tlvs: encodedTLVs)
                let header = assertHeader(encoded)
                XCTAssertEqual(header, ProxyHeader(version: 2, command: .proxy, source: .init(address: expected.0, port: 40000),
                                                   destination: .init(address: expected.1, port: 993), tlvs: encodedTLVs))
                XCTAssertEqual(header?.source?.address.unmappedIPv4 ?? header?.source?.address, source.unmappedIPv4 ?? source)
            }
            let v1 = assertHeader(ProxyProtocol.encodeV1(source: source, sourcePort: 0, destination: destination, destinationPort: 65535))
            XCTAssertEqual(v1, ProxyHeader(version: 1, command: .proxy, source: .init(address: expected.0, port: 0),
                                           destination: .init(address: expected.1, port: 65535)))
        }
        XCTAssertEqual(assertHeader(ProxyProtocol.encodeV1Unknown()), ProxyHeader(version: 1, command: .proxy, source: nil, destination: nil))
    }
}

final class ProxyHeaderReaderTests: XCTestCase {
    private let header = Array("PROXY TCP4 192.0.2.1 198.51.100.2 40000 143\r\n".utf8)

    func testConsumesExactlyTheHeaderAndNothingAfterIt() {
        var reader = ProxyHeaderReader()
        let after = Array("\u{16}\u{03}\u{01}hello".utf8)   // a TLS ClientHello's first bytes
        guard case .complete(let parsed, let taken) = reader.offer(header + after) else { return XCTFail("no header") }
        XCTAssertEqual(taken, header.count)
        XCTAssertEqual(parsed.source?.address.description, "192.0.2.1")
        XCTAssertEqual(parsed.source?.port, 40000)
    }

    func testAHeaderArrivingInPiecesIsConsumedAsItComes() {
        var reader = ProxyHeaderReader()
        XCTAssertEqual(reader.offer(header[0..<10]), .consume(10))
        // The driver consumed those 10; now the rest is waiting, plus a command.
        guard case .complete(_, let taken) = reader.offer(header[10...] + Array("a1 NOOP\r\n".utf8)) else {
            return XCTFail("no header")
        }
        XCTAssertEqual(taken, header.count - 10)
    }

    func testSomethingElseIsInvalidAtOnce() {
        var reader = ProxyHeaderReader()
        guard case .invalid = reader.offer(Array("a1 LOGIN alice secret\r\n".utf8)) else { return XCTFail("accepted") }
    }
}
