#if canImport(Glibc)
import Glibc
#endif

/// A failed system call, with errno captured at once.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// The outcome of a non-blocking read or write.
public enum IOResult: Equatable, Sendable {
    case processed(Int)
    case wouldBlock
    case endOfFile
}

/// The one wrapper every syscall goes through: retries EINTR, turns EAGAIN into
/// `.wouldBlock`, and throws everything else with its errno (swift-nio's `System.swift`).
@inline(__always)
func syscall(_ name: String, _ body: () -> Int) throws(SystemError) -> IOResult {
    while true {
        let result = body()
        if result >= 0 { return .processed(result) }
        let error = Glibc.errno
        switch error {
        case EINTR: continue
        case EAGAIN, EWOULDBLOCK: return .wouldBlock
        default: throw SystemError(name, errno: error)
        }
    }
}

/// For calls where would-block is not a possible outcome.
@discardableResult
@inline(__always)
func check(_ name: String, _ body: () -> Int32) throws(SystemError) -> Int32 {
    while true {
        let result = body()
        if result >= 0 { return result }
        let error = Glibc.errno
        if error == EINTR { continue }
        throw SystemError(name, errno: error)
    }
}

public enum Signals {
    /// `write` and `splice` to a closed peer raise SIGPIPE; libldap's sockets too.
    public static func ignoreSIGPIPE() {
        signal(SIGPIPE, SIG_IGN)
    }
}
