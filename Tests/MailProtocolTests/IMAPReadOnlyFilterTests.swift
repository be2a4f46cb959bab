import MailProtocol
import XCTest

final class IMAPReadOnlyFilterTests: XCTestCase {
    let reason = "Mailbox is read-only during its move."

    /// Runs the client's bytes, then the store's, each cut into the given chunks; returns what
    /// reached the store and what reached the client, in order.
    private func run(client: [ArraySlice<UInt8>], store: [ArraySlice<UInt8>]) -> (toStore: String, toClient: String) {
        var filter = IMAPReadOnlyFilter(reason: reason)
        var toStore: [UInt8] = []
        var toClient: [UInt8] = []
        for chunk in client {
            let output = filter.fromClient(chunk)
            toStore += output.toStore
            toClient += output.toClient
        }
        for chunk in store {
            let output = filter.fromStore(chunk)
            toClient += output.toClient
            toStore += output.toStore
        }
        return (String(decoding: toStore, as: UTF8.self), String(decoding: toClient, as: UTF8.self))
    }

    /// Whole, byte by byte, and split in two at every offset, on either side: the same result.
    private func assertSplitInvariant(client: String, store: String = "", file: StaticString = #filePath,
                                      line: UInt = #line) -> (toStore: String, toClient: String) {
        let c = Array(client.utf8)
        let s = Array(store.utf8)
        let whole = run(client: [c[...]], store: [s[...]])
        let bytewise = run(client: c.indices.map { c[$0...$0] }, store: s.indices.map { s[$0...$0] })
        XCTAssertEqual(bytewise.toStore, whole.toStore, "byte by byte", file: file, line: line)
        XCTAssertEqual(bytewise.toClient, whole.toClient, "byte by byte", file: file, line: line)
        for split in 0...c.count {
            let cut = run(client: [c[..<split], c[split...]], store: [s[...]])
            XCTAssertEqual(cut.toStore, whole.toStore, "client split at \(split)", file: file, line: line)
            XCTAssertEqual(cut.toClient, whole.toClient, "client split at \(split)", file: file, line: line)
        }
        for split in 0...s.count {
            let cut = run(client: [c[...]], store: [s[..<split], s[split...]])
            XCTAssertEqual(cut.toClient, whole.toClient, "store split at \(split)", file: file, line: line)
        }
        return whole
    }

    func testSelectBecomesExamineAndReadingCommandsPassUnchanged() {
        let client = "s1 SELECT INBOX\r\ns2 select \"Sent Items\"\r\nf1 FETCH 1:* (FLAGS BODY[])\r\nu1 UID FETCH 1 BODY.PEEK[]\r\n"
            + "x1 SEARCH UNSEEN\r\nl1 LIST \"\" *\r\nt1 STATUS INBOX (MESSAGES)\r\nn1 NOOP\r\nc1 CLOSE\r\ne1 ENABLE CONDSTORE\r\n"
            + "q1 GETQUOTAROOT INBOX\r\nk1 CHECK\r\nun UNSELECT\r\nns NAMESPACE\r\nid ID NIL\r\ncp CAPABILITY\r\nlo LOGOUT\r\n"
        let result = assertSplitInvariant(client: client)
        XCTAssertEqual(result.toStore, client.replacingOccurrences(of: "s1 SELECT", with: "s1 EXAMINE")
            .replacingOccurrences(of: "s2 select", with: "s2 EXAMINE"))
        XCTAssertEqual(result.toClient, "", "nothing answered locally")
    }

    func testWritingCommandsAreRefusedUnderTheirOwnTagAndNeverReachTheStore() {
        let refused = ["STORE 1 +FLAGS (\\Seen)", "UID STORE 1 +FLAGS (\\Deleted)", "EXPUNGE", "UID EXPUNGE 1",
                       "COPY 1 Trash", "UID COPY 1 Trash", "MOVE 1 Trash", "UID MOVE 1 Trash", "CREATE Foo",
                       "DELETE Foo", "RENAME Foo Bar", "SUBSCRIBE Foo", "UNSUBSCRIBE Foo", "SETMETADATA INBOX (/private/x NIL)",
                       "SETACL INBOX bob lr", "DELETEACL INBOX bob", "SETQUOTA \"\" (STORAGE 1)", "COMPRESS DEFLATE",
                       "XFROBNICATE", "STARTTLS", "AUTHENTICATE PLAIN"]
        for (index, command) in refused.enumerated() {
            let result = assertSplitInvariant(client: "r\(index) \(command)\r\n")
            XCTAssertEqual(result.toStore, "", command)
            XCTAssertEqual(result.toClient, "r\(index) NO [CANNOT] \(reason)\r\n", command)
        }
    }

    func testRefusalsKeepTheirPlaceBetweenPipelinedForwardedCommands() {
        let client = "a FETCH 1 BODY[]\r\nb STORE 1 +FLAGS (\\Seen)\r\nc NOOP\r\nd EXPUNGE\r\n"
        let store = "* 1 FETCH (BODY[] {12}\r\nhello\r\nc OK x)\r\na OK Fetch completed.\r\n* 2 EXISTS\r\nc OK NOOP completed.\r\n"
        let result = assertSplitInvariant(client: client, store: store)
        XCTAssertEqual(result.toStore, "a FETCH 1 BODY[]\r\nc NOOP\r\n")
        XCTAssertEqual(result.toClient, "* 1 FETCH (BODY[] {12}\r\nhello\r\nc OK x)\r\na OK Fetch completed.\r\n"
            + "b NO [CANNOT] \(reason)\r\n* 2 EXISTS\r\nc OK NOOP completed.\r\nd NO [CANNOT] \(reason)\r\n",
            "b after a's completion (not after the fake one in the literal), d after c's")
    }

    func testAnAnswerWaitsForTheStoresResponseBoundary() {
        var filter = IMAPReadOnlyFilter(reason: reason)
        XCTAssertEqual(filter.fromStore(Array("* 3 EXI".utf8)).toClient, Array("* 3 EXI".utf8))
        let output = filter.fromClient(Array("x EXPUNGE\r\n".utf8))
        XCTAssertEqual(output.toClient, [], "the store is in the middle of a response")
        XCTAssertEqual(String(decoding: filter.fromStore(Array("STS\r\n".utf8)).toClient, as: UTF8.self),
                       "STS\r\nx NO [CANNOT] \(reason)\r\n")
    }

    func testLiteralsAreTrackedExactly() {
        // A synchronizing literal on a refused command: refused at once, and the client sends no literal.
        let append = assertSplitInvariant(client: "p APPEND INBOX {11}\r\nn NOOP\r\n")
        XCTAssertEqual(append.toStore, "n NOOP\r\n")
        XCTAssertEqual(append.toClient, "p NO [CANNOT] \(reason)\r\n")
        // LITERAL+: the data follows unasked and is dropped, even when it looks like commands.
        let plus = assertSplitInvariant(client: "p APPEND INBOX (\\Seen) {17+}\r\nz1 DELETE INBOX\r\n\r\nn NOOP\r\n")
        XCTAssertEqual(plus.toStore, "n NOOP\r\n")
        XCTAssertEqual(plus.toClient, "p NO [CANNOT] \(reason)\r\n")
        // A literal in a forwarded command goes to the store, with the rest of the line.
        let search = assertSplitInvariant(client: "s SEARCH CHARSET UTF-8 TEXT {7+}\r\nx1 NO\r\n SINCE 1-Jan-2020\r\nn NOOP\r\n")
        XCTAssertEqual(search.toStore, "s SEARCH CHARSET UTF-8 TEXT {7+}\r\nx1 NO\r\n SINCE 1-Jan-2020\r\nn NOOP\r\n")
        XCTAssertEqual(search.toClient, "")
        let sync = assertSplitInvariant(client: "s SEARCH TEXT {3}\r\nabc\r\nt STORE 1 FLAGS ()\r\n",
                                        store: "+ Ready\r\n* SEARCH\r\ns OK Search completed.\r\n")
        XCTAssertEqual(sync.toStore, "s SEARCH TEXT {3}\r\nabc\r\n")
        XCTAssertEqual(sync.toClient, "+ Ready\r\n* SEARCH\r\ns OK Search completed.\r\nt NO [CANNOT] \(reason)\r\n")
    }

    func testLiteralBytesWaitForTheStoresContinuation() {
        // A client that does not wait for "+", and a store that refuses the command: the bytes
        // must not reach the store, where they would be read as commands, unfiltered.
        let refused = assertSplitInvariant(client: "s SEARCH TEXT {5}\r\nb STORE 1 +FLAGS (\\Deleted)\r\n",
                                           store: "s BAD Literal too big.\r\n")
        XCTAssertEqual(refused.toStore, "s SEARCH TEXT {5}\r\n")
        XCTAssertFalse(refused.toClient.contains("OK"), refused.toClient)
        // The same bytes after the store's "+" are the literal, and go.
        let accepted = assertSplitInvariant(client: "s SEARCH TEXT {5}\r\nhello\r\n",
                                            store: "+ OK\r\n* SEARCH 1\r\ns OK done\r\n")
        XCTAssertEqual(accepted.toStore, "s SEARCH TEXT {5}\r\nhello\r\n")
        XCTAssertEqual(accepted.toClient, "+ OK\r\n* SEARCH 1\r\ns OK done\r\n")
    }

    func testIdleAndDone() {
        let result = assertSplitInvariant(client: "i IDLE\r\nDONE\r\nx MOVE 1 Trash\r\n",
                                          store: "+ idling\r\n* 4 EXISTS\r\ni OK Idle completed.\r\n")
        XCTAssertEqual(result.toStore, "i IDLE\r\nDONE\r\n")
        XCTAssertEqual(result.toClient, "+ idling\r\n* 4 EXISTS\r\ni OK Idle completed.\r\nx NO [CANNOT] \(reason)\r\n")
    }

    func testOnlyDONEEndsIDLEUnread() {
        // The store refuses "IDLE foo"; the client's next line must still be filtered.
        let result = assertSplitInvariant(client: "a IDLE foo\r\nb STORE 1 +FLAGS (\\Deleted)\r\nc IDLE\r\ndone\r\n",
                                          store: "a BAD Invalid arguments.\r\n+ idling\r\nc OK Idle completed.\r\n")
        XCTAssertEqual(result.toStore, "a IDLE foo\r\nc IDLE\r\ndone\r\n")
        XCTAssertEqual(result.toClient, "a BAD Invalid arguments.\r\nb NO [CANNOT] \(reason)\r\n+ idling\r\nc OK Idle completed.\r\n")
    }

    func testWhatCannotBeParsedGetsBADAndTheSessionGoesOn() {
        let result = assertSplitInvariant(client: "\r\n(bad tag NOOP\r\nlonely\r\nn NOOP\r\n", store: "n OK NOOP completed.\r\n")
        XCTAssertEqual(result.toStore, "n NOOP\r\n")
        XCTAssertEqual(result.toClient, "* BAD Invalid tag or empty command line.\r\n* BAD Invalid tag or empty command line.\r\n"
            + "lonely BAD Missing command.\r\nn OK NOOP completed.\r\n")
    }

    func testAnOverlongLineIsDroppedWithBAD() {
        var limits = ProtocolLimits()
        limits.filteredLineLength = 1024
        var filter = IMAPReadOnlyFilter(reason: reason, limits: limits)
        let long = "f FETCH " + String(repeating: "1,", count: 2000) + "\r\nn NOOP\r\n"
        var toStore: [UInt8] = []
        var toClient: [UInt8] = []
        for chunk in Array(long.utf8).chunked(100) {
            let output = filter.fromClient(chunk)
            toStore += output.toStore
            toClient += output.toClient
        }
        XCTAssertEqual(String(decoding: toStore, as: UTF8.self), "n NOOP\r\n")
        XCTAssertEqual(String(decoding: toClient, as: UTF8.self), "* BAD Command line too long.\r\n")
    }

    func testAReasonCannotBreakTheLine() {
        var filter = IMAPReadOnlyFilter(reason: "two\r\nlines")
        XCTAssertEqual(String(decoding: filter.fromClient(Array("x EXPUNGE\r\n".utf8)).toClient, as: UTF8.self),
                       "x NO [CANNOT] two  lines\r\n")
    }

    /// Random commands (forwarded, refused, with literals) and random chunkings on both sides,
    /// against a model built from the command list.
    func testRandomSessionsAgainstAModel() {
        var random = SeededRandom(state: 0x5eed_f11e)
        for _ in 0..<300 {
            var client = ""
            var expectStore = ""
            var store = ""
            var expectClient = ""
            var pendingAnswers: [String] = []
            for n in 0..<Int(random.next() % 8 + 1) {
                let tag = "t\(n)"
                switch random.next() % 4 {
                case 0:
                    let body = String(repeating: "x", count: Int(random.next() % 40))
                    client += "\(tag) FETCH 1 BODY[]\r\n"
                    expectStore += "\(tag) FETCH 1 BODY[]\r\n"
                    let response = "* 1 FETCH (BODY[] {\(body.count + 2)}\r\n\(body)\r\n)\r\n\(tag) OK done\r\n"
                    store += response
                    expectClient += pendingAnswers.joined() + response
                    pendingAnswers = []
                case 1:
                    client += "\(tag) STORE 1 +FLAGS (\\Deleted)\r\n"
                    pendingAnswers.append("\(tag) NO [CANNOT] \(reason)\r\n")
                case 2:
                    let data = String(repeating: "y", count: Int(random.next() % 30))
                    client += "\(tag) APPEND INBOX {\(data.count)+}\r\n\(data)\r\n"
                    pendingAnswers.append("\(tag) NO [CANNOT] \(reason)\r\n")
                default:
                    client += "\(tag) SELECT INBOX\r\n"
                    expectStore += "\(tag) EXAMINE INBOX\r\n"
                    let response = "* 3 EXISTS\r\n* OK [READ-ONLY] x\r\n\(tag) OK [READ-ONLY] Examine completed.\r\n"
                    store += response
                    expectClient += pendingAnswers.joined() + response
                    pendingAnswers = []
                }
            }
            // Answers queued before any forwarded command go out at once, with the client's bytes.
            let c = Array(client.utf8)
            let s = Array(store.utf8)
            let result = run(client: c.chunked(Int(random.next() % 17 + 1)), store: s.chunked(Int(random.next() % 23 + 1)))
            XCTAssertEqual(result.toStore, expectStore)
            let trailing = pendingAnswers.joined()
            XCTAssertEqual(result.toClient, expectClient + trailing, "client: \(client.debugDescription)")
        }
    }
}

extension Array where Element == UInt8 {
    func chunked(_ size: Int) -> [ArraySlice<UInt8>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
