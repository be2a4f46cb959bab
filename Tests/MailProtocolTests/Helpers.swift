import MailProtocol
import XCTest

extension Array where Element == UInt8 {
    init(_ string: String) { self = Array(string.utf8) }
}

/// Everything a client machine did for an input: the bytes it sent (concatenated, since
/// how they are grouped into writes does not matter) and its other actions in order.
struct Transcript: Equatable, CustomStringConvertible {
    var sent: [UInt8] = []
    var events: [ClientAction] = []

    mutating func record(_ actions: [ClientAction]) {
        for action in actions {
            if case .send(let bytes) = action { sent += bytes } else { events.append(action) }
        }
    }

    var text: String { String(decoding: sent, as: UTF8.self) }
    var description: String { "sent: \(text.debugDescription) events: \(events)" }
}

/// Feeds `input` whole, byte by byte, and split in two at every offset, and checks that the
/// machine's output is the same every time (swift-nio's ByteToMessageDecoderVerifier idea).
/// With a `verdict`, every login is refused with it at once, so what follows a refusal (an
/// error challenge, say) is checked at every split too.
func assertSplitInvariant<M: PreLoginMachine>(_ make: () -> M, _ input: String, verdict: LoginFailure? = nil,
                                             file: StaticString = #filePath, line: UInt = #line) -> Transcript {
    let bytes = [UInt8](input)
    func run(_ chunks: [ArraySlice<UInt8>]) -> Transcript {
        var machine = make()
        var transcript = Transcript()
        for chunk in chunks {
            var actions = machine.receive(chunk)
            while !actions.isEmpty {
                transcript.record(actions)
                guard let verdict, actions.contains(where: { if case .login = $0 { true } else { false } }) else { break }
                actions = machine.loginRejected(verdict)
            }
        }
        return transcript
    }
    let whole = run([bytes[...]])
    XCTAssertEqual(run(bytes.indices.map { bytes[$0...$0] }), whole, "byte by byte", file: file, line: line)
    for split in 0...bytes.count {
        XCTAssertEqual(run([bytes[..<split], bytes[split...]]), whole, "split at \(split)", file: file, line: line)
    }
    return whole
}

func login(_ transcript: Transcript) -> Credentials? {
    for event in transcript.events {
        if case .login(let request) = event { return request.credentials }
    }
    return nil
}

/// xorshift64*: deterministic, so a failure of a randomized test reproduces.
struct SeededRandom {
    var state: UInt64

    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }

    mutating func pick(_ choices: String) -> UInt8 { pick(Array(choices.utf8)) }

    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
}
