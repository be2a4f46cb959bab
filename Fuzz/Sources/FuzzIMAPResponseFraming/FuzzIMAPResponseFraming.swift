// IMAPResponseFraming, fed a store's response stream.
//
// Input: bytes 0-1 = seed of the chunk sizes and of when and how far to skip literal bytes, the
// rest = the store's stream.
//
// Run A feeds the stream in chunks, calling skipLiteral (by an amount from the seed) instead of
// consume whenever literalRemaining > 0 and the seed says so; run B consumes it whole.
// Invariants (fatalError): A and B end in equal states; both agree with a plain reference
// reading of the stream (line starts, NULs, `{n}`/`{n+}` at line ends, counts that do not fit);
// a boundary is never inside a literal or lost; skipLiteral(0) changes nothing, and skipping
// more than literalRemaining, or a negative count, loses the framing for good.
import FuzzSupport
import MailProtocol

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let fuzzInput = FuzzInput(start, count, headerCount: 0) else { return 0 }
    var choices = fuzzInput.choices
    let input = fuzzInput.body

    // A: chunks, with literal bytes skipped unseen now and then.
    var chunked = IMAPResponseFraming()
    var offset = 0
    while offset < input.count {
        let remaining = chunked.literalRemaining
        if remaining > 0 && choices.below(2) == 0 {
            let skip = 1 + choices.below(min(remaining, input.count - offset))
            chunked.skipLiteral(skip)
            offset += skip
        } else {
            choices.chunk(of: input, from: &offset).withUnsafeBytes { chunked.consume($0) }
        }
        checkConsistent(chunked)
    }

    // B: all at once, through the generic entry point.
    var whole = IMAPResponseFraming()
    whole.consume(input[...])
    checkConsistent(whole)
    require(chunked == whole, "chunked and whole runs disagree: \(chunked) vs \(whole)")

    let expected = reference(input)
    switch expected {
    case .lineStart: require(whole.isAtResponseBoundary, "expected a response boundary")
    case .lost: require(whole.lostFraming, "expected the framing to be lost")
    case .literal(let count): require(whole.literalRemaining == count, "expected \(count) literal bytes, not \(whole.literalRemaining)")
    case .inLine: require(!whole.isAtResponseBoundary && !whole.lostFraming && whole.literalRemaining == 0, "expected mid-line")
    }

    // skipLiteral out of bounds.
    var zero = whole
    zero.skipLiteral(0)
    require(zero == whole, "skipLiteral(0) changed the state")
    if whole.literalRemaining < Int.max {
        var over = whole
        over.skipLiteral(whole.literalRemaining + 1)
        require(over.lostFraming, "skipping past the literal kept the framing")
        over.consume(Array("* OK x\r\n".utf8))
        require(over.lostFraming && !over.isAtResponseBoundary, "lost framing came back")
    }
    var negative = whole
    negative.skipLiteral(-1)
    require(negative.lostFraming, "a negative skip kept the framing")
    return 0
}

func checkConsistent(_ framing: IMAPResponseFraming) {
    if framing.isAtResponseBoundary {
        require(framing.literalRemaining == 0 && !framing.lostFraming, "boundary inside a literal or lost: \(framing)")
    }
    if framing.lostFraming { require(framing.literalRemaining == 0, "lost with literal bytes to come") }
    require(framing.literalRemaining >= 0, "negative literalRemaining")
}

// MARK: - Reference

enum Phase: Equatable {
    case lineStart
    case inLine
    case literal(Int)
    case lost
}

/// Where a response stream stands, read the plain way: a response line starts with `*`, `+` or a
/// tag's first byte; a NUL outside a literal loses the framing; a line (the text since its start
/// or since its last literal) ending in `{n}` or `{n+}` (CR optional) announces n literal bytes;
/// `{0}` announces none; a count of more than 19 digits or beyond Int.max loses the framing.
func reference(_ stream: [UInt8]) -> Phase {
    var phase = Phase.lineStart
    var index = 0
    var segmentStart = 0
    while index < stream.count {
        switch phase {
        case .lost:
            return .lost
        case .literal(let count):
            let skipped = min(count, stream.count - index)
            index += skipped
            phase = skipped == count ? .inLine : .literal(count - skipped)
            segmentStart = index
        case .lineStart:
            let byte = stream[index]
            guard (0x21...0x7E).contains(byte), !Array("(){%\"\\".utf8).contains(byte) else { return .lost }
            phase = .inLine
            segmentStart = index
        case .inLine:
            guard let end = stream[index...].firstIndex(where: { $0 == 10 || $0 == 0 }) else {
                index = stream.count
                continue
            }
            if stream[end] == 0 { return .lost }
            phase = afterLine(stream[segmentStart..<end])
            index = end + 1
            segmentStart = index
        }
    }
    return phase
}

func afterLine(_ line: ArraySlice<UInt8>) -> Phase {
    var text = line
    if text.last == 13 { text = text.dropLast() }
    guard text.last == UInt8(ascii: "}") else { return .lineStart }
    text = text.dropLast()
    if text.last == UInt8(ascii: "+") { text = text.dropLast() }
    var digits = 0
    while let last = text.last, last >= UInt8(ascii: "0"), last <= UInt8(ascii: "9") {
        digits += 1
        text = text.dropLast()
    }
    guard digits > 0, text.last == UInt8(ascii: "{") else { return .lineStart }
    guard digits <= 19 else { return .lost }
    var value = 0
    for byte in line[(text.endIndex)..<(text.endIndex + digits)] {
        let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
        let (sum, carry) = shifted.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
        if overflow || carry { return .lost }
        value = sum
    }
    return value == 0 ? .inLine : .literal(value)
}
