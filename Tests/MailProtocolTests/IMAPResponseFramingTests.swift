import MailProtocol
import XCTest

/// The state after every prefix of `bytes`, fed one byte at a time (without allocating, so the
/// randomized test stays fast).
private func statesByteByByte(_ bytes: [UInt8]) -> [IMAPResponseFraming] {
    var framing = IMAPResponseFraming()
    var states = [framing]
    states.reserveCapacity(bytes.count + 1)
    for byte in bytes {
        withUnsafeBytes(of: byte) { framing.consume($0) }
        states.append(framing)
    }
    return states
}

private func responseEnds(_ responses: [[UInt8]]) -> [Int] {
    var ends = [0]
    for response in responses { ends.append(ends[ends.count - 1] + response.count) }
    return ends
}

/// Feeds the concatenated `responses` (each one complete response) byte by byte, whole, through
/// both entry points, and split in two at every offset. Checks that the stream is at a boundary
/// exactly before the first and after each response and nowhere else, and that the state after
/// any prefix does not depend on how the bytes were chunked.
@discardableResult
private func assertFraming(_ responses: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) -> [IMAPResponseFraming] {
    let bytes = responses.flatMap { $0 }
    let states = statesByteByByte(bytes)
    let final = states[bytes.count]
    XCTAssertEqual(states.indices.filter { states[$0].isAtResponseBoundary }, responseEnds(responses),
                   "boundaries", file: file, line: line)
    XCTAssertEqual(states.firstIndex { $0.lostFraming }, nil, "lost framing", file: file, line: line)

    var whole = IMAPResponseFraming()
    whole.consume(bytes)
    XCTAssertEqual(whole, final, "whole", file: file, line: line)
    var raw = IMAPResponseFraming()
    bytes.withUnsafeBytes { raw.consume($0) }
    XCTAssertEqual(raw, final, "whole, raw buffer", file: file, line: line)
    var copied = IMAPResponseFraming()
    copied.consume(bytes.lazy.map { $0 })
    XCTAssertEqual(copied, final, "whole, non-contiguous collection", file: file, line: line)

    for split in 0...bytes.count {
        var framing = IMAPResponseFraming()
        framing.consume(bytes[..<split])
        XCTAssertEqual(framing, states[split], "first chunk of split at \(split)", file: file, line: line)
        framing.consume(bytes[split...])
        XCTAssertEqual(framing, final, "split at \(split)", file: file, line: line)
    }
    return states
}

@discardableResult
private func assertFraming(_ responses: [String], file: StaticString = #filePath, line: UInt = #line) -> [IMAPResponseFraming] {
    assertFraming(responses.map { [UInt8]($0) }, file: file, line: line)
}

/// Checks that the framing is lost exactly when byte `offset` is consumed, however the input is
/// chunked, and that nothing brings it back.
private func assertLost(_ bytes: [UInt8], at offset: Int, file: StaticString = #filePath, line: UInt = #line) {
    let states = statesByteByByte(bytes)
    XCTAssertEqual(states.firstIndex { $0.lostFraming }, offset + 1, "lost after", file: file, line: line)
    for state in states[(offset + 1)...] {
        XCTAssertTrue(state.lostFraming, file: file, line: line)
        XCTAssertFalse(state.isAtResponseBoundary, file: file, line: line)
        XCTAssertEqual(state.literalRemaining, 0, file: file, line: line)
    }
    var lost = IMAPResponseFraming()
    lost.consume([0])
    XCTAssertEqual(states[bytes.count], lost, "every lost state is the same", file: file, line: line)
    for split in 0...bytes.count {
        var framing = IMAPResponseFraming()
        framing.consume(bytes[..<split])
        framing.consume(bytes[split...])
        XCTAssertEqual(framing, lost, "split at \(split)", file: file, line: line)
    }
    var framing = states[bytes.count]
    framing.consume([UInt8]("* 1 EXISTS\r\na1 OK done\r\n"))
    framing.skipLiteral(0)
    XCTAssertEqual(framing, lost, "valid responses after garbage", file: file, line: line)
    XCTAssertFalse(framing.isAtResponseBoundary, file: file, line: line)
}


final class IMAPResponseFramingTests: XCTestCase {
    func testNothingConsumedIsABoundary() {
        var framing = IMAPResponseFraming()
        XCTAssertTrue(framing.isAtResponseBoundary)
        XCTAssertFalse(framing.lostFraming)
        XCTAssertEqual(framing.literalRemaining, 0)
        framing.consume([UInt8]())
        XCTAssertEqual(framing, IMAPResponseFraming())
        framing.consume([UInt8]("*"))
        XCTAssertFalse(framing.isAtResponseBoundary)
    }

    func testDovecotSelectAndIdle() {
        assertFraming(["* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
                       "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
                       "* 3 EXISTS\r\n",
                       "* 0 RECENT\r\n",
                       "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
                       "a1 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
                       "+ idling\r\n",
                       "* 4 EXISTS\r\n",
                       "* 1 FETCH (FLAGS (\\Seen))\r\n",
                       "a2 OK Idle completed (0.001 + 12.000 + 12.000 secs).\r\n"])
    }

    func testLiteralContainingCRLFAndAFakeAnnouncementIsSkipped() {
        let header = "* 1 FETCH (UID 5 BODY[] {12}\r\n"
        let states = assertFraming([header + "hello\r\n{3}\r\n)\r\n", "a3 OK Fetch completed.\r\n"])
        let start = header.utf8.count
        XCTAssertEqual(states[start - 1].literalRemaining, 0, "announced only by the line end")
        XCTAssertEqual(states[start ..< start + 12].map(\.literalRemaining), Array((1...12).reversed()))
        XCTAssertEqual(states[start + 12].literalRemaining, 0)
        XCTAssertFalse(states[start + 12].isAtResponseBoundary, "the response goes on after its literal")
    }

    func testTwoLiteralsInOneResponse() {
        let first = "* 2 FETCH (UID 6 BODY[HEADER] {8}\r\n"
        let second = "A: b\r\n\r\n BODY[TEXT] {4}\r\n"
        let states = assertFraming([first + second + "hi\r\n)\r\n", "* 3 FETCH (BODY[1] {3}\r\nabc BODY[2] {2}\r\nde)\r\n"])
        XCTAssertEqual(states[first.utf8.count].literalRemaining, 8)
        XCTAssertEqual(states[first.utf8.count + second.utf8.count].literalRemaining, 4)
    }

    func testALiteralsPayloadCannotAnnounceAnother() {
        // A mailbox name sent as a literal that ends in `{1}`: the line end after it is a boundary.
        assertFraming(["* LIST () \"/\" {5}\r\nab{1}\r\n", "* LIST () \"/\" {4}\r\n{1}\n\r\n", "a OK List completed.\r\n"])
    }

    func testZeroLengthLiterals() {
        let header = "* 3 FETCH (UID 7 BODY[1] {0}\r\n"
        let states = assertFraming([header + " FLAGS (\\Seen))\r\n", "* LIST () \"/\" {0}\r\n\r\n"])
        XCTAssertEqual(states[header.utf8.count].literalRemaining, 0)
        XCTAssertFalse(states[header.utf8.count].isAtResponseBoundary)
    }

    func testBinaryLiteralMayHoldNUL() {
        let header = "* 4 FETCH (UID 8 BINARY[1] ~{4}\r\n"
        let states = assertFraming([header + "\0\u{1}\r\n)\r\n", "a4 OK Fetch completed.\r\n"])
        XCTAssertEqual(states[header.utf8.count].literalRemaining, 4)
    }

    func testNonSynchronizingLiteralAndBareLF() {
        let states = assertFraming(["* 5 FETCH (BODY[] {5+}\r\nabcde)\r\n", "* 6 EXISTS\n",
                                    "* 7 FETCH (BODY[] {2}\nab)\n", "a5 OK done\n"])
        XCTAssertEqual(states["* 5 FETCH (BODY[] {5+}\r\n".utf8.count].literalRemaining, 5)
    }

    func testEightBitTextWithinALineIsFine() {
        assertFraming(["* LIST (\\HasNoChildren) \"/\" \"Entwürfe\"\r\n", "* OK Grüße\r\n"])
    }

    func testTextThatOnlyLooksLikeAnAnnouncementIsText() {
        assertFraming(["* OK [ALERT] {5} is not at the end\r\n", "* OK {5}x\r\n", "* OK {abc}\r\n", "* OK {}\r\n",
                       "* OK {+}\r\n", "* OK {5++}\r\n", "* OK {5+6}\r\n", "* OK {5} \r\n", "* OK {5}\rx\r\n",
                       "* OK {5}\r\r\n", "* OK 5}\r\n", "* OK {5}}\r\n", "* OK {1234567890123456789012345}x\r\n",
                       "* OK {1234567890123456789012345 \r\n", "* OK {9223372036854775808\r\n"])
        // A second brace starts over, so the announcement at the end still counts.
        let states = assertFraming(["* 1 FETCH (BODY[] {x{3}\r\nabc)\r\n", "* 2 FETCH (BODY[] {12{3}\r\nabc)\r\n"])
        XCTAssertEqual(states["* 1 FETCH (BODY[] {x{3}\r\n".utf8.count].literalRemaining, 3)
    }

    func testTagsMayUseAnyAStringCharExceptPlus() {
        assertFraming(["a.1 OK done\r\n", "A-7 OK done\r\n", "1 OK done\r\n", "]x OK done\r\n", "}x OK done\r\n",
                       "~1 OK done\r\n", "$#!&'<>=?@^_`|:;,./ OK done\r\n"])
        for first in Array("(){%\"\\ \t\r\n".utf8) + [0, 0x7F, 0x80, 0xC3, 0xFF] {
            assertLost([first] + [UInt8](" OK done\r\n"), at: 0)
        }
    }

    func testSkipLiteralPassesAMegabyteUnseen() {
        let size = 1 << 20
        var framing = IMAPResponseFraming()
        framing.consume([UInt8]("* 1 FETCH (UID 9 BODY[] {\(size)}\r\n"))
        XCTAssertEqual(framing.literalRemaining, size)
        let chunks = [1, 7, 4096, 65536, 3, 131_072, 500, 16384]
        var left = size
        var step = 0
        while left > 0 {
            XCTAssertFalse(framing.isAtResponseBoundary, "mid-literal, \(left) to go")
            let count = min(chunks[step % chunks.count], left)
            step += 1
            framing.skipLiteral(count)
            left -= count
            XCTAssertEqual(framing.literalRemaining, left)
        }
        XCTAssertFalse(framing.isAtResponseBoundary, "the response goes on after its literal")
        framing.consume([UInt8](")\r"))
        XCTAssertFalse(framing.isAtResponseBoundary)
        framing.consume([UInt8]("\n"))
        XCTAssertTrue(framing.isAtResponseBoundary)
        XCTAssertFalse(framing.lostFraming)
    }

    func testConsumeAndSkipLiteralInterleave() {
        // The relay splices part of a literal, then reads a chunk holding its tail and more.
        var random = SeededRandom(state: 7)
        var payload = random.bytes(1000)
        payload[0] = 0
        var framing = IMAPResponseFraming()
        framing.consume([UInt8]("* 1 FETCH (BODY[] {1000}\r\n"))
        framing.skipLiteral(300)
        framing.consume(payload[300..<700])
        XCTAssertEqual(framing.literalRemaining, 300)
        framing.skipLiteral(299)
        framing.consume(payload[999...] + [UInt8](")\r\n* 2 EXISTS\r\na OK"))
        XCTAssertFalse(framing.isAtResponseBoundary)
        framing.consume([UInt8](" done\r\n"))
        XCTAssertTrue(framing.isAtResponseBoundary)

        // Or consumes it all, as over TLS, where there is no splicing.
        var whole = IMAPResponseFraming()
        whole.consume([UInt8]("* 1 FETCH (BODY[] {1000}\r\n") + payload + [UInt8](")\r\n* 2 EXISTS\r\na OK done\r\n"))
        XCTAssertEqual(whole, framing)
    }

    func testSkippingWhatIsNotALiteralLosesTheFraming() {
        var idle = IMAPResponseFraming()
        idle.skipLiteral(0)
        XCTAssertEqual(idle, IMAPResponseFraming())
        idle.skipLiteral(1)
        XCTAssertTrue(idle.lostFraming)
        XCTAssertFalse(idle.isAtResponseBoundary)

        var inLiteral = IMAPResponseFraming()
        inLiteral.consume([UInt8]("* 1 FETCH (BODY[] {5}\r\n"))
        var tooFar = inLiteral
        tooFar.skipLiteral(6)
        XCTAssertTrue(tooFar.lostFraming)
        XCTAssertEqual(tooFar.literalRemaining, 0)
        var negative = inLiteral
        negative.skipLiteral(-1)
        XCTAssertTrue(negative.lostFraming)
        inLiteral.skipLiteral(5)
        XCTAssertFalse(inLiteral.lostFraming)
    }

    func testNULOutsideALiteralLosesTheFraming() {
        assertLost([UInt8]("* OK he\0llo\r\n"), at: 7)
        assertLost([UInt8]("* 1 FETCH (BODY[] {2}\r\n\0\0 \0)\r\n"), at: 26)
        assertLost([UInt8]("* OK {12\0}\r\n"), at: 8)
    }

    func testBadFirstBytesOfALineLoseTheFraming() {
        assertLost([UInt8]("* 1 EXISTS\r\n") + [0xC3, 0xA9] + [UInt8](" OK\r\n"), at: 12)
        assertLost([UInt8]("* 1 EXISTS\r\n OK\r\n"), at: 12)
        assertLost([UInt8]("* 1 EXISTS\r\n\r\n"), at: 12)
        // A TLS record where plaintext was expected.
        assertLost([0x16, 0x03, 0x03, 0x00, 0x2A, 0x02], at: 0)
        // A literal one byte shorter than announced: its last byte ends the line early.
        assertLost([UInt8]("* 1 FETCH (UID 5 BODY[] {11}\r\nhello\r\n{3}\r\n)\r\n"), at: 42)
    }

    func testDeflateAfterCompressLosesTheFraming() {
        // zlib raw deflate (as COMPRESS=DEFLATE sends) of "* 2 EXISTS\r\n* 1 RECENT\r\na3 OK Noop
        // completed.\r\n", sync-flushed.
        let deflated: [UInt8] = [0xd2, 0x52, 0x30, 0x52, 0x70, 0x8d, 0xf0, 0x0c, 0x0e, 0x09, 0xe6, 0xe5, 0xd2, 0x52,
                                 0x30, 0x54, 0x08, 0x72, 0x75, 0x76, 0xf5, 0x0b, 0xe1, 0xe5, 0x4a, 0x34, 0x56, 0xf0,
                                 0xf7, 0x56, 0xf0, 0xcb, 0xcf, 0x2f, 0x50, 0x48, 0xce, 0xcf, 0x2d, 0xc8, 0x49, 0x2d,
                                 0x49, 0x4d, 0xd1, 0xe3, 0xe5, 0x02, 0x00, 0x00, 0x00, 0xff, 0xff]
        let active = [UInt8]("a5 OK DEFLATE active\r\n")
        assertLost(active + deflated, at: active.count)

        // Whatever the compressed bytes happen to be, they give themselves away quickly: most
        // often at the first byte (two in three bytes cannot start a line), else at a NUL or at
        // the byte after an LF.
        var random = SeededRandom(state: 0x9E37_79B9_7F4A_7C15)
        var consumedUntilLost: [Int] = []
        for _ in 0..<200 {
            let states = statesByteByByte(active + random.bytes(2048))
            guard let lost = states.firstIndex(where: \.lostFraming) else { return XCTFail("random bytes passed as IMAP") }
            XCTAssertFalse(states[lost...].contains(where: \.isAtResponseBoundary))
            consumedUntilLost.append(lost - active.count)
        }
        consumedUntilLost.sort()
        XCTAssertEqual(consumedUntilLost[100], 1, "median")
        XCTAssertLessThan(consumedUntilLost[199], 1024, "worst")
    }

    func testLiteralCountsBeyondIntLoseTheFraming() {
        let twentyFive = "* 1 FETCH (BODY[] {1234567890123456789012345}\r\n"
        assertLost([UInt8](twentyFive + "x)\r\n"), at: twentyFive.utf8.count - 1)
        let overflow = "* 1 FETCH (BODY[] {9223372036854775808}\r\n"
        assertLost([UInt8](overflow + "x)\r\n"), at: overflow.utf8.count - 1)
        let twentyDigits = "* 1 FETCH (BODY[] {00000000000000000001+}\r\n"
        assertLost([UInt8](twentyDigits + "x)\r\n"), at: twentyDigits.utf8.count - 1)

        var largest = IMAPResponseFraming()
        largest.consume([UInt8]("* 1 FETCH (BODY[] {9223372036854775807}\r\n"))
        XCTAssertEqual(largest.literalRemaining, Int.max)
        var padded = IMAPResponseFraming()
        padded.consume([UInt8]("* 1 FETCH (BODY[] {0000000000000000001}\r\n"))
        XCTAssertEqual(padded.literalRemaining, 1)
    }

    func testRandomStreamsRandomlyChunkedAndSkipped() {
        var random = SeededRandom(state: 0x5EED_1234_ABCD_0001)
        let text = "abcXYZ 019{}+~()[]\\\"%*.\r\u{C3}\u{A9}"
        var literals = 0
        var skips = 0
        for iteration in 0..<300 {
            var responses: [[UInt8]] = []
            for _ in 0..<(1 + random.below(8)) {
                var response: [UInt8]
                switch random.below(3) {
                case 0: response = [UInt8]("* ")
                case 1: response = [UInt8]("+ ")
                default: response = (0...random.below(5)).map { _ in random.pick("aZ09.-_]$") } + [UInt8](" ")
                }
                for _ in 0..<random.below(4) {
                    response += (0..<random.below(12)).map { _ in random.pick(text) }
                    let size = random.below(4) == 0 ? random.below(600) : random.below(20)
                    response += [UInt8](["{\(size)}", "{\(size)+}", "~{\(size)}"][random.below(3)])
                    response += [UInt8](random.below(2) == 0 ? "\r\n" : "\n")
                    response += random.bytes(size)
                    literals += 1
                }
                // Ends in a plain byte, so the text never announces a literal by chance.
                response += (0..<random.below(12)).map { _ in random.pick(text) } + [UInt8](")")
                response += [UInt8](random.below(2) == 0 ? "\r\n" : "\n")
                responses.append(response)
            }
            let bytes = responses.flatMap { $0 }
            let states = statesByteByByte(bytes)
            let ends = responseEnds(responses)
            XCTAssertEqual(states.indices.filter { states[$0].isAtResponseBoundary }, ends, "stream \(iteration)")

            var framing = IMAPResponseFraming()
            var offset = 0
            while offset < bytes.count {
                if framing.literalRemaining > 0, random.below(2) == 0 {
                    let count = random.below(framing.literalRemaining + 1)
                    framing.skipLiteral(count)
                    offset += count
                    skips += 1
                } else {
                    let count = min(random.below(40), bytes.count - offset)
                    framing.consume(bytes[offset..<(offset + count)])
                    offset += count
                }
                guard framing == states[offset] else {
                    return XCTFail("stream \(iteration) differs at \(offset): \(framing) vs \(states[offset])")
                }
            }
            XCTAssertTrue(framing.isAtResponseBoundary, "stream \(iteration)")
        }
        XCTAssertGreaterThan(literals, 500)
        XCTAssertGreaterThan(skips, 500)
    }
}
