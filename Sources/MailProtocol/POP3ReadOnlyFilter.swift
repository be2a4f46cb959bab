/// Keeps a logged-in POP3 session (RFC 1939, RFC 2449) from changing the store while its
/// mailbox is on a read-only hold, such as a migration's final copy pass.
///
/// POP3 changes a maildrop only through DELE, and the deletions happen at QUIT. So DELE never
/// reaches the store, QUIT goes out as `RSET` + `QUIT` (whatever the store may have marked is
/// unmarked first), and every command the filter does not know is refused too: an unknown
/// command could have a response of unknown shape, and then the stream could no longer be
/// followed.
///
/// Refusals are answered here, but a pipelining client (RFC 2449) must still get its responses
/// in the order of its commands. So the filter follows the store's responses as they pass, just
/// enough to see where each one ends, and slots its own answers in between. The store's bytes
/// are never buffered: a message can be any size, and only the first few bytes of each line
/// matter.
public struct POP3ReadOnlyFilter: Sendable {
    /// How the store's response to a forwarded command is framed.
    private enum Response: Sendable, Equatable {
        case singleLine
        /// RETR, TOP, CAPA, and LIST/UIDL without an argument: `+OK` starts a dot-terminated
        /// block, `-ERR` is a single line.
        case multiLineIfOK
        /// The RSET sent ahead of QUIT: the client never asked for it, so it must not see it.
        case swallowed
    }

    private enum Answer: Sendable, Equatable {
        case refused
        case invalid
    }

    /// One response the client is owed, in command order.
    private enum Owed: Sendable, Equatable {
        case store(Response)
        /// Counted rather than listed, so a client pipelining thousands of DELEs behind one
        /// slow RETR costs one entry, not thousands.
        case local(Answer, count: Int)
    }

    /// What the store line being relayed is, decided at its first byte: by then the command
    /// whose response it starts may have been forwarded, even if it was not at the line end before.
    private enum StoreLine: Sendable, Equatable {
        case notStarted
        case status
        case body
        case swallowed
        /// Nothing was expected: passed through, and it ends no response.
        case stray
    }

    private let refusal: [UInt8]
    private static let invalid = [UInt8]("-ERR Invalid command.\r\n")
    private let lineLimit: Int

    // Client → store.
    private var partialLine: [UInt8] = []
    /// The rest of an over-long line, up to its LF, is dropped unseen.
    private var discardingLine = false
    /// After QUIT the store closes; anything pipelined behind it would never be answered.
    private var quitSent = false

    /// Owed responses from `owedStart` on; the store's always come first (a local answer at the
    /// head is sent at once), so the head is what the store's next line belongs to.
    private var owed: [Owed] = []
    private var owedStart = 0

    // Store → client.
    private var storeLine = StoreLine.notStarted
    /// The current response got `+OK` to a multi-line command: lines up to a lone `.` are its body.
    private var inMultiLineBody = false
    /// The store line's first three bytes, and its length so far, capped at three: a lone `.`
    /// (with or without CR) and a `+OK` status can be told apart with no more.
    private var lineHead: (UInt8, UInt8, UInt8) = (0, 0, 0)
    private var lineHeadCount = 0

    public init(reason: String, limits: ProtocolLimits = ProtocolLimits()) {
        let text = reason.isEmpty ? "Mailbox is temporarily read-only." : reason
        // Bytes, not scalars: UTF-8 continuation bytes are never below 0x80, so this only ever
        // replaces whole control characters and the text stays valid UTF-8.
        let clean = text.utf8.map { $0 < 0x20 || $0 == 0x7F ? UInt8.space : $0 }
        refusal = [UInt8]("-ERR [SYS/TEMP] ") + clean + [.cr, .lf]
        lineLimit = max(limits.lineLength, 1)
    }

    // MARK: - Client → store

    /// Client → store bytes (after login). Returns what to send to the store, and the answers of
    /// the filter's own that may go to the client right now (they are in order with the store's
    /// responses).
    public mutating func fromClient<C: Collection>(_ bytes: C) -> (toStore: [UInt8], toClient: [UInt8])
    where C.Element == UInt8 {
        if let result = bytes.withContiguousStorageIfAvailable({ receive($0) }) { return result }
        return Array(bytes).withUnsafeBufferPointer { receive($0) }
    }

    private mutating func receive(_ input: UnsafeBufferPointer<UInt8>) -> (toStore: [UInt8], toClient: [UInt8]) {
        var toStore: [UInt8] = []
        var toClient: [UInt8] = []
        var index = 0
        while index < input.count, !quitSent {
            let lf = input[index...].firstIndex(of: .lf)
            let segment = input[index..<(lf ?? input.count)]
            index = lf.map { $0 + 1 } ?? input.count
            if discardingLine {
                discardingLine = lf == nil
                continue
            }
            let length = partialLine.count + segment.count
            let endsInCR = segment.last.map { $0 == .cr } ?? (partialLine.last == .cr)
            // The CR of a CRLF is not part of the line; an unfinished line's last byte may
            // turn out to be that CR, so it gets one byte of grace.
            let tooLong = lf == nil ? length > lineLimit + (endsInCR ? 1 : 0)
                                    : length - (endsInCR ? 1 : 0) > lineLimit
            if tooLong {
                partialLine.removeAll()
                discardingLine = lf == nil
                answer(.invalid, into: &toClient)
                continue
            }
            partialLine.append(contentsOf: segment)
            guard lf != nil else { break }
            partialLine.append(.lf)
            command(&toStore, &toClient)
            partialLine.removeAll(keepingCapacity: true)
        }
        if quitSent {
            partialLine = []
        }
        return (toStore, toClient)
    }

    /// Handles the complete line in `partialLine` (with its LF, and its CR if it had one).
    private mutating func command(_ toStore: inout [UInt8], _ toClient: inout [UInt8]) {
        var line = partialLine.dropLast()
        if line.last == .cr { line = line.dropLast() }
        guard !line.isEmpty else { return answer(.invalid, into: &toClient) }
        let (name, argument) = splitWord(line)
        // As the stores parse it (Dovecot: `*args == '\0'`): a blank argument is no argument.
        let hasArgument = argument?.contains { $0 != .space && $0 != UInt8(ascii: "\t") } ?? false
        let response: Response
        switch uppercasedASCII(name) {
        case "RETR", "TOP", "CAPA":
            response = .multiLineIfOK
        case "LIST", "UIDL":
            response = hasArgument ? .singleLine : .multiLineIfOK
        case "STAT", "NOOP", "RSET":
            response = .singleLine
        case "QUIT":
            toStore += [UInt8]("RSET\r\nQUIT\r\n")
            owe(.store(.swallowed))
            owe(.store(.singleLine))
            quitSent = true
            return
        default:
            // DELE above all; also AUTH/USER/PASS/APOP (the session is already logged in),
            // STLS, and extensions whose effects and response shapes are unknown.
            return answer(.refused, into: &toClient)
        }
        // Unchanged, line end included: the store sees exactly what the client wrote.
        toStore += partialLine
        owe(.store(response))
    }

    private mutating func answer(_ answer: Answer, into toClient: inout [UInt8]) {
        if owedStart == owed.count {
            toClient += wire(answer)
        } else {
            owe(.local(answer, count: 1))
        }
    }

    private mutating func owe(_ entry: Owed) {
        if case .local(let answer, let count) = entry, owedStart < owed.count,
           case .local(answer, let last) = owed[owed.count - 1] {
            owed[owed.count - 1] = .local(answer, count: last + count)
        } else {
            owed.append(entry)
        }
    }

    private func wire(_ answer: Answer) -> [UInt8] {
        answer == .refused ? refusal : Self.invalid
    }

    // MARK: - Store → client

    /// Store → client bytes. Returns what to send to the client: the store's bytes (minus the
    /// swallowed RSET response), with the filter's own answers inserted where their turn comes.
    public mutating func fromStore<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        if let out = bytes.withContiguousStorageIfAvailable({ relay($0) }) { return out }
        return Array(bytes).withUnsafeBufferPointer { relay($0) }
    }

    private mutating func relay(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        // Start of the store bytes that pass but are not in `out` yet.
        var pending = 0
        var index = 0
        let end = input.count
        while index < end {
            if storeLine == .notStarted {
                storeLine = startLine()
                lineHeadCount = 0
                if storeLine == .swallowed {
                    out += UnsafeBufferPointer(rebasing: input[pending..<index])
                }
            }
            while lineHeadCount < 3, index < end, input[index] != .lf {
                switch lineHeadCount {
                case 0: lineHead.0 = input[index]
                case 1: lineHead.1 = input[index]
                default: lineHead.2 = input[index]
                }
                lineHeadCount += 1
                index += 1
            }
            // The rest of the line is not looked at, only searched for its end.
            while index < end, input[index] != .lf { index += 1 }
            guard index < end else { break }
            index += 1
            let line = storeLine
            storeLine = .notStarted
            switch line {
            case .notStarted, .stray:
                continue
            case .swallowed:
                pending = index
            case .status:
                if case .store(.multiLineIfOK) = owed[owedStart], lineIsOK {
                    inMultiLineBody = true
                    continue
                }
            case .body:
                guard lineIsLoneDot else { continue }
                inMultiLineBody = false
            }
            // A response is complete: the local answers queued behind it go out right here.
            owedStart += 1
            var answers: [UInt8] = []
            while owedStart < owed.count, case .local(let answer, let count) = owed[owedStart] {
                for _ in 0..<count { answers += wire(answer) }
                owedStart += 1
            }
            compactOwed()
            if !answers.isEmpty {
                out += UnsafeBufferPointer(rebasing: input[pending..<index])
                out += answers
                pending = index
            }
        }
        if storeLine != .swallowed {
            if pending == 0 && out.isEmpty {
                return Array(input)
            }
            out += UnsafeBufferPointer(rebasing: input[pending..<end])
        }
        return out
    }

    private func startLine() -> StoreLine {
        if inMultiLineBody { return .body }
        guard owedStart < owed.count else { return .stray }
        return owed[owedStart] == .store(.swallowed) ? .swallowed : .status
    }

    private var lineIsOK: Bool {
        // RFC 1939 says upper case; a store that disagrees should not lose its framing over it.
        lineHeadCount == 3 && lineHead.0 == UInt8(ascii: "+")
            && lineHead.1.asciiUppercased == UInt8(ascii: "O") && lineHead.2.asciiUppercased == UInt8(ascii: "K")
    }

    /// The multi-line terminator; a dot-stuffed line (`..`, `..foo`) is longer than this.
    private var lineIsLoneDot: Bool {
        lineHead.0 == UInt8(ascii: ".") && (lineHeadCount == 1 || (lineHeadCount == 2 && lineHead.1 == .cr))
    }

    private mutating func compactOwed() {
        if owedStart == owed.count {
            owed.removeAll(keepingCapacity: owed.count <= 64)
            owedStart = 0
        } else if owedStart > 64 && owedStart * 2 > owed.count {
            owed.removeFirst(owedStart)
            owedStart = 0
        }
    }
}
