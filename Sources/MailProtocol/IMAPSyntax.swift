// The slice of IMAP syntax (RFC 9051 §9) that the pre-login commands need: tags, atoms,
// quoted strings, literals and parenthesised lists. Anything richer belongs to the store.

/// One piece of a command as it arrived: a line fragment, or the payload of a literal
/// announced at the end of the preceding fragment.
enum IMAPCommandPart: Equatable, Sendable {
    case text(ArraySlice<UInt8>)
    case literal([UInt8])
}

enum IMAPToken: Equatable, Sendable {
    case atom([UInt8])
    case string([UInt8])
    case listOpen
    case listClose

    /// An astring (atom, quoted or literal) as bytes; `nil` for list punctuation.
    var astring: [UInt8]? {
        switch self {
        case .atom(let bytes), .string(let bytes): return bytes
        case .listOpen, .listClose: return nil
        }
    }

    var isNIL: Bool {
        if case .atom(let bytes) = self { return asciiEqualsIgnoringCase(bytes, Array("NIL".utf8)) }
        return false
    }
}

/// `{n}` or `{n+}` at the very end of a line.
struct IMAPLiteralMarker: Equatable {
    var textEnd: Int       // index in the line where the marker starts
    var count: Int
    var synchronizing: Bool

    init?(endOf line: ArraySlice<UInt8>) {
        guard line.last == UInt8(ascii: "}"),
              let open = line.lastIndex(of: UInt8(ascii: "{")) else { return nil }
        var digits = line[(open + 1)..<(line.endIndex - 1)]
        synchronizing = true
        if digits.last == UInt8(ascii: "+") {
            synchronizing = false
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.count <= 10,
              digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        count = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        textEnd = open
    }
}

enum IMAPSyntax {
    /// tag = 1*<any ASTRING-CHAR except "+">. No length of our own: the line length bounds
    /// it, as the grammar does (a client generating long tags must not be refused by a proxy
    /// its store would accept).
    static func isValidTag(_ tag: ArraySlice<UInt8>) -> Bool {
        guard !tag.isEmpty else { return false }
        return tag.allSatisfy { byte in
            byte > 0x20 && byte < 0x7F && !"(){%*\"\\+".utf8.contains(byte)
        }
    }

    /// Atoms are read leniently (8-bit bytes pass: some clients send UTF-8 passwords unquoted),
    /// but never a byte that would make the line ambiguous.
    static func isAtomByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte != 0x7F && byte != UInt8(ascii: "(") && byte != UInt8(ascii: ")")
            && byte != UInt8(ascii: "{") && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\")
    }

    /// Tokens of the arguments; nil on a syntax error.
    static func tokenize(_ parts: [IMAPCommandPart]) -> [IMAPToken]? {
        var tokens: [IMAPToken] = []
        for part in parts {
            switch part {
            case .literal(let payload):
                // CHAR8 excludes NUL; one in a user name or password would corrupt the replay.
                guard !payload.contains(0) else { return nil }
                tokens.append(.string(payload))
            case .text(let text):
                var index = text.startIndex
                while index < text.endIndex {
                    let byte = text[index]
                    switch byte {
                    case .space:
                        index += 1
                    case UInt8(ascii: "("):
                        tokens.append(.listOpen)
                        index += 1
                    case UInt8(ascii: ")"):
                        tokens.append(.listClose)
                        index += 1
                    case UInt8(ascii: "\""):
                        var value: [UInt8] = []
                        index += 1
                        var closed = false
                        while index < text.endIndex {
                            let c = text[index]
                            if c == UInt8(ascii: "\"") { closed = true; index += 1; break }
                            if c == UInt8(ascii: "\\") {
                                let next = index + 1
                                guard next < text.endIndex,
                                      text[next] == UInt8(ascii: "\"") || text[next] == UInt8(ascii: "\\") else { return nil }
                                value.append(text[next])
                                index += 2
                                continue
                            }
                            guard c != .cr, c != .lf, c != 0 else { return nil }
                            value.append(c)
                            index += 1
                        }
                        guard closed else { return nil }
                        tokens.append(.string(value))
                    default:
                        let start = index
                        while index < text.endIndex, text[index] != .space,
                              text[index] != UInt8(ascii: "("), text[index] != UInt8(ascii: ")") {
                            guard isAtomByte(text[index]) else { return nil }
                            index += 1
                        }
                        tokens.append(.atom(Array(text[start..<index])))
                    }
                }
            }
        }
        return tokens
    }

    /// An astring for a command we send: atom when safe, quoted when printable ASCII, else a
    /// literal (8-bit, CR, LF or NUL bytes can only travel in a literal).
    enum Encoded: Equatable {
        case inline([UInt8])
        case literal([UInt8])
    }

    static func encodeAString(_ value: [UInt8]) -> Encoded {
        if !value.isEmpty, value.allSatisfy({ isAtomByte($0) && $0 < 0x80 && !"%*]".utf8.contains($0) }) {
            return .inline(value)
        }
        if value.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            var quoted: [UInt8] = [UInt8(ascii: "\"")]
            for byte in value {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { quoted.append(UInt8(ascii: "\\")) }
                quoted.append(byte)
            }
            quoted.append(UInt8(ascii: "\""))
            return .inline(quoted)
        }
        return .literal(value)
    }

    /// A quoted string for our own responses (ID values are short printable text).
    static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars where scalar != "\r" && scalar != "\n" {
            if scalar == "\"" || scalar == "\\" { out.append("\\") }
            out.unicodeScalars.append(scalar)
        }
        return out + "\""
    }

    /// Splits `OK [CODE args] text` after the tag: returns the response code's body and the text.
    static func splitResponseCode(_ rest: ArraySlice<UInt8>) -> (code: ArraySlice<UInt8>?, text: ArraySlice<UInt8>) {
        guard rest.first == UInt8(ascii: "["), let close = rest.firstIndex(of: UInt8(ascii: "]")) else {
            return (nil, rest)
        }
        let code = rest[(rest.startIndex + 1)..<close]
        var text = rest[(close + 1)...]
        while text.first == .space { text = text.dropFirst() }
        return (code, text)
    }
}
