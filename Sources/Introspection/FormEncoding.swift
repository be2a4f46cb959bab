/// `application/x-www-form-urlencoded`, the body of an introspection request (RFC 7662 §2.1)
/// and, by RFC 6749 §2.3.1, the client's id and secret before they go into HTTP Basic.
enum FormEncoding {
    /// Every byte but RFC 3986's unreserved ones is percent-encoded, a space as `+`: any form
    /// decoder reads that back, whatever bytes a token holds.
    static func encode(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 3)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: " "):
                out.append(UInt8(ascii: "+"))
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return out
    }

    static func encode(_ text: String) -> String {
        String(decoding: encode(text.utf8), as: UTF8.self)
    }

    /// The request body: the token and the hint that it is an access token.
    static func introspectionBody(token: [UInt8]) -> [UInt8] {
        Array("token=".utf8) + encode(token) + Array("&token_type_hint=access_token".utf8)
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)
}
