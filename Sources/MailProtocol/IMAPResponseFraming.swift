/// Where a relayed store→client IMAP stream stands between responses (RFC 9051 §2.2.2, §4.3).
///
/// After login the proxy relays the store's bytes without parsing them. To end a session
/// politely (an untagged `* BYE [UNAVAILABLE]` when the user is moved) it may only inject
/// the BYE where the client's parser expects a new response: right after a line end, outside
/// any literal. Anywhere else the BYE would corrupt the response it lands in. This tracks just
/// enough framing to know that: line ends, and the `{N}` announcements that make the next N
/// bytes opaque. Literal payloads are never looked at, so the relay may splice them through a
/// pipe and report them with `skipLiteral`.
///
/// The state is a few words and `consume` neither buffers nor allocates: it sees every relayed
/// chunk. A stream that stops looking like IMAP responses (COMPRESS=DEFLATE, garbage) loses
/// the framing for good, and the caller has to fall back to simply closing.
public struct IMAPResponseFraming: Sendable, Equatable {
    private enum Phase: Sendable, Equatable {
        case lineStart
        case inLine
        /// This many payload bytes to come; then the same response goes on mid-line.
        case literal(Int)
        case lost
    }

    /// How much of a literal announcement (`{`, digits, LITERAL+'s `+`, `}`, optional CR) the
    /// line currently ends with. Only the value is kept: the line itself is never buffered.
    private enum Marker: Sendable, Equatable {
        case none
        case open
        case digits(Int, length: Int)
        case plus(Int)
        case close(Int)
        case closeCR(Int)
    }

    /// A count we cannot represent. Text such as `{123456789012345678901}x` stays harmless
    /// text; only a line that really announces such a literal loses the framing.
    private static let tooBig = -1
    private static let maxDigits = 19

    private var phase = Phase.lineStart
    private var marker = Marker.none

    public init() {}

    /// Literal bytes still to come: that many next bytes may pass without being shown to `consume`.
    public var literalRemaining: Int {
        if case .literal(let remaining) = phase { return remaining }
        return 0
    }

    /// Everything consumed so far ends exactly at the end of a complete response line, outside
    /// any literal.
    public var isAtResponseBoundary: Bool { phase == .lineStart }

    /// The stream stopped looking like IMAP responses: from then on it is never at a boundary.
    public var lostFraming: Bool { phase == .lost }

    /// Feed the next bytes of the stream, in order. Literal bytes among them are skipped unread.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        // Locals, so the loop keeps the state in registers rather than writing through `self`.
        var phase = self.phase
        var marker = self.marker
        var index = 0
        let end = bytes.count
        scan: while index < end {
            switch phase {
            case .lost:
                break scan
            case .literal(let remaining):
                let skipped = min(remaining, end - index)
                index += skipped
                phase = skipped == remaining ? .inLine : .literal(remaining - skipped)
            case .lineStart:
                // The first byte is checked here and scanned again as line text below.
                phase = Self.canStartLine(bytes[index]) ? .inLine : .lost
            case .inLine:
                line: while index < end {
                    if marker == .none {
                        // Most of a line is plain text, and outside an announcement only an LF,
                        // a `{` or a NUL can change anything: this loop is what makes consume
                        // cost little more than reading the bytes.
                        while index < end {
                            let byte = bytes[index]
                            if byte == .lf || byte == UInt8(ascii: "{") || byte == 0 { break }
                            index += 1
                        }
                        guard index < end else { break line }
                    }
                    let byte = bytes[index]
                    index += 1
                    switch byte {
                    case .lf:
                        phase = Self.phaseAfterLine(marker)
                        marker = .none
                        break line
                    case .cr:
                        if case .close(let count) = marker { marker = .closeCR(count) } else { marker = .none }
                    case UInt8(ascii: "{"):
                        marker = .open
                    case UInt8(ascii: "0")...UInt8(ascii: "9"):
                        marker = Self.digit(byte, after: marker)
                    case UInt8(ascii: "+"):
                        if case .digits(let count, _) = marker { marker = .plus(count) } else { marker = .none }
                    case UInt8(ascii: "}"):
                        switch marker {
                        case .digits(let count, _), .plus(let count): marker = .close(count)
                        default: marker = .none
                        }
                    case 0:
                        // CHAR8 excludes NUL outside literals; deflate or TLS records are full of them.
                        phase = .lost
                        break scan
                    default:
                        marker = .none
                    }
                }
            }
        }
        self.phase = phase
        // A lost stream has no line to speak of; dropping the marker keeps lost states equal.
        self.marker = phase == .lost ? .none : marker
    }

    /// For tests and small inputs; contiguous collections take the fast path without copying.
    public mutating func consume<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { consume(UnsafeRawBufferPointer($0)) }
        if done == nil { Array(bytes).withUnsafeBytes { consume($0) } }
    }

    /// Passes `count` (<= `literalRemaining`) literal bytes unseen.
    public mutating func skipLiteral(_ count: Int) {
        guard count != 0 else { return }
        guard case .literal(let remaining) = phase, count > 0, count <= remaining else {
            // Bytes went by that were neither seen nor known to be opaque: where the stream
            // stands is unknown, and guessing could put a BYE inside a response.
            phase = .lost
            marker = .none
            return
        }
        phase = count == remaining ? .inLine : .literal(remaining - count)
    }

    // MARK: - Steps

    /// `*` (untagged), `+` (continuation) or a tag: `1*<any ASTRING-CHAR except "+">`. That
    /// admits `]` (resp-specials are ASTRING-CHARs; Dovecot accepts such tags from clients).
    private static func canStartLine(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "{"), UInt8(ascii: "%"),
             UInt8(ascii: "\""), UInt8(ascii: "\\"):
            return false
        case 0x21...0x7E:
            return true
        default:
            // SP, controls (an empty line too), DEL and 8-bit bytes: no response starts so.
            return false
        }
    }

    private static func phaseAfterLine(_ marker: Marker) -> Phase {
        switch marker {
        case .close(let count), .closeCR(let count):
            if count == tooBig { return .lost }
            // `{0}` announces nothing to skip: the response simply goes on.
            return count == 0 ? .inLine : .literal(count)
        case .none, .open, .digits, .plus:
            return .lineStart
        }
    }

    private static func digit(_ byte: UInt8, after marker: Marker) -> Marker {
        let digit = Int(byte &- UInt8(ascii: "0"))
        switch marker {
        case .open:
            return .digits(digit, length: 1)
        case .digits(let count, let length):
            guard count != tooBig, length < maxDigits else { return .digits(tooBig, length: length) }
            let (shifted, overflow) = count.multipliedReportingOverflow(by: 10)
            let (sum, carry) = shifted.addingReportingOverflow(digit)
            return .digits(overflow || carry ? tooBig : sum, length: length + 1)
        case .none, .plus, .close, .closeCR:
            return .none
        }
    }
}
