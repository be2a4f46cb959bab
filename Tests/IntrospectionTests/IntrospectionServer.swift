import Foundation
import Introspection
import Routing
import Synchronization
import XCTest

/// `Tests/Fixtures/introspection_server.py`, a python3 RFC 7662 endpoint on 127.0.0.1 whose
/// answer depends on the token (the script lists them). One per test, stopped at its end.
final class IntrospectionServer {
    private let process = Process()
    let port: Int

    var url: String { "http://127.0.0.1:\(port)/introspect" }

    init(clientID: String? = nil, clientSecret: String? = nil) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/introspection_server.py")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path]
            + (clientID.map { ["--client-id", $0, "--client-secret", clientSecret ?? ""] } ?? [])
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // The script prints its port once it listens: read up to that line (or to its exit).
        var printed = Data()
        while !printed.contains(UInt8(ascii: "\n")) {
            let more = out.fileHandleForReading.availableData
            if more.isEmpty { break }
            printed.append(more)
        }
        guard let port = Int(String(decoding: printed, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        else {
            process.terminate()
            throw ServerError(description: "introspection_server.py printed no port: "
                                           + String(decoding: printed, as: UTF8.self))
        }
        self.port = port
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    deinit { stop() }

    struct ServerError: Error, CustomStringConvertible {
        let description: String
    }
}

/// What the completions reported, from whichever queue they ran on.
final class VerdictLog: Sendable {
    private let state = Mutex<(verdicts: [Int: TokenVerdict], onMainThread: Int)>(([:], 0))

    func record(_ verdict: TokenVerdict, for index: Int) {
        let main = Thread.isMainThread
        state.withLock {
            $0.verdicts[index] = verdict
            if main { $0.onMainThread += 1 }
        }
    }

    var verdicts: [Int: TokenVerdict] { state.withLock { $0.verdicts } }
    var onMainThread: Int { state.withLock { $0.onMainThread } }
}

extension XCTestCase {
    /// Checks all `tokens` at once and waits until every completion has run (not for a fixed
    /// time): the verdicts in the tokens' order. A completion on the test's own (main) thread
    /// fails the test: the work must run on the checker's queues.
    func verdicts(for tokens: [String], from checker: TokenIntrospection, timeout: Double = 20,
                  file: StaticString = #filePath, line: UInt = #line) -> [TokenVerdict?] {
        let log = VerdictLog()
        let done = tokens.indices.map { expectation(description: "verdict \($0)") }
        for (index, token) in tokens.enumerated() {
            let fulfilled = done[index]
            checker.check(token: Array(token.utf8)) { verdict in
                log.record(verdict, for: index)
                fulfilled.fulfill()
            }
        }
        wait(for: done, timeout: timeout)
        XCTAssertEqual(log.onMainThread, 0, "a completion ran on the caller's thread", file: file, line: line)
        let verdicts = log.verdicts
        return tokens.indices.map { verdicts[$0] }
    }

    /// No reason quotes the token, whole or in part (`secret` is each test token's own part).
    func assertNoReasonQuotes(_ tokens: [String], secret: String, in verdicts: [TokenVerdict?],
                              file: StaticString = #filePath, line: UInt = #line) {
        for (token, verdict) in zip(tokens, verdicts) {
            guard case .unavailable(let reason)? = verdict else { continue }
            XCTAssertFalse(reason.contains(secret), "\(reason) quotes a token", file: file, line: line)
            XCTAssertFalse(reason.contains(token), "\(reason) quotes a token", file: file, line: line)
        }
    }
}
