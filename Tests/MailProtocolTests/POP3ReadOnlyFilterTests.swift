import MailProtocol
import XCTest

private let holdReason = "Mailbox is being moved, try again later."
private let refused = "-ERR [SYS/TEMP] Mailbox is being moved, try again later.\r\n"
private let invalid = "-ERR Invalid command.\r\n"

private struct POP3Streams: Equatable, CustomStringConvertible {
    var toStore: [UInt8] = []
    var toClient: [UInt8] = []

    var store: String { String(decoding: toStore, as: UTF8.self) }
    var client: String { String(decoding: toClient, as: UTF8.self) }
    var description: String { "toStore: \(store.debugDescription) toClient: \(client.debugDescription)" }
}

/// All the client's chunks first, then the store's: what a pipelining client sees when the
/// store is slow.
private func pop3Filter(client: [ArraySlice<UInt8>], store: [ArraySlice<UInt8>],
                        reason: String = holdReason, limits: ProtocolLimits = ProtocolLimits()) -> POP3Streams {
    var filter = POP3ReadOnlyFilter(reason: reason, limits: limits)
    var streams = POP3Streams()
    for chunk in client {
        let (toStore, toClient) = filter.fromClient(chunk)
        streams.toStore += toStore
        streams.toClient += toClient
    }
    for chunk in store { streams.toClient += filter.fromStore(chunk) }
    return streams
}

private func pop3Chunkings(_ bytes: [UInt8]) -> [(String, [ArraySlice<UInt8>])] {
    [("byte by byte", bytes.indices.map { bytes[$0...$0] })]
        + (0...bytes.count).map { ("split at \($0)", [bytes[..<$0], bytes[$0...]]) }
}

/// Runs the filter with each side fed whole, byte by byte and split in two at every offset
/// (the other side whole), and checks that the result never depends on the chunking.
private func assertPOP3Filter(client: String, store: String = "", reason: String = holdReason,
                              limits: ProtocolLimits = ProtocolLimits(),
                              file: StaticString = #filePath, line: UInt = #line) -> POP3Streams {
    let clientBytes = [UInt8](client), storeBytes = [UInt8](store)
    let whole = pop3Filter(client: [clientBytes[...]], store: [storeBytes[...]], reason: reason, limits: limits)
    for (name, chunks) in pop3Chunkings(clientBytes) {
        XCTAssertEqual(pop3Filter(client: chunks, store: [storeBytes[...]], reason: reason, limits: limits), whole,
                       "client \(name)", file: file, line: line)
    }
    for (name, chunks) in pop3Chunkings(storeBytes) {
        XCTAssertEqual(pop3Filter(client: [clientBytes[...]], store: chunks, reason: reason, limits: limits), whole,
                       "store \(name)", file: file, line: line)
    }
    return whole
}

final class POP3ReadOnlyFilterTests: XCTestCase {
    func testDeleIsRefusedAndNeverReachesTheStore() {
        let t = assertPOP3Filter(client: "DELE 1\r\ndele 2\nDeLe\r\n")
        XCTAssertEqual(t.store, "")
        XCTAssertEqual(t.client, refused + refused + refused)
    }

    func testReadCommandsPassUnchanged() {
        let client = "STAT\r\nLIST 1\r\nUIDL 1\r\nNOOP\r\nRSET\r\nRETR 1\r\nTOP 1 0\r\nCAPA\r\nLIST\nUIDL\r\n"
        let store = "+OK 1 120\r\n+OK 1 120\r\n+OK 1 whq\r\n+OK\r\n+OK maildrop has 1 message\r\n"
            + "+OK 120 octets\r\nSubject: hi\r\n\r\nbody\r\n.\r\n+OK\r\nSubject: hi\r\n\r\n.\r\n"
            + "+OK\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n+OK 1 messages\r\n1 120\r\n.\r\n+OK\r\n1 whq\r\n.\r\n"
        let t = assertPOP3Filter(client: client, store: store)
        XCTAssertEqual(t.store, client)
        XCTAssertEqual(t.client, store)
    }

    func testQuitBecomesRsetQuitAndOnlyTheQuitAnswerIsShown() {
        // assertPOP3Filter feeds the RSET's answer byte by byte and split everywhere, too.
        let t = assertPOP3Filter(client: "QUIT\r\n", store: "+OK maildrop has 2 messages (320 octets)\r\n+OK bye\r\n")
        XCTAssertEqual(t.store, "RSET\r\nQUIT\r\n")
        XCTAssertEqual(t.client, "+OK bye\r\n")

        let refusedRset = assertPOP3Filter(client: "quit please\n", store: "-ERR no\n+OK bye\n")
        XCTAssertEqual(refusedRset.store, "RSET\r\nQUIT\r\n")
        XCTAssertEqual(refusedRset.client, "+OK bye\n")
    }

    func testNothingPipelinedAfterQuitIsForwardedOrAnswered() {
        let t = assertPOP3Filter(client: "DELE 1\r\nQUIT\r\nDELE 2\r\nSTAT\r\n", store: "+OK\r\n+OK bye\r\n")
        XCTAssertEqual(t.store, "RSET\r\nQUIT\r\n")
        XCTAssertEqual(t.client, refused + "+OK bye\r\n")
    }

    func testPipelinedResponsesKeepTheCommandOrder() {
        let retr = "+OK 61 octets\r\nSubject: x\r\n\r\n..foo\r\n..\r\n+OK not a status\r\n-ERR nor this\r\n.\r\n"
        let t = assertPOP3Filter(client: "STAT\r\nDELE 1\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n",
                                 store: "+OK 2 320\r\n" + retr + "+OK maildrop has 2 messages\r\n+OK bye\r\n")
        XCTAssertEqual(t.store, "STAT\r\nRETR 1\r\nRSET\r\nQUIT\r\n")
        XCTAssertEqual(t.client, "+OK 2 320\r\n" + refused + retr + refused + "+OK bye\r\n")
    }

    func testListAndUidlAreMultiLineOnlyWithoutAnArgument() {
        let single = ["+OK 1 120\r\n", "+OK 2 whq\r\n"]
        let multi = ["+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n", "+OK\r\n1 abc\r\n2 whq\r\n.\r\n",
                     "+OK\r\n1 120\r\n.\r\n"]
        let t = assertPOP3Filter(client: "LIST 1\r\nDELE 1\r\nLIST\r\nDELE 2\r\nUIDL 2\r\nDELE 3\r\nUIDL\r\nDELE 4\r\nlist \r\nDELE 5\r\n",
                                 store: single[0] + multi[0] + single[1] + multi[1] + multi[2])
        XCTAssertEqual(t.store, "LIST 1\r\nLIST\r\nUIDL 2\r\nUIDL\r\nlist \r\n")
        XCTAssertEqual(t.client, single[0] + refused + multi[0] + refused + single[1] + refused + multi[1] + refused
                       + multi[2] + refused)
    }

    func testErrIsAlwaysSingleLine() {
        let t = assertPOP3Filter(client: "RETR 9\r\nDELE 1\r\nTOP 9 0\r\nDELE 2\r\nCAPA\r\nDELE 3\r\nLIST\r\nDELE 4\r\n",
                                 store: "-ERR no such message\r\n-ERR no such message\r\n-ERR no\r\n-ERR busy\r\n")
        XCTAssertEqual(t.client, "-ERR no such message\r\n" + refused + "-ERR no such message\r\n" + refused
                       + "-ERR no\r\n" + refused + "-ERR busy\r\n" + refused)
    }

    func testTopAndCapaAreMultiLineWithEitherLineEnd() {
        let top = "+OK top of message follows\nFrom: a\n\n.\n"
        let capa = "+OK Capability list follows\r\nTOP\r\n+OK\r\n-ERR\r\n..\r\n.\r\n"
        let t = assertPOP3Filter(client: "TOP 1 0\nDELE 1\ncapa\r\nDELE 2\r\n", store: top + capa)
        XCTAssertEqual(t.store, "TOP 1 0\ncapa\r\n")
        XCTAssertEqual(t.client, top + refused + capa + refused)
    }

    func testOverlongAndEmptyLinesAreAnsweredInOrder() {
        var limits = ProtocolLimits()
        limits.lineLength = 16
        let longest = "LIST 12345678901"   // exactly 16
        let t = assertPOP3Filter(client: "NOOP\r\n" + String(repeating: "X", count: 40) + "\r\n\r\n"
                                         + longest + "\r\n" + longest + "2\r\n" + longest + "\n" + longest + "2\n"
                                         + longest + "\r\r\nSTAT\r\n",
                                 store: "+OK\r\n+OK 1 2\r\n+OK 1 2\r\n+OK 1 2\r\n", limits: limits)
        XCTAssertEqual(t.store, "NOOP\r\n" + longest + "\r\n" + longest + "\n" + "STAT\r\n")
        XCTAssertEqual(t.client, "+OK\r\n" + invalid + invalid + "+OK 1 2\r\n" + invalid + "+OK 1 2\r\n" + invalid
                       + invalid + "+OK 1 2\r\n")
    }

    func testAnOverlongLineIsAnsweredOnceAndDroppedUpToItsEnd() {
        var filter = POP3ReadOnlyFilter(reason: holdReason)
        let chunk = [UInt8](repeating: UInt8(ascii: "D"), count: 5_000)
        var answers: [UInt8] = []
        for _ in 0..<10 {
            let (toStore, toClient) = filter.fromClient(chunk)
            XCTAssertEqual(toStore, [])
            answers += toClient
        }
        XCTAssertEqual(String(decoding: answers, as: UTF8.self), invalid)
        let (toStore, toClient) = filter.fromClient([UInt8]("DELE 1\r\nNOOP\r\n"))
        XCTAssertEqual(toStore, [UInt8]("NOOP\r\n"), "the rest of the long line, DELE 1 included, is dropped")
        XCTAssertEqual(toClient, [])
    }

    func testUnknownAndLoginCommandsAreRefusedAndLowerCaseIsRecognized() {
        let t = assertPOP3Filter(client: "XTND XMIT\r\nUSER bob\r\nPASS secret\r\nAUTH PLAIN\r\nAPOP bob 0123\r\nSTLS\r\nLAST\r\n RETR 1\r\nretr 1\r\nstat\r\n",
                                 store: "+OK\r\nbody\r\n.\r\n+OK 1 2\r\n")
        XCTAssertEqual(t.store, "retr 1\r\nstat\r\n")
        XCTAssertEqual(t.client, String(repeating: refused, count: 8) + "+OK\r\nbody\r\n.\r\n+OK 1 2\r\n")
    }

    func testControlCharactersInTheReasonBecomeSpaces() {
        let t = assertPOP3Filter(client: "DELE 1\r\n", reason: "moving\r\n+OK\ttoday\u{7F}, é")
        XCTAssertEqual(t.client, "-ERR [SYS/TEMP] moving  +OK today , é\r\n")
        XCTAssertEqual(assertPOP3Filter(client: "DELE 1\r\n", reason: "").client.split(separator: "\n").count, 1)
    }

    func testStoreBytesPassAsTheyComeAndAnswersGoInMidChunk() {
        var filter = POP3ReadOnlyFilter(reason: holdReason)
        XCTAssertEqual(filter.fromClient([UInt8]("RETR 1\r\nDELE 1\r\nSTAT\r\n")).toClient, [])
        XCTAssertEqual(filter.fromStore([UInt8]("+OK\r\n")), [UInt8]("+OK\r\n"))
        // A body line is never held back, however long, nor a lone "." that may still go on.
        let text = [UInt8](repeating: UInt8(ascii: "a"), count: 100_000)
        for chunk in [text[..<1], text[1...], [UInt8]("\r\n.")[...], [UInt8]("x\r\n.")[...], [UInt8]("\r")[...]] {
            XCTAssertEqual(filter.fromStore(chunk), Array(chunk))
        }
        XCTAssertEqual(String(decoding: filter.fromStore([UInt8]("\n+OK 1 2\r\n")), as: UTF8.self),
                       "\n" + refused + "+OK 1 2\r\n")
        // Nothing is outstanding now: the next refusal is answered at once.
        XCTAssertEqual(String(decoding: filter.fromClient([UInt8]("DELE 2\r\n")).toClient, as: UTF8.self), refused)
    }

    func testStoreLinesNobodyAskedForPassThrough() {
        var filter = POP3ReadOnlyFilter(reason: holdReason)
        XCTAssertEqual(filter.fromStore([UInt8]("-ERR idle timeout\r\n")), [UInt8]("-ERR idle timeout\r\n"))
        XCTAssertEqual(String(decoding: filter.fromClient([UInt8]("NOOP\r\nDELE 1\r\n")).toClient, as: UTF8.self), "")
        XCTAssertEqual(String(decoding: filter.fromStore([UInt8]("+OK\r\n")), as: UTF8.self), "+OK\r\n" + refused)
    }

    /// Random sessions against a reference model that builds the expected streams straight from
    /// the command list. Client and store chunks interleave at random, the store only ever
    /// answering commands already sent, as a real one would.
    func testRandomSessionsMatchTheReferenceModel() {
        var random = SeededRandom(state: 0x9e37_79b9_7f4a_7c15)
        var limits = ProtocolLimits()
        limits.lineLength = 24
        for iteration in 0..<400 {
            let session = POP3Session.random(&random, lineLimit: limits.lineLength)
            var filter = POP3ReadOnlyFilter(reason: holdReason, limits: limits)
            var got = POP3Streams()
            var clientFed = 0, storeFed = 0
            while clientFed < session.client.count || storeFed < session.store.count {
                // The store may answer everything whose command line is complete.
                let answerable = session.storeEnds.last { $0.clientEnd <= clientFed }?.storeEnd ?? 0
                if clientFed < session.client.count && (storeFed == answerable || random.below(2) == 0) {
                    let next = min(session.client.count, clientFed + 1 + random.below(30))
                    let (toStore, toClient) = filter.fromClient(session.client[clientFed..<next])
                    got.toStore += toStore
                    got.toClient += toClient
                    clientFed = next
                } else {
                    let next = min(answerable, storeFed + 1 + random.below(random.below(2) == 0 ? 8 : 400))
                    got.toClient += filter.fromStore(session.store[storeFed..<next])
                    storeFed = next
                }
            }
            XCTAssertEqual(got, POP3Streams(toStore: session.expectedToStore, toClient: session.expectedToClient),
                           "iteration \(iteration): \(String(decoding: session.client, as: UTF8.self).debugDescription)")
        }
    }
}


/// A random command list, with the store's answers and the reference model's expectations.
private struct POP3Session {
    var client: [UInt8] = []
    var store: [UInt8] = []
    /// After each forwarded command: where its line ends in `client`, its answer in `store`.
    var storeEnds: [(clientEnd: Int, storeEnd: Int)] = []
    var expectedToStore: [UInt8] = []
    var expectedToClient: [UInt8] = []

    static func random(_ random: inout SeededRandom, lineLimit: Int) -> POP3Session {
        var session = POP3Session()
        var quit = false
        for _ in 0..<(1 + random.below(14)) {
            let end = random.pick(["\r\n", "\n"])
            let n = 1 + random.below(9)
            switch random.below(12) {
            case 0, 1:
                let line = random.pick(["DELE \(n)", "dele \(n)", "Dele", "XTND XMIT", "USER bob", "APOP a b", "AUTH", "LAST"])
                session.client += [UInt8](line + end)
                if !quit { session.expectedToClient += [UInt8](refused) }
            case 2:
                let line = random.below(2) == 0 ? "" : String(repeating: "N", count: lineLimit + 1 + random.below(40))
                session.client += [UInt8](line + end)
                if !quit { session.expectedToClient += [UInt8](invalid) }
            case 3 where !quit && random.below(3) == 0:
                quit = true
                session.client += [UInt8](random.pick(["QUIT", "quit"]) + end)
                session.expectedToStore += [UInt8]("RSET\r\nQUIT\r\n")
                let answer = random.pick(["+OK bye\r\n", "+OK\n", "-ERR oops\r\n"])
                session.store += [UInt8](random.pick(["+OK\r\n", "+OK maildrop has \(n) messages\n", "-ERR no\r\n"]) + answer)
                session.storeEnds.append((session.client.count, session.store.count))
                session.expectedToClient += [UInt8](answer)
            default:
                let (line, multiLine) = random.pick([("STAT", false), ("NOOP", false), ("RSET", false), ("LIST \(n)", false),
                                                     ("uidl \(n)", false), ("LIST", true), ("UIDL", true), ("RETR \(n)", true),
                                                     ("top \(n) 3", true), ("CAPA", true)])
                session.client += [UInt8](line + end)
                guard !quit else { continue }
                session.expectedToStore += [UInt8](line + end)
                let answer = Self.answer(&random, multiLine: multiLine)
                session.store += answer
                session.storeEnds.append((session.client.count, session.store.count))
                session.expectedToClient += answer
            }
        }
        return session
    }

    private static func answer(_ random: inout SeededRandom, multiLine: Bool) -> [UInt8] {
        let end = random.pick(["\r\n", "\n"])
        if random.below(4) == 0 { return [UInt8](random.pick(["-ERR no such message", "-ERR", "-ERR [IN-USE] busy"]) + end) }
        guard multiLine else { return [UInt8](random.pick(["+OK", "+OK 2 320", "+ok 1 whq"]) + end) }
        var answer = [UInt8](random.pick(["+OK", "+OK 120 octets", "+OK list follows"]) + end)
        for _ in 0..<random.below(8) {
            var line = random.pick(["", ".", "..", ".foo", "+OK", "-ERR", "From: a", "x", ". ", "\t."])
            if random.below(6) == 0 { line += String(repeating: "y", count: random.below(2_000)) }
            // Dot-stuffing, as the store would do it.
            if line.hasPrefix(".") { line = "." + line }
            answer += [UInt8](line + random.pick(["\r\n", "\n"]))
        }
        return answer + [UInt8](".\(end)")
    }
}
