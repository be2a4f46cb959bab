// The public SASL and Base64 entry points: Base64.encode/decode, SASL.decodePlain/encodePlain,
// SASL.parseResponse/parseInitialResponse and SASL.Mechanism(name:).
//
// Input: the whole input is used as base64 text, as a decoded SASL message, as a client
// response line, and as a mechanism name.
//
// Invariants (fatalError): decode(encode(x)) == x and the encoding is canonical (length, alphabet,
// padding); whatever decodes re-encodes to the same length; a decoded PLAIN message has a
// non-empty user name and no NUL in the password, and encodePlain/decodePlain round-trip it;
// `*` alone is a cancellation and `=` alone an empty initial response; a mechanism name is
// recognised exactly when it equals PLAIN, LOGIN, OAUTHBEARER or XOAUTH2 without regard to case.
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

    // Encoding is total and canonical, and decoding undoes it.
    let encoded = Base64.encode(input)
    require(encoded.count == (input.count + 2) / 3 * 4, "encoded length \(encoded.count) for \(input.count) bytes")
    require(encoded.allSatisfy(isBase64Byte), "encoding left the alphabet: \(encoded)")
    require(Base64.decode(encoded) == input, "decode(encode(x)) != x for \(input)")
    require(Base64.decode(encoded[...]) == input, "decode(slice) differs")

    // Strict decoding of arbitrary text.
    if let decoded = Base64.decode(input) {
        require(input.count % 4 == 0, "decoded text whose length is not a multiple of 4")
        require(input.allSatisfy(isBase64Byte), "decoded text with a byte outside the alphabet")
        require(Base64.encode(decoded).count == input.count, "decoded \(input) re-encodes to another length")
        exercisePlain(decoded)
    }
    exercisePlain(input)

    // Client responses during an exchange, and initial responses.
    let response = SASL.parseResponse(input[...])
    if input == [UInt8(ascii: "*")] {
        require(response == .cancelled, "* is not a cancellation")
    } else {
        require(response != .cancelled, "cancelled by \(input)")
        require(response == (Base64.decode(input).map { .data($0) } ?? .invalid), "parseResponse disagrees with decode")
    }
    let initial = SASL.parseInitialResponse(input[...])
    if input == [UInt8(ascii: "=")] {
        require(initial == .data([]), "= is not an empty initial response")
    } else {
        require(initial == (Base64.decode(input).map { .data($0) } ?? .invalid), "parseInitialResponse disagrees with decode")
    }

    // Mechanism names.
    let upper = input.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
    let mechanism = SASL.Mechanism(name: input)
    switch upper {
    case Array("PLAIN".utf8): require(mechanism == .plain, "PLAIN not recognised in \(input)")
    case Array("LOGIN".utf8): require(mechanism == .login, "LOGIN not recognised in \(input)")
    case Array("OAUTHBEARER".utf8): require(mechanism == .oauthBearer, "OAUTHBEARER not recognised in \(input)")
    case Array("XOAUTH2".utf8): require(mechanism == .xoauth2, "XOAUTH2 not recognised in \(input)")
    default: require(mechanism == nil, "\(input) taken for \(String(describing: mechanism))")
    }
    return 0
}

func exercisePlain(_ message: [UInt8]) {
    guard let credentials = SASL.decodePlain(message) else { return }
    require(!credentials.username.isEmpty, "PLAIN with an empty user name")
    require(!credentials.password.contains(0), "PLAIN password with a NUL")
    require(message.filter { $0 == 0 }.count == 2, "PLAIN message without exactly two NULs decoded")
    _ = credentials.description
    _ = credentials.mailboxUser
    let reencoded = SASL.encodePlain(credentials)
    guard let again = Base64.decode(reencoded) else { fatalError("encodePlain is not base64") }
    require(SASL.decodePlain(again) == credentials, "encodePlain/decodePlain do not round-trip \(credentials)")
}

func isBase64Byte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
         UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="):
        return true
    default:
        return false
    }
}
