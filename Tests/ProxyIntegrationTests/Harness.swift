import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Paths and processes for the integration tests: a private slapd, three Dovecot stores and a
/// token introspection stub (scripts/lab.py), the mailswitch binary built by `swift build`, and real clients.
enum Harness {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var mailswitchBinary: URL {
        var candidates: [URL] = []
        if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
        candidates.append(Bundle(for: ProxyIntegrationTests.self).bundleURL.deletingLastPathComponent())
        candidates.append(repository.appendingPathComponent(".build/debug"))
        for directory in candidates {
            let binary = directory.appendingPathComponent("mailswitch")
            if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        }
        return repository.appendingPathComponent(".build/debug/mailswitch")
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a command to completion; throws when it has not finished within `timeout` (it is
    /// killed then), so a hung client fails the test instead of passing for an exit status.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], timeout: Double = 120) throws -> Output {
        let process = Foundation.Process()
        process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
        process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
        process.currentDirectoryURL = repository
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let exited = ExitWatch(process)
        try process.run()
        // Drain both pipes while waiting, so a chatty child never blocks on a full pipe.
        let outData = DataCollector(out.fileHandleForReading)
        let errData = DataCollector(err.fileHandleForReading)
        guard exited.wait(timeout: timeout) else {
            process.terminate()
            process.waitUntilExit()
            throw HarnessError("\(executable) \(arguments.prefix(3).joined(separator: " ")) did not finish within \(timeout) s: "
                               + "\(outData.finish().suffix(2000)) \(errData.finish().suffix(2000))")
        }
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: outData.finish(), stderr: errData.finish())
    }

    /// The one bounded wait of the tests: evaluates `condition` every `interval` seconds until it
    /// gives a value, and throws once `timeout` has passed, naming `what` was awaited (evaluated
    /// then, so it can show the latest state). Waiting on the event itself, never on time.
    @discardableResult
    static func waitFor<T>(_ what: @autoclosure () -> String, timeout: Double, interval: Double = 0.05,
                           file: StaticString = #filePath, line: UInt = #line,
                           _ condition: () throws -> T?) throws -> T {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let value = try condition() { return value }
            if Date() >= deadline {
                throw HarnessError("timed out after \(timeout) s (\(file):\(line)) waiting for \(what())")
            }
            usleep(useconds_t(interval * 1_000_000))
        }
    }

    /// `waitFor` for a condition that holds or not.
    static func waitUntil(_ what: @autoclosure () -> String, timeout: Double, interval: Double = 0.05,
                          file: StaticString = #filePath, line: UInt = #line, _ condition: () throws -> Bool) throws {
        try waitFor(what(), timeout: timeout, interval: interval, file: file, line: line) { try condition() ? true : nil }
    }

    /// One JSON object from Tests/Fixtures/mailclient.py.
    static func client(_ arguments: [String]) throws -> [String: Any] {
        let script = repository.appendingPathComponent("Tests/Fixtures/mailclient.py").path
        let output = try run("python3", [script] + arguments, timeout: 180)
        guard output.status == 0,
              let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] else {
            throw HarnessError("mailclient \(arguments.first ?? "") failed: \(output.status) \(output.stdout) \(output.stderr)")
        }
        return object
    }

    static func lab(_ arguments: [String]) throws {
        let output = try run("python3", [repository.appendingPathComponent("scripts/lab.py").path] + arguments, timeout: 120)
        guard output.status == 0 else { throw HarnessError("lab.py \(arguments.joined(separator: " ")): \(output.stdout) \(output.stderr)") }
    }

    /// True once `port` accepts a connection (within `timeout`); callers assert it.
    static func waitForPort(_ port: Int, timeout: Double = 15) -> Bool {
        (try? waitUntil("port \(port)", timeout: timeout, interval: 0.1) {
            guard let client = try? RawClient(port: port, timeout: 1) else { return false }
            client.close()
            return true
        }) != nil
    }

    /// Established TCP connections to 127.0.0.1:`port` (IPv4), from /proc/net/tcp: how many,
    /// the bytes the server side has not read yet, and the bytes the client side has not had
    /// acknowledged (both 0: everything sent has been read by the server process).
    static func connections(toPort port: Int) -> (count: Int, unread: Int, unsent: Int) {
        // Read to the end: String(contentsOfFile:) stops after the first page of a /proc file.
        let handle = FileHandle(forReadingAtPath: "/proc/net/tcp")
        defer { try? handle?.close() }
        let table = String(decoding: (try? handle?.readToEnd()) ?? Data(), as: UTF8.self)
        var count = 0, unread = 0, unsent = 0
        for row in table.split(separator: "\n").dropFirst() {
            let fields = row.split(separator: " ")
            guard fields.count > 4, fields[3] == "01" else { continue }   // TCP_ESTABLISHED
            let local = fields[1].split(separator: ":"), remote = fields[2].split(separator: ":")
            let queues = fields[4].split(separator: ":")
            guard local.count == 2, remote.count == 2, queues.count == 2,
                  let tx = Int(queues[0], radix: 16), let rx = Int(queues[1], radix: 16) else { continue }
            if Int(local[1], radix: 16) == port {
                count += 1
                unread += rx
            } else if Int(remote[1], radix: 16) == port {
                unsent += tx
            }
        }
        return (count, unread, unsent)
    }
}

/// Signals when a process exits (set up before it runs): a wait on the exit itself.
final class ExitWatch: Sendable {
    private let exited = DispatchSemaphore(value: 0)

    init(_ process: Foundation.Process) {
        process.terminationHandler = { [exited] _ in exited.signal() }
    }

    /// True once the process has exited, false when `timeout` passed first. Once true, stays true.
    func wait(timeout: Double) -> Bool {
        guard exited.wait(timeout: .now() + timeout) == .success else { return false }
        exited.signal()
        return true
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Reads a pipe to its end on a background thread.
final class DataCollector: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()   // only this thread writes, before signalling
            done.signal()
        }
    }

    func finish() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A mailswitch process serving a configuration derived from config/mailswitch.example.yaml.
final class MailSwitchInstance {
    let process = Foundation.Process()
    /// The process's exit, waited on by `stop()` and `waitForExit(within:)`.
    private let exitWatch: ExitWatch
    let configPath: String
    let logPath: String

    /// Edits that move the example's four listeners (1143, 1110, 1993, 1995) up by `offset`,
    /// so a second instance can run beside the main one. Its metrics address (9143) moves too,
    /// to 19143 + offset / 100: 9143 + offset would meet the lab's stores (offset 1000 gives
    /// 10143, legacy's IMAP port) and other instances' listeners. The metrics edit comes first,
    /// so a listener moved onto 9143 is never taken for it.
    static func movedListeners(by offset: Int, except: Set<Int> = []) -> [(String, String)] {
        [("127.0.0.1:9143", "127.0.0.1:\(metricsPort(offset: offset))")]
            + [1143, 1110, 1993, 1995].filter { !except.contains($0) }.map { ("127.0.0.1:\($0)", "127.0.0.1:\($0 + offset)") }
    }

    /// The metrics port of an instance moved by `offset` (9143 for the main one).
    static func metricsPort(offset: Int) -> Int { offset == 0 ? 9143 : 19143 + offset / 100 }

    /// What a test instance changes in the example's limits unless the test's own edits name
    /// the same text: every test talks from 127.0.0.1 and many fail logins on purpose, so the
    /// per-address and failed-login limits would trip across tests (the limit tests set their
    /// own); the failure delay stays on, shorter, so every failed login still goes through it.
    static let testLimits = [
        ("max_connections_per_ip: 200", "max_connections_per_ip: 100000"),
        ("max_auth_failures_per_ip: 20", "max_auth_failures_per_ip: 100000"),
        ("max_auth_failures_per_user: 10", "max_auth_failures_per_user: 100000"),
        ("auth_failure_delay: \"2s\"", "auth_failure_delay: \"200ms\""),
    ]

    /// `edits` are (old, new) replacements applied to the example configuration text;
    /// `arguments` go to `serve` after the configuration.
    /// `keepState`: keep the holds a previous run of the same instance left (restart tests).
    init(name: String, labDirectory: String, keepState: Bool = false, edits: [(String, String)] = [],
         arguments: [String] = [], environment: [String: String] = [:], launcher: [String] = []) throws {
        var text = try String(contentsOf: Harness.repository.appendingPathComponent("config/mailswitch.example.yaml"), encoding: .utf8)
        text = text.replacingOccurrences(of: "/etc/mailswitch/ldap.secret", with: "\(labDirectory)/ldap.secret")
            .replacingOccurrences(of: "/etc/mailswitch/tls/", with: "\(labDirectory)/tls/")
            .replacingOccurrences(of: "/run/mailswitch/admin.sock", with: "\(labDirectory)/\(name).sock")
            .replacingOccurrences(of: "/var/lib/mailswitch/holds.json", with: "\(labDirectory)/\(name)-holds.json")
        for (old, new) in edits {
            guard text.contains(old) else { throw HarnessError("config edit: \(old) not found") }
            text = text.replacingOccurrences(of: old, with: new)
        }
        for (old, new) in Self.testLimits where !edits.contains(where: { $0.0 == old }) {
            guard text.contains(old) else { throw HarnessError("config edit: \(old) not found") }
            text = text.replacingOccurrences(of: old, with: new)
        }
        // Debug level everywhere: scripts/test checks afterwards that no log of the run holds a
        // password or a SASL payload (Tests/Fixtures/logcheck.py).
        text = text.replacingOccurrences(of: "  level: info ", with: "  level: debug ")
        configPath = "\(labDirectory)/\(name).yaml"
        // A hold left by an earlier run of the same instance must not leak into this one.
        if !keepState { try? FileManager.default.removeItem(atPath: "\(labDirectory)/\(name)-holds.json") }
        logPath = "\(labDirectory)/\(name).log"
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        // `launcher`: a program that starts mailswitch (systemd-socket-activate, for example).
        if let program = launcher.first {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = Array(launcher.dropFirst()) + [Harness.mailswitchBinary.path, "serve", "--config", configPath] + arguments
        } else {
            process.executableURL = Harness.mailswitchBinary
            process.arguments = ["serve", "--config", configPath] + arguments
        }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        exitWatch = ExitWatch(process)
        try process.run()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The log's last lines, for failure messages (the main instance's whole log is long).
    func logTail(_ lines: Int = 40) -> String {
        log.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// The log's length in bytes now: `log(since:)` gives only what was written after it.
    var logMark: UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: logPath))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    func log(since mark: UInt64) -> String {
        guard let handle = FileHandle(forReadingAtPath: logPath) else { return "" }
        defer { try? handle.close() }
        guard (try? handle.seek(toOffset: mark)) != nil else { return "" }
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    }

    /// Waits for a log line (written after `mark`) containing every one of `texts`; returns it,
    /// throws naming it (and showing the log's tail) after `timeout`.
    @discardableResult
    func waitForLogLine(_ texts: String..., since mark: UInt64 = 0, timeout: Double = 10,
                        file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try Harness.waitFor("a line with \(texts) in \(logPath):\n\(logTail())", timeout: timeout, file: file, line: line) {
            log(since: mark).split(separator: "\n").first { line in texts.allSatisfy { line.contains($0) } }.map(String.init)
        }
    }

    /// True once the process has exited (within `timeout`).
    func waitForExit(within timeout: Double) -> Bool { exitWatch.wait(timeout: timeout) }

    /// SIGTERM lets open sessions finish for shutdown_grace; a second one, if it has not exited
    /// 3 s later, ends it at once (tear-down: no test waits for that).
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        if !exitWatch.wait(timeout: 3) { process.terminate() }
        process.waitUntilExit()
    }
}

/// A listening socket on 127.0.0.1 that never accepts or says a word: the kernel completes
/// connections into its backlog, so a client sees a server hung before its first byte.
final class SilentListener {
    private let fd: Int32

    /// Throws when the port cannot be bound or listened on: the case `purpose` names would
    /// otherwise not be tested.
    init(port: Int, purpose: String) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            Glibc.close(fd)
            throw HarnessError("port \(port) is taken: \(purpose) would not be tested")
        }
    }

    func close() { Glibc.close(fd) }
}

/// A blocking line-oriented TCP client for raw protocol checks, with a receive timeout.
final class RawClient {
    private let fd: Int32
    private var buffer: [UInt8] = []

    /// `source`: the local address to connect from (any 127.0.0.0/8 address works on
    /// loopback), so tests can play several clients.
    init(port: Int, host: String = "127.0.0.1", source: String? = nil, timeout: Double = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                Glibc.close(fd)
                throw HarnessError("bind to \(source) failed")
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw HarnessError("connect to \(port) failed")
        }
    }

    func send(_ text: String) {
        sendBytes(Array(text.utf8))
    }

    func sendBytes(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// The next line without CRLF; nil on timeout or EOF.
    func line() -> String? {
        while true {
            if let lf = buffer.firstIndex(of: 10) {
                var line = Array(buffer[..<lf])
                buffer.removeFirst(lf + 1)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            buffer += chunk[..<n]
        }
    }

    /// Lines up to and including the first one starting with `prefix`.
    func lines(until prefix: String) -> [String] {
        var lines: [String] = []
        while let line = line() {
            lines.append(line)
            if line.hasPrefix(prefix) { break }
        }
        return lines
    }

    /// A POP3 USER/PASS login on a fresh connection: the greeting, then the answer to PASS.
    static func pop3Login(port: Int, user: String, password: String, timeout: Double = 10) throws -> (greeting: String?, answer: String?) {
        let client = try RawClient(port: port, timeout: timeout)
        defer { client.close() }
        let greeting = client.line()
        client.send("USER \(user)\r\nPASS \(password)\r\n")
        _ = client.line()
        return (greeting, client.line())
    }

    /// True when the server closed the connection (EOF) within the timeout.
    func isClosedByPeer() -> Bool {
        while let _ = line() {}
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    func close() { Glibc.close(fd) }
}

/// A fixture running beside the test (Tests/Fixtures/sessions.py, kickfetch.py): started,
/// waited for through its ready file, and read when it has finished.
final class BackgroundFixture {
    private let process = Foundation.Process()
    private let exitWatch: ExitWatch
    private let output: DataCollector
    private let errors: DataCollector
    let readyFile: String
    let stopFile: String

    /// `stoppable`: the script takes `--stop-file` (sessions.py).
    init(_ script: String, _ arguments: [String], directory: String, stoppable: Bool = false) throws {
        let name = "\(script)-\(UUID().uuidString.prefix(8))"
        readyFile = "\(directory)/\(name).ready"
        stopFile = "\(directory)/\(name).stop"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Harness.repository.appendingPathComponent("Tests/Fixtures/\(script)").path]
            + arguments + ["--ready-file", readyFile] + (stoppable ? ["--stop-file", stopFile] : [])
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        output = DataCollector(out.fileHandleForReading)
        errors = DataCollector(err.fileHandleForReading)
        exitWatch = ExitWatch(process)
        try process.run()
    }

    /// The ready file's JSON (or `[:]` for a plain-text ready file); throws after `timeout`.
    @discardableResult
    func waitUntilReady(timeout: Double = 90) throws -> [String: Any] {
        try waitForEvent(readyFile, timeout: timeout)
    }

    /// The JSON of `<ready file>.<name>`, an event file a fixture writes (atomically) later on,
    /// e.g. hostile.py slowloris's `.round` once every connection has sent a byte.
    @discardableResult
    func waitForEvent(named name: String, timeout: Double = 90) throws -> [String: Any] {
        try waitForEvent("\(readyFile).\(name)", timeout: timeout)
    }

    private func waitForEvent(_ path: String, timeout: Double) throws -> [String: Any] {
        do {
            return try Harness.waitFor("the fixture's \(path)", timeout: timeout) {
                if let data = FileManager.default.contents(atPath: path) {
                    return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
                }
                if !process.isRunning { throw HarnessError("the fixture exited without writing \(path)") }
                return nil
            }
        } catch {
            stop()
            if process.isRunning { process.terminate() }
            throw HarnessError("\(error): \(errors.finish())")
        }
    }

    /// Asks a sessions.py fixture to stop watching now.
    func stop() {
        _ = FileManager.default.createFile(atPath: stopFile, contents: Data())
    }

    /// The fixture's JSON on stdout, once it has exited; throws (and kills it) when it has not
    /// exited within `timeout`.
    func result(timeout: Double = 120) throws -> [String: Any] {
        guard exitWatch.wait(timeout: timeout) else {
            process.terminate()
            process.waitUntilExit()
            throw HarnessError("fixture did not finish within \(timeout) s: \(output.finish()) \(errors.finish())")
        }
        process.waitUntilExit()
        let text = output.finish()
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw HarnessError("fixture gave no JSON: \(text) \(errors.finish())")
        }
        return object
    }
}

/// A Unix datagram socket standing in for systemd's NOTIFY_SOCKET: collects what the service says.
final class NotifyListener {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw HarnessError("cannot bind \(path)") }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next message containing `line` (a whole KEY=value line), within `timeout` seconds.
    func wait(for line: String, timeout: Double = 10) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { continue }
            let message = String(decoding: buffer[..<n], as: UTF8.self)
            if message.split(separator: "\n").contains(Substring(line)) { return message }
        }
        return nil
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}
