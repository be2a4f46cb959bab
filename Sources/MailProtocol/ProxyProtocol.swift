// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): how a load balancer in
// front of us tells us the client's real address, and how we tell a backend the client's.
//
// Sans-I/O and stateless: the caller keeps what it has read and parses it again when more
// arrives. A header is at most 107 bytes (v1) or 16 + 4096 (v2, our limit), so re-parsing costs
// little, and every way the bytes can be split behaves the same by construction.

/// What a PROXY protocol header said.
public struct ProxyHeader: Sendable, Equatable {
    public enum Command: Sendable, Equatable {
        /// The proxy's own connection (a health check): the real endpoints apply.
        case local
        /// A relayed connection.
        case proxy
    }

    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var address: IPAddress
        public var port: UInt16

        public init(address: IPAddress, port: UInt16) {
            self.address = address
            self.port = port
        }

        public var description: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
    }

    /// A v2 type-length-value extension, kept raw: none of them changes how a header is read.
    public struct TLV: Sendable, Equatable {
        public var type: UInt8
        public var value: [UInt8]

        public init(type: UInt8, value: [UInt8]) {
            self.type = type
            self.value = value
        }

        // The types the specification assigns (section 2.2).
        public static let alpn: UInt8 = 0x01
        public static let authority: UInt8 = 0x02
        public static let crc32c: UInt8 = 0x03
        public static let noop: UInt8 = 0x04
        public static let uniqueID: UInt8 = 0x05
        public static let ssl: UInt8 = 0x20
        public static let netns: UInt8 = 0x30
    }

    /// 1 or 2.
    public var version: Int
    /// Always `.proxy` in version 1, which has no LOCAL.
    public var command: Command
    /// nil when the header carries no TCP address (v1 UNKNOWN, v2 LOCAL, v2 UNIX, datagram or
    /// unspecified families): the specification says to use the real connection's then.
    public var source: Endpoint?
    public var destination: Endpoint?
    /// Version 2's extensions, in the order sent.
    public var tlvs: [TLV]

    public init(version: Int, command: Command, source: Endpoint?, destination: Endpoint?, tlvs: [TLV] = []) {
        self.version = version
        self.command = command
        self.source = source
        self.destination = destination
        self.tlvs = tlvs
    }
}

public enum ProxyHeaderParse: Sendable, Equatable {
    /// The bytes so far are a proper prefix of a header that may still be valid.
    case needMore
    /// `consumed` is exactly the header's length: what follows belongs to the mail protocol.
    case header(ProxyHeader, consumed: Int)
    /// Not a header, and no more bytes could make it one.
    case invalid(String)
}

public enum ProxyProtocol {
    /// Version 2's first 12 bytes, chosen to be invalid in every common text protocol.
    public static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// The specification's bound for a v1 line with its CRLF (the longest TCP6 line), so a
    /// receiver never waits for more.
    public static let maxV1Length = 107

    /// The largest v2 length field we accept. The field allows 65535, but real proxies send an
    /// address block (at most 216 bytes) and a few TLVs (ALPN, SNI, TLS details): refusing larger
    /// headers keeps an unauthenticated peer from making us buffer 64 KiB per connection.
    public static let maxV2PayloadLength = 4096

    private static let v1Prefix: [UInt8] = Array("PROXY ".utf8)
    private static let v2HeaderLength = 16

    /// Reads a header from the start of `bytes`, or says that more are needed or that these
    /// cannot start one. Fails at the first byte that rules a header out, so a client that
    /// speaks IMAP or POP3 straight away is refused at once rather than after a timeout.
    public static func parse<C: Collection>(_ bytes: C) -> ProxyHeaderParse where C.Element == UInt8 {
        if let result = bytes.withContiguousStorageIfAvailable({ parse(buffer: $0) }) { return result }
        // Nothing past the largest header is ever looked at.
        return Array(bytes.prefix(v2HeaderLength + maxV2PayloadLength)).withUnsafeBufferPointer { parse(buffer: $0) }
    }

    private static func parse(buffer: UnsafeBufferPointer<UInt8>) -> ProxyHeaderParse {
        switch buffer.first {
        case nil: return .needMore
        case v1Prefix[0]: return parseV1(buffer)
        case v2Signature[0]: return parseV2(buffer)
        default: return .invalid("not a PROXY protocol header")
        }
    }

    // MARK: Version 1

    private enum V1Kind { case tcp4, tcp6, unknown }

    private static let v1Words: [(word: [UInt8], kind: V1Kind)] = [
        (Array("TCP4 ".utf8), .tcp4), (Array("TCP6 ".utf8), .tcp6), (Array("UNKNOWN".utf8), .unknown),
    ]

    private static func parseV1(_ bytes: UnsafeBufferPointer<UInt8>) -> ProxyHeaderParse {
        for (byte, expected) in zip(bytes, v1Prefix) where byte != expected {
            return .invalid("not a PROXY protocol header")
        }
        guard bytes.count > v1Prefix.count else { return .needMore }

        // The line ends at the first CR, which must leave room for its LF within the limit.
        let window = min(bytes.count, maxV1Length - 1)
        var cr: Int?
        for index in v1Prefix.count..<window {
            if bytes[index] == .lf { return .invalid("bare LF in a PROXY v1 header") }
            if bytes[index] == .cr { cr = index; break }
        }
        let content = bytes[v1Prefix.count..<(cr ?? window)]

        // What has arrived of the line must still fit one of the three forms.
        var kind: V1Kind?
        var known = false
        for (word, candidate) in v1Words where content.prefix(word.count).elementsEqual(word.prefix(content.count)) {
            known = true
            if content.count >= word.count { kind = candidate }
            break
        }
        guard known else { return .invalid("unknown PROXY v1 protocol") }
        switch kind {
        case .unknown:
            let after = content.dropFirst(7)
            guard after.first.map({ $0 == .space }) ?? true else { return .invalid("unknown PROXY v1 protocol") }
        case .tcp4, .tcp6:
            let allowed: (UInt8) -> Bool = kind == .tcp4
                ? { $0 == .space || $0 == UInt8(ascii: ".") || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }
                : { $0 == .space || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || IPAddress.hexDigit($0) != nil }
            guard content.dropFirst(5).allSatisfy(allowed) else { return .invalid("bad character in a PROXY v1 header") }
            guard !zip(content, content.dropFirst()).contains(where: { $0 == .space && $1 == .space }) else {
                return .invalid("more than one space between PROXY v1 fields")
            }
        case nil:
            break
        }

        guard let cr else {
            return bytes.count > window ? .invalid("no CRLF within 107 bytes of a PROXY v1 header") : .needMore
        }
        guard cr + 1 < bytes.count else { return .needMore }
        guard bytes[cr + 1] == .lf else { return .invalid("CR without LF in a PROXY v1 header") }
        let consumed = cr + 2

        switch kind {
        case .unknown:
            return .header(ProxyHeader(version: 1, command: .proxy, source: nil, destination: nil), consumed: consumed)
        case .tcp4, .tcp6:
            let fields = content.dropFirst(5).split(separator: .space, omittingEmptySubsequences: false)
            guard fields.count == 4 else { return .invalid("PROXY v1 header without exactly four fields") }
            let parse: (Slice<UnsafeBufferPointer<UInt8>>) -> IPAddress? = kind == .tcp4
                ? { IPAddress.parseIPv4($0).map(IPAddress.init(ipv4:)) }
                : { IPAddress.parseIPv6($0).map { IPAddress(ipv6High: $0.0, low: $0.1) } }
            guard let source = parse(fields[0]), let destination = parse(fields[1]) else {
                return .invalid("bad address in a PROXY v1 header")
            }
            guard let sourcePort = parsePort(fields[2]), let destinationPort = parsePort(fields[3]) else {
                return .invalid("bad port in a PROXY v1 header")
            }
            let header = ProxyHeader(version: 1, command: .proxy,
                                     source: .init(address: source, port: sourcePort),
                                     destination: .init(address: destination, port: destinationPort))
            return .header(header, consumed: consumed)
        case nil:
            return .invalid("unknown PROXY v1 protocol")
        }
    }

    /// Decimal 0–65535, no leading zeros.
    private static func parsePort<C: Collection>(_ text: C) -> UInt16? where C.Element == UInt8 {
        guard (1...5).contains(text.count), text.first != UInt8(ascii: "0") || text.count == 1 else { return nil }
        var value = 0
        for byte in text {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return UInt16(exactly: value)
    }

    // MARK: Version 2

    private static func parseV2(_ bytes: UnsafeBufferPointer<UInt8>) -> ProxyHeaderParse {
        for (byte, expected) in zip(bytes, v2Signature) where byte != expected {
            return .invalid("not a PROXY protocol header")
        }
        guard bytes.count > 12 else { return .needMore }
        guard bytes[12] >> 4 == 2 else { return .invalid("PROXY v2 header with version \(bytes[12] >> 4)") }
        let command: ProxyHeader.Command
        switch bytes[12] & 0x0F {
        case 0: command = .local
        case 1: command = .proxy
        default: return .invalid("PROXY v2 header with command \(bytes[12] & 0x0F)")
        }

        guard bytes.count > 13 else { return .needMore }
        // LOCAL ignores the family byte, as the specification says; PROXY must use a defined one.
        let family = bytes[13] >> 4
        let transport = bytes[13] & 0x0F
        var addressLength = 0
        if command == .proxy {
            switch family {
            case 0: addressLength = 0      // UNSPEC
            case 1: addressLength = 12     // INET: two addresses of 4 bytes, two ports
            case 2: addressLength = 36     // INET6
            case 3: addressLength = 216    // UNIX: two paths of 108 bytes
            default: return .invalid("PROXY v2 header with address family \(family)")
            }
            guard transport <= 2 else { return .invalid("PROXY v2 header with transport \(transport)") }
        }

        guard bytes.count >= v2HeaderLength else { return .needMore }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard length <= maxV2PayloadLength else { return .invalid("PROXY v2 header longer than \(maxV2PayloadLength) bytes") }
        guard length >= addressLength else { return .invalid("PROXY v2 address block too short for its family") }
        let total = v2HeaderLength + length
        guard bytes.count >= total else { return .needMore }

        guard command == .proxy else {
            return .header(ProxyHeader(version: 2, command: .local, source: nil, destination: nil), consumed: total)
        }

        var tlvs: [ProxyHeader.TLV] = []
        var offset = v2HeaderLength + addressLength
        while offset < total {
            guard total - offset >= 3 else { return .invalid("PROXY v2 TLV runs past the header") }
            let valueLength = Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            guard total - offset - 3 >= valueLength else { return .invalid("PROXY v2 TLV runs past the header") }
            tlvs.append(.init(type: bytes[offset], value: Array(bytes[(offset + 3)..<(offset + 3 + valueLength)])))
            offset += 3 + valueLength
        }

        var source: ProxyHeader.Endpoint?
        var destination: ProxyHeader.Endpoint?
        let stream: UInt8 = 1
        if transport == stream && (family == 1 || family == 2) {
            let size = family == 1 ? 4 : 16
            let base = v2HeaderLength
            func port(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
            // Cannot fail: the slices are 4 or 16 bytes.
            if let sourceAddress = IPAddress(bytes: bytes[base..<(base + size)]),
               let destinationAddress = IPAddress(bytes: bytes[(base + size)..<(base + 2 * size)]) {
                source = .init(address: sourceAddress, port: port(base + 2 * size))
                destination = .init(address: destinationAddress, port: port(base + 2 * size + 2))
            }
        }
        return .header(ProxyHeader(version: 2, command: .proxy, source: source, destination: destination, tlvs: tlvs),
                       consumed: total)
    }

    // MARK: Encoding

    /// A v2 PROXY header for a TCP connection, to tell a backend who the client is. One family
    /// must cover both ends, so if they differ the IPv4 one goes as `::ffff:a.b.c.d`.
    public static func encodeV2(source: IPAddress, sourcePort: UInt16,
                                destination: IPAddress, destinationPort: UInt16,
                                tlvs: [ProxyHeader.TLV] = []) -> [UInt8] {
        let mixed = source.isIPv4 != destination.isIPv4
        let (source, destination) = mixed ? (source.mappedToIPv6, destination.mappedToIPv6) : (source, destination)
        let inet = source.isIPv4
        var payload = source.bytes + destination.bytes
        payload += [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF)]
        for tlv in tlvs {
            precondition(tlv.value.count <= 0xFFFF, "PROXY v2 TLV longer than 65535 bytes")
            payload += [tlv.type, UInt8(tlv.value.count >> 8), UInt8(tlv.value.count & 0xFF)] + tlv.value
        }
        return v2Header(commandByte: 0x21, familyByte: inet ? 0x11 : 0x21, payload: payload)
    }

    /// A v2 LOCAL header: the connection is our own (a health check), not a client's.
    public static func encodeV2Local() -> [UInt8] {
        v2Header(commandByte: 0x20, familyByte: 0x00, payload: [])
    }

    /// A v1 line, for backends that only read version 1. Mixed families go as TCP6, as in v2.
    public static func encodeV1(source: IPAddress, sourcePort: UInt16,
                                destination: IPAddress, destinationPort: UInt16) -> [UInt8] {
        let mixed = source.isIPv4 != destination.isIPv4
        let (source, destination) = mixed ? (source.mappedToIPv6, destination.mappedToIPv6) : (source, destination)
        let family = source.isIPv4 ? "TCP4" : "TCP6"
        return Array("PROXY \(family) \(source) \(destination) \(sourcePort) \(destinationPort)\r\n".utf8)
    }

    /// The v1 line for a connection whose addresses we cannot or will not tell.
    public static func encodeV1Unknown() -> [UInt8] {
        Array("PROXY UNKNOWN\r\n".utf8)
    }

    private static func v2Header(commandByte: UInt8, familyByte: UInt8, payload: [UInt8]) -> [UInt8] {
        precondition(payload.count <= 0xFFFF, "PROXY v2 header longer than 65535 bytes")
        return v2Signature + [commandByte, familyByte, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] + payload
    }
}

/// Takes a PROXY header off a socket without taking a byte of what follows it (a TLS
/// ClientHello may arrive in the same segment): the driver peeks at what is waiting, offers
/// it here, and consumes exactly the count it is told. Everything before the end of an
/// incomplete header is header, so a header sent a byte at a time is consumed as it comes
/// and never leaves unread bytes behind to wake the driver again.
public struct ProxyHeaderReader: Sendable {
    public enum Step: Sendable, Equatable {
        /// Consume this many bytes (all header) and wait for more.
        case consume(Int)
        /// Consume this many bytes: they complete the header. The rest is the mail protocol's.
        case complete(ProxyHeader, consume: Int)
        case invalid(String)
    }

    private var received: [UInt8] = []

    public init() {}

    /// `available`: the bytes waiting in the socket, peeked, not consumed.
    public mutating func offer<C: Collection>(_ available: C) -> Step where C.Element == UInt8 {
        let known = received.count
        let combined = received + available
        switch ProxyProtocol.parse(combined) {
        case .needMore:
            received = combined
            return .consume(combined.count - known)
        case .header(let header, let consumed):
            received = []
            return .complete(header, consume: consumed - known)
        case .invalid(let reason):
            return .invalid(reason)
        }
    }
}
