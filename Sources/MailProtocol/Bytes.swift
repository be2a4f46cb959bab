// Small byte helpers shared by the parsers. The protocols here are ASCII on the wire
// with 8-bit payloads (UTF-8 passwords), so everything stays as [UInt8] until the edge.

extension UInt8 {
    @inlinable var asciiUppercased: UInt8 {
        (self >= 0x61 && self <= 0x7A) ? self - 0x20 : self
    }
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let space = UInt8(ascii: " ")
}

extension Array where Element == UInt8 {
    init(_ string: String) { self = Array(string.utf8) }
}

@inlinable
func asciiEqualsIgnoringCase<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
where A.Element == UInt8, B.Element == UInt8 {
    guard a.count == b.count else { return false }
    return zip(a, b).allSatisfy { $0.asciiUppercased == $1.asciiUppercased }
}

func uppercasedASCII<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    String(decoding: bytes.map { $0.asciiUppercased }, as: UTF8.self)
}

func string<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    String(decoding: bytes, as: UTF8.self)
}

/// Splits off the first space-separated word of a line: `("USER", "alice smith")`.
func splitWord(_ line: ArraySlice<UInt8>) -> (word: ArraySlice<UInt8>, rest: ArraySlice<UInt8>?) {
    guard let space = line.firstIndex(of: .space) else { return (line, nil) }
    return (line[line.startIndex..<space], line[(space + 1)...])
}
