// IP addresses as the PROXY protocol carries them and as trust lists and per-address limits
// compare them. Text is parsed strictly (RFC 4291 §2.2 for IPv6, plain dotted quads for IPv4)
// because an address that two parsers read differently is how an allow-list is bypassed.

/// An IPv4 or IPv6 address. Kept in integers, not an array, so that one per connection costs
/// no allocation and hashing and comparing are a couple of word operations.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    enum Storage: Sendable, Hashable {
        case v4(UInt32)
        case v6(UInt64, UInt64)
    }

    let storage: Storage

    /// The address in network byte order as one integer: 1.2.3.4 is 0x01020304.
    public init(ipv4 value: UInt32) { storage = .v4(value) }

    /// The address in network byte order as two integers: the first 8 bytes, then the last 8.
    public init(ipv6High high: UInt64, low: UInt64) { storage = .v6(high, low) }

    /// Dotted-quad IPv4 or RFC 4291 IPv6 text. nil for anything else, including leading zeros
    /// in IPv4 parts (which some libraries read as octal), zone ids and brackets.
    public init?(_ text: some StringProtocol) {
        self.init(ascii: text.utf8)
    }

    init?<C: Collection>(ascii text: C) where C.Element == UInt8 {
        if text.contains(UInt8(ascii: ":")) {
            guard let (high, low) = IPAddress.parseIPv6(text) else { return nil }
            storage = .v6(high, low)
        } else {
            guard let value = IPAddress.parseIPv4(text) else { return nil }
            storage = .v4(value)
        }
    }

    /// 4 bytes for IPv4, 16 for IPv6, in network byte order (as sockets and the PROXY protocol
    /// carry them).
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4:
            storage = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            let high = bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = bytes.dropFirst(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            storage = .v6(high, low)
        default:
            return nil
        }
    }

    public var bytes: [UInt8] {
        switch storage {
        case .v4(let value):
            return (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32($0))) }
        case .v6(let high, let low):
            return (0..<16).map { UInt8(truncatingIfNeeded: ($0 < 8 ? high : low) >> (56 - 8 * UInt64($0 % 8))) }
        }
    }

    public var isIPv4: Bool {
        if case .v4 = storage { return true }
        return false
    }

    public var ipv4Value: UInt32? {
        if case .v4(let value) = storage { return value }
        return nil
    }

    public var ipv6Value: (high: UInt64, low: UInt64)? {
        if case .v6(let high, let low) = storage { return (high, low) }
        return nil
    }

    /// The IPv4 address behind `::ffff:a.b.c.d`, which is how a dual-stack socket reports an
    /// IPv4 peer: limits and trust lists must treat the two forms as the same client.
    public var unmappedIPv4: IPAddress? {
        guard case .v6(let high, let low) = storage, high == 0, low >> 32 == 0xFFFF else { return nil }
        return IPAddress(ipv4: UInt32(truncatingIfNeeded: low))
    }

    /// `::ffff:a.b.c.d` for an IPv4 address (for carrying it where only one family fits);
    /// an IPv6 address unchanged.
    public var mappedToIPv6: IPAddress {
        guard case .v4(let value) = storage else { return self }
        return IPAddress(ipv6High: 0, low: 0xFFFF_0000_0000 | UInt64(value))
    }

    /// RFC 5952's canonical text for IPv6, so that logs and configuration compare as strings.
    public var description: String {
        switch storage {
        case .v4(let value):
            return IPAddress.dottedQuad(value)
        case .v6(let high, let low):
            if high == 0, low >> 32 == 0xFFFF {
                return "::ffff:" + IPAddress.dottedQuad(UInt32(truncatingIfNeeded: low))
            }
            let groups = (0..<8).map { UInt16(truncatingIfNeeded: ($0 < 4 ? high : low) >> (48 - 16 * UInt64($0 % 4))) }
            // The longest run of two or more zero groups, the first one on a tie.
            var best = (start: 0, count: 0)
            var index = 0
            while index < 8 {
                guard groups[index] == 0 else { index += 1; continue }
                var end = index
                while end < 8, groups[end] == 0 { end += 1 }
                if end - index > best.count { best = (index, end - index) }
                index = end
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            guard best.count >= 2 else { return hex(0..<8) }
            return hex(0..<best.start) + "::" + hex((best.start + best.count)..<8)
        }
    }

    static func dottedQuad(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }

    /// Exactly four decimal parts 0–255, no leading zeros, no sign or spaces.
    static func parseIPv4<C: Collection>(_ text: C) -> UInt32? where C.Element == UInt8 {
        var value: UInt32 = 0
        var part: UInt32 = 0
        var digits = 0
        var parts = 0
        for byte in text {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if digits == 1 && part == 0 { return nil }
                part = part * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                guard part <= 255 else { return nil }
            case UInt8(ascii: "."):
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | part
                parts += 1
                part = 0
                digits = 0
            default:
                return nil
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        return value << 8 | part
    }

    /// RFC 4291 §2.2: groups of 1–4 hex digits, at most one `::` standing for one or more zero
    /// groups, and a dotted quad allowed as the last 32 bits.
    static func parseIPv6<C: Collection>(_ text: C) -> (UInt64, UInt64)? where C.Element == UInt8 {
        let colon = UInt8(ascii: ":")
        // Groups before `::` and after it, each shifted in from the right.
        var head = (high: UInt64(0), low: UInt64(0), count: 0)
        var tail = (high: UInt64(0), low: UInt64(0), count: 0)
        var compressed = false
        func push(_ group: UInt16) -> Bool {
            guard head.count + tail.count < 8 else { return false }
            if compressed {
                tail = (tail.high << 16 | tail.low >> 48, tail.low << 16 | UInt64(group), tail.count + 1)
            } else {
                head = (head.high << 16 | head.low >> 48, head.low << 16 | UInt64(group), head.count + 1)
            }
            return true
        }

        var index = text.startIndex
        let end = text.endIndex
        if index != end, text[index] == colon {
            index = text.index(after: index)
            guard index != end, text[index] == colon else { return nil }
            index = text.index(after: index)
            compressed = true
        }
        while index != end {
            var componentEnd = index
            var dotted = false
            while componentEnd != end, text[componentEnd] != colon {
                if text[componentEnd] == UInt8(ascii: ".") { dotted = true }
                componentEnd = text.index(after: componentEnd)
            }
            let component = text[index..<componentEnd]
            if dotted {
                guard componentEnd == end, let value = parseIPv4(component),
                      push(UInt16(truncatingIfNeeded: value >> 16)), push(UInt16(truncatingIfNeeded: value))
                else { return nil }
            } else {
                var group: UInt16 = 0
                var digits = 0
                for byte in component {
                    guard digits < 4, let digit = hexDigit(byte) else { return nil }
                    group = group << 4 | UInt16(digit)
                    digits += 1
                }
                guard digits > 0, push(group) else { return nil }
            }
            guard componentEnd != end else { break }
            index = text.index(after: componentEnd)
            if index != end, text[index] == colon {
                guard !compressed else { return nil }
                compressed = true
                index = text.index(after: index)
            } else if index == end {
                return nil    // a trailing single colon
            }
        }
        let groups = head.count + tail.count
        guard compressed ? groups <= 7 : groups == 8 else { return nil }
        for _ in head.count..<8 {
            head = (head.high << 16 | head.low >> 48, head.low << 16, head.count)
        }
        return (head.high | tail.high, head.low | tail.low)
    }

    static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
