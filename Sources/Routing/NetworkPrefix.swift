import MailProtocol

/// A CIDR block (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128), for trust lists
/// such as the proxies allowed to send a PROXY protocol header.
///
/// IPv4 and its mapped IPv6 form (`::ffff:a.b.c.d`) are one client seen through two kinds of
/// socket, so `contains` matches either form against a prefix written in either form.
public struct NetworkPrefix: Sendable, Hashable, CustomStringConvertible {
    /// The first address of the block (host bits cleared).
    public let network: IPAddress
    public let length: Int

    /// nil when `length` is beyond the family's width. Host bits in `address` are cleared.
    public init?(address: IPAddress, length: Int) {
        guard length >= 0, length <= (address.isIPv4 ? 32 : 128) else { return nil }
        self.length = length
        network = NetworkPrefix.masked(address, length)
    }

    /// `address/length` or a bare address; the length is decimal without leading zeros.
    public init?(_ text: some StringProtocol) {
        guard let slash = text.firstIndex(of: "/") else {
            guard let address = IPAddress(text) else { return nil }
            self.init(address: address, length: address.isIPv4 ? 32 : 128)
            return
        }
        guard let address = IPAddress(text[..<slash]) else { return nil }
        let digits = text.utf8[text.utf8.index(after: slash)...]
        guard (1...3).contains(digits.count), digits.first != UInt8(ascii: "0") || digits.count == 1 else { return nil }
        var length = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            length = length * 10 + Int(byte - UInt8(ascii: "0"))
        }
        // Host bits set (`10.1.2.3/8`) are accepted and cleared, as most software does.
        self.init(address: address, length: length)
    }

    public func contains(_ address: IPAddress) -> Bool {
        if network.isIPv4 {
            guard let candidate = address.isIPv4 ? address : address.unmappedIPv4 else { return false }
            return NetworkPrefix.masked(candidate, length) == network
        }
        return NetworkPrefix.masked(address.mappedToIPv6, length) == network
    }

    public var description: String { "\(network)/\(length)" }

    private static func masked(_ address: IPAddress, _ length: Int) -> IPAddress {
        // Swift's shifts by the full width or more give 0, which is the mask of a /0.
        if let value = address.ipv4Value {
            return IPAddress(ipv4: value & (UInt32.max << (32 - length)))
        }
        let (high, low) = address.ipv6Value ?? (0, 0)
        return IPAddress(ipv6High: high & (UInt64.max << (64 - min(length, 64))),
                         low: low & (UInt64.max << (128 - max(length, 64))))
    }
}

extension NetworkPrefix {
    /// What per-address limits and failure counters count a client as: its IPv4 address (a
    /// mapped one as IPv4), or its IPv6 /64, one subscriber's network (counting single IPv6
    /// addresses would give an attacker 2^64 fresh ones). Text that is no address stays as is.
    public static func limitKey(for client: String) -> String {
        guard let address = IPAddress(client), !address.isIPv4 else { return client }
        if let v4 = address.unmappedIPv4 { return v4.description }
        return NetworkPrefix(address: address, length: 64)?.description ?? client
    }
}
