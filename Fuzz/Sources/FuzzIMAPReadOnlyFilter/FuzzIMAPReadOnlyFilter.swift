// IMAPReadOnlyFilter on a logged-in session: client commands one way, store responses the other.
//
// Input: byte 0 = where the rest splits into the client's part and the store's part (0 = all
// store, 255 = all client, proportionally in between), byte 1 = setup (bit 0: a tiny line limit,
// so that over-long lines are reachable within -max_len), bytes 2-3 = seed of the chunk sizes
// and of the interleaving of fromClient/fromStore calls, the rest = the two parts.
//
// Invariants (fatalError):
// - every byte the store sends reaches the client, in order (the filter only inserts answers);
// - what goes to the store does not depend on how the client's bytes were split: whole and
//   chunked runs (with no store responses) send the same bytes and give the same answers (the
//   store's responses may release literal data held for its "+", or drop it on a refusal);
// - read with the filter's own framing (a line ending in `{n}`/`{n+}` is followed by n opaque
//   bytes and a continuation line; the line after a forwarded IDLE is its DONE), in the runs with
//   and without the store's responses, no command that
//   reaches the store is STORE, APPEND, EXPUNGE, COPY, MOVE, DELETE, RENAME, CREATE, SELECT, or a
//   UID STORE/COPY/MOVE/EXPUNGE.
// The last two hold only while no line exceeds the limit, so the tiny limit skips them (a
// complete line is not held to the limit when it arrives in one piece, but is when it arrives in
// several).
import FuzzSupport
import MailProtocol

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let input = FuzzInput(start, count, headerCount: 2) else { return 0 }
    let split = input.body.count * Int(input.header[0]) / 255
    let client = Array(input.body[..<split])
    let store = Array(input.body[split...])
    let tinyLimit = input.header[1] & 0x01 != 0
    var choices = input.choices
    var limits = ProtocolLimits()
    if tinyLimit { limits.filteredLineLength = 48 }
    let reason = "Mailbox is being moved\r\n* OK injected"

    // 1. Both directions, interleaved.
    var filter = IMAPReadOnlyFilter(reason: reason, limits: limits)
    var toStore: [UInt8] = []
    var toClient: [UInt8] = []
    var clientOffset = 0
    var storeOffset = 0
    while clientOffset < client.count || storeOffset < store.count {
        let clientTurn = storeOffset == store.count || (clientOffset < client.count && choices.below(2) == 0)
        if clientTurn {
            let output = filter.fromClient(choices.chunk(of: client, from: &clientOffset))
            toStore += output.toStore
            toClient += output.toClient
        } else {
            let output = filter.fromStore(choices.chunk(of: store, from: &storeOffset))
            toClient += output.toClient
            toStore += output.toStore
        }
    }
    require(isSubsequence(store, of: toClient), "store bytes did not all reach the client, in order")
    if tinyLimit { return 0 }

    // 2. The client's bytes whole, and 3. in chunks, with no store responses.
    var wholeFilter = IMAPReadOnlyFilter(reason: reason, limits: limits)
    let whole = wholeFilter.fromClient(client)
    var chunkedFilter = IMAPReadOnlyFilter(reason: reason, limits: limits)
    var chunkedToStore: [UInt8] = []
    var chunkedToClient: [UInt8] = []
    var offset = 0
    while offset < client.count {
        let output = chunkedFilter.fromClient(choices.chunk(of: client, from: &offset))
        chunkedToStore += output.toStore
        chunkedToClient += output.toClient
    }
    require(whole.toStore == chunkedToStore, "whole and chunked runs sent the store different bytes")
    require(whole.toClient == chunkedToClient, "whole and chunked runs answered the client differently")
    // With the store's answers, literal data held for its "+" may go later or never: what
    // reached the store must pass the same check.
    checkCommands(whole.toStore)
    checkCommands(toStore)
    return 0
}

let forbidden: Set<String> = ["STORE", "APPEND", "EXPUNGE", "COPY", "MOVE", "DELETE", "RENAME", "CREATE", "SELECT"]
let forbiddenUID: Set<String> = ["STORE", "COPY", "MOVE", "EXPUNGE"]

/// Walks the bytes sent to the store command by command and checks each command's name.
func checkCommands(_ stream: [UInt8]) {
    var index = 0
    var atCommandStart = true
    var idleDone = false
    while index < stream.count {
        let end = stream[index...].firstIndex(of: 10).map { $0 + 1 } ?? stream.count
        let line = stream[index..<end]
        index = end
        if idleDone {
            idleDone = false
            // Only DONE passes unread after IDLE; any other line is a command like the rest.
            if upper(trimmed(line)) == "DONE" {
                atCommandStart = true
                continue
            }
        }
        let literal = literalAnnounced(line)
        if atCommandStart {
            let words = trimmed(line).split(separator: 32, maxSplits: 3, omittingEmptySubsequences: false).map(upper)
            if words.count > 1 {
                require(!forbidden.contains(words[1]), "\(words[1]) reached the store: \(Array(line))")
                if words[1] == "UID", words.count > 2 {
                    require(!forbiddenUID.contains(words[2]), "UID \(words[2]) reached the store: \(Array(line))")
                }
                if words[1] == "IDLE" && literal == nil { idleDone = true }
            }
        }
        if let literal {
            index = min(stream.count, index + min(literal, stream.count))
            atCommandStart = false
        } else {
            atCommandStart = true
        }
    }
}

/// `{n}` or `{n+}` (at most 18 digits) ending the line, before its CRLF.
func literalAnnounced(_ line: ArraySlice<UInt8>) -> Int? {
    var text = line
    if text.last == 10 { text = text.dropLast() }
    if text.last == 13 { text = text.dropLast() }
    guard text.last == UInt8(ascii: "}") else { return nil }
    text = text.dropLast()
    if text.last == UInt8(ascii: "+") { text = text.dropLast() }
    let digitsEnd = text.endIndex
    while let last = text.last, last >= UInt8(ascii: "0"), last <= UInt8(ascii: "9") { text = text.dropLast() }
    let digits = line[text.endIndex..<digitsEnd]
    guard !digits.isEmpty, digits.count <= 18, text.last == UInt8(ascii: "{") else { return nil }
    return digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
}

func trimmed(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
    var text = line
    while let last = text.last, last == 10 || last == 13 { text = text.dropLast() }
    return text
}

func isSubsequence(_ needle: [UInt8], of haystack: [UInt8]) -> Bool {
    var index = 0
    for byte in haystack where index < needle.count && needle[index] == byte { index += 1 }
    return index == needle.count
}
