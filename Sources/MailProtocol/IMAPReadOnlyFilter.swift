/// The IMAP half of a read-only hold: while a migration's final copy pass runs, the user keeps
/// reading mail through the proxy and nothing can change on the store.
///
/// It sits on a logged-in session's relay and frames the client's commands (tag, name,
/// literals; nothing more of the grammar): SELECT goes to the store as EXAMINE (the store then
/// opens the mailbox read-only, answers `[READ-ONLY]` and sets no `\Seen` on FETCH), commands
/// known to only read pass unchanged, and everything else — APPEND, STORE, EXPUNGE, COPY,
/// MOVE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, SET*, COMPRESS, and anything unknown — is
/// answered here with `tag NO [CANNOT] <reason>` and never reaches the store.
///
/// Answers of its own must reach the client in command order, between the store's: the filter
/// also follows the store's stream (with `IMAPResponseFraming`, so literal bodies are counted,
/// not read) to see each forwarded command's tagged completion, and inserts an answer only at a
/// response boundary once every earlier forwarded command has completed.
public struct IMAPReadOnlyFilter: Sendable {
    public struct Output: Sendable, Equatable {
        public var toStore: [UInt8] = []
        public var toClient: [UInt8] = []
    }

    private enum ClientPhase: Sendable {
        /// Collecting a command line (or the rest of one after a literal).
        case line
        /// A line longer than the limit: dropped up to its LF.
        case discarding
        /// Literal bytes of the current command: passed on, or dropped with a refused command.
        case literal(remaining: Int, forward: Bool)
        /// After a forwarded IDLE: the client's next line is its DONE.
        case idle
        /// A forwarded command announced a synchronizing literal: its bytes may go to the
        /// store only after the store's "+"; if the store refuses the command instead, they
        /// would be read there as commands, unfiltered. Until then the client's bytes are held.
        case awaitingContinuation(count: Int)
    }

    /// What becomes of a command.
    private enum Verdict {
        case pass
        case examine
        case refuse
    }

    private static let passing: Set<String> = [
        "CAPABILITY", "NOOP", "LOGOUT", "ID", "ENABLE", "NAMESPACE", "LIST", "LSUB", "XLIST", "STATUS",
        "EXAMINE", "FETCH", "SEARCH", "ESEARCH", "SORT", "THREAD", "CHECK", "CLOSE", "UNSELECT", "IDLE",
        "GETQUOTAROOT", "GETQUOTA", "GETACL", "MYRIGHTS", "LISTRIGHTS", "GETMETADATA",
        "UID FETCH", "UID SEARCH", "UID SORT", "UID THREAD",
    ]

    private let refusal: [UInt8]
    private let lineLimit: Int
    private var phase = ClientPhase.line
    private var line: [UInt8] = []
    /// The command whose line continues after a literal: its tag, and whether it was forwarded.
    private var current: (tag: [UInt8], forward: Bool, sequence: Int)?
    private var nextSequence = 0

    /// Forwarded commands the store has not completed, in order.
    private var outstanding: [(tag: [UInt8], sequence: Int)] = []
    /// Answers of our own, in command order, each waiting for the forwarded commands before it.
    private var answers: [(sequence: Int, bytes: [UInt8])] = []

    /// Client bytes held while waiting for the store's continuation (bounded).
    private var held: [UInt8] = []

    private var store = IMAPResponseFraming()
    /// The first word of the store's current response (its tag), while it is being read.
    private var responseTag: [UInt8] = []
    private var readingTag = false

    public init(reason: String, limits: ProtocolLimits = ProtocolLimits()) {
        refusal = Array(" NO [CANNOT] \(LoginFailure.lineText(reason))\r\n".utf8)
        lineLimit = limits.filteredLineLength
    }

    // MARK: - Client to store

    public mutating func fromClient<C: Collection>(_ bytes: C) -> Output where C.Element == UInt8 {
        var output = Output()
        var index = bytes.startIndex
        while index != bytes.endIndex {
            switch phase {
            case .awaitingContinuation(let count):
                // A conforming client sends nothing before the "+"; a bound keeps one that
                // does from growing the buffer.
                let room = max(0, count + lineLimit - held.count)
                held += bytes[index...].prefix(room)
                index = bytes.endIndex
            case .literal(let remaining, let forward):
                let end = bytes.index(index, offsetBy: remaining, limitedBy: bytes.endIndex) ?? bytes.endIndex
                let count = bytes.distance(from: index, to: end)
                if forward { output.toStore += bytes[index..<end] }
                phase = remaining == count ? .line : .literal(remaining: remaining - count, forward: forward)
                index = end
            case .line, .idle, .discarding:
                let newline = bytes[index...].firstIndex(of: .lf)
                let end = newline.map { bytes.index(after: $0) } ?? bytes.endIndex
                if case .discarding = phase {
                    if newline != nil {
                        phase = .line
                        answer(Array("* BAD Command line too long.\r\n".utf8), sequence: takeSequence())
                    }
                    index = end
                    continue
                }
                line += bytes[index..<end]
                index = end
                if newline == nil {
                    if line.count > lineLimit {
                        line = []
                        current = nil
                        phase = .discarding
                    }
                    continue
                }
                let complete = line
                line = []
                if case .idle = phase {
                    phase = .line
                    // Only DONE passes unread: anything else (the store may have refused the
                    // IDLE, and would then run it as a command) is filtered like any command.
                    if Self.isDone(complete) {
                        output.toStore += complete
                        continue
                    }
                }
                command(complete, into: &output)
            }
        }
        flush(into: &output.toClient)
        return output
    }

    private mutating func takeSequence() -> Int {
        defer { nextSequence += 1 }
        return nextSequence
    }

    /// One complete line: a command's first line, or the rest of one after a literal.
    private mutating func command(_ line: [UInt8], into output: inout Output) {
        let literal = Self.literalAnnounced(line)
        let (tag, forward, sequence): ([UInt8], Bool, Int)
        if let current {
            (tag, forward, sequence) = current
            if forward { output.toStore += line }
        } else {
            sequence = takeSequence()
            let (parsedTag, name, nameRange) = Self.parse(line)
            guard let parsedTag else {
                answer(Array("* BAD Invalid tag or empty command line.\r\n".utf8), sequence: sequence)
                tag = []
                forward = false
                return finish(tag: tag, forward: forward, sequence: sequence, literal: literal)
            }
            tag = parsedTag
            switch Self.verdict(name) {
            case .pass:
                forward = true
                output.toStore += line
            case .examine:
                forward = true
                output.toStore += line[..<nameRange.lowerBound] + Array("EXAMINE".utf8) + line[nameRange.upperBound...]
            case .refuse:
                forward = false
                answer(tag + (name.isEmpty ? Array(" BAD Missing command.\r\n".utf8) : refusal), sequence: sequence)
            }
            if forward { outstanding.append((tag, sequence)) }
            if forward && name == "IDLE" && literal == nil {
                current = nil
                phase = .idle
                return
            }
        }
        finish(tag: tag, forward: forward, sequence: sequence, literal: literal)
    }

    private mutating func finish(tag: [UInt8], forward: Bool, sequence: Int, literal: (count: Int, synchronizing: Bool)?) {
        guard let literal else {
            current = nil
            return
        }
        if !forward && literal.synchronizing {
            // The client waits for "+" before sending the literal; our NO tells it not to
            // (RFC 9051 §7.5), so the command ends here.
            current = nil
            return
        }
        current = (tag, forward, sequence)
        if forward && literal.synchronizing {
            phase = .awaitingContinuation(count: literal.count)
        } else if literal.count > 0 {
            phase = .literal(remaining: literal.count, forward: forward)
        }
    }

    private mutating func answer(_ bytes: [UInt8], sequence: Int) {
        answers.append((sequence, bytes))
    }

    /// Tag, upper-cased command name ("UID FETCH" for UID commands) and where the name's first
    /// word sits in the line; a nil tag when the line has none.
    private static func parse(_ line: [UInt8]) -> (tag: [UInt8]?, name: String, nameRange: Range<Int>) {
        var end = line.count
        while end > 0 && (line[end - 1] == .lf || line[end - 1] == .cr) { end -= 1 }
        let words = line[..<end].split(separator: .space, maxSplits: 3, omittingEmptySubsequences: false)
        guard let first = words.first, !first.isEmpty, first.allSatisfy(isTagByte) else { return (nil, "", 0..<0) }
        guard words.count > 1, !words[1].isEmpty else { return (Array(first), "", 0..<0) }
        var name = uppercasedASCII(words[1])
        if name == "UID", words.count > 2 { name += " " + uppercasedASCII(words[2]) }
        return (Array(first), name, words[1].startIndex..<words[1].endIndex)
    }

    private static func isDone(_ line: [UInt8]) -> Bool {
        var end = line.count
        while end > 0 && (line[end - 1] == .lf || line[end - 1] == .cr) { end -= 1 }
        return asciiEqualsIgnoringCase(line[..<end], "DONE".utf8)
    }

    private static func isTagByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && !"(){%*\"\\+".utf8.contains(byte)
    }

    private static func verdict(_ name: String) -> Verdict {
        if name == "SELECT" { return .examine }
        return passing.contains(name) ? .pass : .refuse
    }

    /// `{n}` or `{n+}` (or `~{n}`) ending the line: its size, and whether the client waits for
    /// a continuation before sending it.
    static func literalAnnounced(_ line: [UInt8]) -> (count: Int, synchronizing: Bool)? {
        var end = line.count
        if end > 0 && line[end - 1] == .lf { end -= 1 }
        if end > 0 && line[end - 1] == .cr { end -= 1 }
        guard end > 0, line[end - 1] == UInt8(ascii: "}") else { return nil }
        end -= 1
        var synchronizing = true
        if end > 0 && line[end - 1] == UInt8(ascii: "+") {
            synchronizing = false
            end -= 1
        }
        var start = end
        while start > 0 && line[start - 1] >= UInt8(ascii: "0") && line[start - 1] <= UInt8(ascii: "9") { start -= 1 }
        guard start < end, end - start <= 18, start > 0, line[start - 1] == UInt8(ascii: "{") else { return nil }
        let count = line[start..<end].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        return (count, synchronizing)
    }

    // MARK: - Store to client

    /// Store bytes in: what goes to the client (with the filter's answers where their turn
    /// comes), and client bytes that were held for the store's continuation and may now go.
    public mutating func fromStore<C: Collection>(_ bytes: C) -> Output where C.Element == UInt8 {
        var output: [UInt8] = []
        var released = Output()
        output.reserveCapacity(bytes.count + (answers.isEmpty ? 0 : 64))
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let remaining = store.literalRemaining
            if remaining > 0 {
                let end = bytes.index(index, offsetBy: remaining, limitedBy: bytes.endIndex) ?? bytes.endIndex
                store.skipLiteral(bytes.distance(from: index, to: end))
                output += bytes[index..<end]
                index = end
                continue
            }
            if store.isAtResponseBoundary {
                readingTag = true
                responseTag = []
            }
            let newline = bytes[index...].firstIndex(of: .lf)
            let end = newline.map { bytes.index(after: $0) } ?? bytes.endIndex
            let segment = bytes[index..<end]
            if readingTag {
                for byte in segment {
                    if byte == .space || byte == .cr || byte == .lf || responseTag.count > lineLimit {
                        readingTag = false
                        break
                    }
                    responseTag.append(byte)
                }
            }
            store.consume(segment)
            output += segment
            index = end
            if store.isAtResponseBoundary {
                readingTag = false
                completed(responseTag)
                flush(into: &output)
                if case .awaitingContinuation = phase { continuation(after: responseTag, into: &released) }
                output += released.toClient
                released.toClient = []
            }
        }
        if store.lostFraming { flush(into: &output) }
        return Output(toStore: released.toStore, toClient: output)
    }

    /// The store answered while a literal waited: "+" lets the held bytes go; the awaited
    /// command's own completion means the store refused it, and the client will not send the
    /// literal (what it sent early is dropped).
    private mutating func continuation(after tag: [UInt8], into output: inout Output) {
        guard case .awaitingContinuation(let count) = phase, let current else { return }
        var pending = held
        held = []
        if tag == [UInt8(ascii: "+")] {
            phase = .literal(remaining: count, forward: true)
            if count == 0 { phase = .line }
        } else if tag == current.tag {
            phase = .line
            self.current = nil
            pending.removeFirst(min(count, pending.count))
        } else {
            held = pending
            return
        }
        let next = fromClient(pending)
        output.toStore += next.toStore
        output.toClient += next.toClient
    }

    /// A response ended; if it was a forwarded command's tagged completion, that command is done.
    private mutating func completed(_ tag: [UInt8]) {
        guard tag != [UInt8(ascii: "*")], tag != [UInt8(ascii: "+")],
              let position = outstanding.firstIndex(where: { $0.tag == tag }) else { return }
        outstanding.remove(at: position)
    }

    /// Our answers whose turn has come, at a response boundary of the store's stream. If the
    /// store's stream stopped making sense, waiting would hang the client: they go at once.
    private mutating func flush(into output: inout [UInt8]) {
        guard store.isAtResponseBoundary || store.lostFraming else { return }
        while let first = answers.first {
            if let earliest = outstanding.first?.sequence, earliest < first.sequence, !store.lostFraming { break }
            output += first.bytes
            answers.removeFirst()
        }
    }
}
