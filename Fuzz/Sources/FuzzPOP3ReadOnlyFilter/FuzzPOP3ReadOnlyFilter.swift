// POP3ReadOnlyFilter on a logged-in session: client commands one way, store responses the other.
//
// Input: byte 0 = where the rest splits into the client's part and the store's part (0 = all
// store, 255 = all client, proportionally in between), byte 1 = setup (bit 0: a tiny line
// limit, so that over-long lines are reachable within -max_len; bit 1: an empty refusal reason),
// bytes 2-3 = seed of the chunk sizes and of the interleaving of fromClient/fromStore calls, the
// rest = the two parts.
//
// POP3 has no literals: every line the store gets is a command. Invariants (fatalError):
// - no line sent to the store starts with DELE (any case); in fact every one starts with a
//   command known to only read (RETR, TOP, CAPA, LIST, UIDL, STAT, NOOP, RSET, QUIT);
// - QUIT goes out as RSET + QUIT, and nothing follows it;
// - what goes to the store depends only on the client's bytes, not on how they were split nor on
//   the store's responses; with no store responses, the client's answers do not depend on the
//   split either.
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
    let setup = input.header[1]
    var choices = input.choices
    var limits = ProtocolLimits()
    if setup & 0x01 != 0 { limits.lineLength = 16 }
    let reason = setup & 0x02 != 0 ? "" : "Mailbox is being moved\r\n+OK injected"

    // 1. Both directions, interleaved.
    var filter = POP3ReadOnlyFilter(reason: reason, limits: limits)
    var toStore: [UInt8] = []
    var clientOffset = 0
    var storeOffset = 0
    while clientOffset < client.count || storeOffset < store.count {
        let clientTurn = storeOffset == store.count || (clientOffset < client.count && choices.below(2) == 0)
        if clientTurn {
            let output = filter.fromClient(choices.chunk(of: client, from: &clientOffset))
            toStore += output.toStore
        } else {
            _ = filter.fromStore(choices.chunk(of: store, from: &storeOffset))
        }
    }
    checkCommands(toStore)

    // 2. The client's bytes whole, and 3. in chunks, with no store responses.
    var wholeFilter = POP3ReadOnlyFilter(reason: reason, limits: limits)
    let whole = wholeFilter.fromClient(client)
    var chunkedFilter = POP3ReadOnlyFilter(reason: reason, limits: limits)
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
    require(whole.toStore == toStore, "the store's responses changed what was sent to the store")
    return 0
}

let readOnly: Set<String> = ["RETR", "TOP", "CAPA", "LIST", "UIDL", "STAT", "NOOP", "RSET", "QUIT"]

func checkCommands(_ stream: [UInt8]) {
    let lines = stream.split(separator: 10, omittingEmptySubsequences: false)
    require(lines.last?.isEmpty ?? true, "the store got an unfinished line")
    var previous: ArraySlice<UInt8>?
    for (number, line) in lines.dropLast().enumerated() {
        let head = line.prefix(4).map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
        require(head != Array("DELE".utf8), "DELE reached the store: \(Array(line))")
        let name = String(decoding: (line.split(separator: 32, maxSplits: 1, omittingEmptySubsequences: false).first ?? [])
            .map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
        let bare = name.hasSuffix("\r") ? String(name.dropLast()) : name
        require(readOnly.contains(bare), "\(bare) reached the store: \(Array(line))")
        if bare == "QUIT" {
            require(number == lines.count - 2, "something followed QUIT")
            require(previous.map { Array($0) } == Array("RSET\r".utf8), "QUIT without RSET before it")
        }
        previous = line
    }
}
