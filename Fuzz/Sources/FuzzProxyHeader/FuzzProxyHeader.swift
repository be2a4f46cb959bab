// ProxyProtocol.parse (PROXY protocol v1 and v2 headers) and IPAddress's text form.
//
// Input: raw bytes, as a peer would send them (no seed bytes: the parser keeps no state, so
// checking every prefix covers every way the bytes could arrive); also read as address text.
//
// Invariants (fatalError): a header's `consumed` is in 1...count (at most 107 for v1, 16 + the
// length field for v2), the first `consumed` bytes alone give the same header, and every strict
// prefix of them needs more; a needMore's prefixes all need more; an invalid input stays invalid
// whatever follows; contiguous and non-contiguous collections agree; addresses come in pairs of
// one family, and re-encoding them (v2 with the same TLVs, and v1) parses back to the same
// endpoints; every address's description and bytes give the address back; text that parses as
// IPv4 is its own description, canonical IPv6 text is stable, and accepted text holds nothing but
// hex digits, colons and dots.
import FuzzSupport
import MailProtocol

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    let result = ProxyProtocol.parse(input)
    require(ProxyProtocol.parse(input.lazy.map { $0 }) == result, "a non-contiguous collection parses differently")

    switch result {
    case .header(let header, let consumed):
        require(consumed > 0 && consumed <= input.count, "consumed \(consumed) of \(input.count) bytes")
        require(ProxyProtocol.parse(input[..<consumed]) == result, "the header alone parses differently")
        for end in 0..<consumed {
            require(ProxyProtocol.parse(input[..<end]) == .needMore,
                    "prefix of \(end) of \(consumed) bytes: \(ProxyProtocol.parse(input[..<end]))")
        }
        checkHeader(header, consumed: consumed, input: input)
    case .needMore:
        require(input.count < 16 + ProxyProtocol.maxV2PayloadLength, "needMore after \(input.count) bytes")
        for end in 0..<input.count {
            require(ProxyProtocol.parse(input[..<end]) == .needMore, "a prefix of a needMore is \(ProxyProtocol.parse(input[..<end]))")
        }
    case .invalid(let reason):
        require(!reason.isEmpty, "invalid without a reason")
        for suffix: [UInt8] in [[0x0D, 0x0A], [0x00], Array(input.prefix(32))] {
            guard case .invalid = ProxyProtocol.parse(input + suffix) else {
                fatalError("invalid became \(ProxyProtocol.parse(input + suffix)) with \(suffix) appended")
            }
        }
    }

    checkText(input)
    if let address = IPAddress(bytes: input) {
        require(address.bytes == input, "bytes of IPAddress(bytes:) differ")
        checkAddress(address)
    }
    return 0
}

func checkHeader(_ header: ProxyHeader, consumed: Int, input: [UInt8]) {
    switch header.version {
    case 1:
        require(consumed <= ProxyProtocol.maxV1Length, "v1 header of \(consumed) bytes")
        require(header.command == .proxy && header.tlvs.isEmpty, "v1 header with LOCAL or TLVs")
        require(input[consumed - 2] == 0x0D && input[consumed - 1] == 0x0A, "v1 header not ending in CRLF")
    case 2:
        require(consumed >= 16 && consumed == 16 + (Int(input[14]) << 8 | Int(input[15])), "v2 consumed \(consumed)")
        require(Array(input.prefix(12)) == ProxyProtocol.v2Signature, "v2 header without the signature")
        if header.command == .local { require(header.source == nil && header.tlvs.isEmpty, "LOCAL with addresses or TLVs") }
    default:
        fatalError("version \(header.version)")
    }

    guard let source = header.source, let destination = header.destination else {
        require(header.source == nil && header.destination == nil, "one address without the other")
        return
    }
    require(source.address.isIPv4 == destination.address.isIPv4, "addresses of two families")
    checkAddress(source.address)
    checkAddress(destination.address)

    let v2 = ProxyProtocol.encodeV2(source: source.address, sourcePort: source.port,
                                    destination: destination.address, destinationPort: destination.port,
                                    tlvs: header.tlvs)
    guard case .header(let again, consumed: v2.count) = ProxyProtocol.parse(v2) else {
        fatalError("re-encoded v2 header does not parse: \(ProxyProtocol.parse(v2))")
    }
    require(again.source == source && again.destination == destination && again.tlvs == header.tlvs,
            "v2 round trip: \(header) became \(again)")

    let v1 = ProxyProtocol.encodeV1(source: source.address, sourcePort: source.port,
                                    destination: destination.address, destinationPort: destination.port)
    guard case .header(let line, consumed: v1.count) = ProxyProtocol.parse(v1) else {
        fatalError("re-encoded v1 header does not parse: \(ProxyProtocol.parse(v1))")
    }
    require(line.source == source && line.destination == destination, "v1 round trip: \(header) became \(line)")
    if header.version == 1 {
        require(line == header, "v1 round trip changed the header")
    }
}

func checkAddress(_ address: IPAddress) {
    let text = address.description
    require(IPAddress(text) == address, "\(text) does not parse back to the same address")
    require(IPAddress(bytes: address.bytes) == address, "bytes of \(text) do not give it back")
    require(address.bytes.count == (address.isIPv4 ? 4 : 16), "\(text) has \(address.bytes.count) bytes")
    if let unmapped = address.unmappedIPv4 {
        require(unmapped.isIPv4 && unmapped.mappedToIPv6 == address, "unmapping \(text)")
        require(text == "::ffff:\(unmapped)", "mapped \(text) not printed as ::ffff:\(unmapped)")
    }
    require(!text.contains(where: { $0.isUppercase }), "\(text) has upper case")
}

func checkText(_ input: [UInt8]) {
    guard input.count <= 64 else { return }
    let text = String(decoding: input, as: UTF8.self)
    guard let address = IPAddress(text) else { return }
    // Dotted quads have exactly one spelling; IPv6 text has one canonical one.
    if address.isIPv4 { require(address.description == text, "IPv4 \(text) printed as \(address)") }
    require(IPAddress(address.description)?.description == address.description, "\(address) is not stable")
    require(text.utf8.allSatisfy { "0123456789abcdefABCDEF:.".utf8.contains($0) },
            "\(text) has something besides hex digits, colons and dots")
    checkAddress(address)
}
