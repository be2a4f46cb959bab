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

public enum DescriptorLimit {
    /// Raises the soft limit on open files to the hard one (what systemd's LimitNOFILE or the
    /// shell allows): a proxy holds two descriptors per session, and the usual soft 1024
    /// would refuse accepts at about 500 sessions. Returns the limit now in force.
    @discardableResult
    public static func raiseToHard() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}

extension SystemError {
    /// Whether a failed connect says the host itself is dead (refused, unreachable, timed out,
    /// reset), so new logins should skip it. Running out of descriptors or local ports is our
    /// own trouble and says nothing about the host.
    public var saysHostIsDown: Bool {
        [ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET].contains(errno)
    }
}
