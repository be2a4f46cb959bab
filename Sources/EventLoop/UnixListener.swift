#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Dispatch

/// A listening Unix-domain stream socket (the admin socket). Who may connect is decided by
/// the file's mode and owner, set here before the first accept.
public final class UnixListener: @unchecked Sendable {
    public let path: String
    private let listening: ListeningSocket
    private let loop: EventLoop

    /// Replaces a stale socket file left by a process that died; refuses to replace anything
    /// that is not a socket. `onAccept` runs on `loop` with a non-blocking descriptor.
    public init(path: String, mode: mode_t, loop: EventLoop,
                onAccept: @escaping @Sendable (_ fd: Int32) -> Void) throws(SystemError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { throw SystemError("admin socket path \(path) is too long", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        var status = stat()
        if lstat(path, &status) == 0 {
            guard (status.st_mode & S_IFMT) == S_IFSOCK else { throw SystemError("\(path) exists and is not a socket", errno: EEXIST) }
            unlink(path)
        }
        let fd = try check("socket(AF_UNIX)") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            // The mode is right from the moment the file exists: no window where anyone may connect.
            let previous = umask(0o777 & ~mode)
            defer { umask(previous) }
            try check("bind \(path)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
            try check("chmod \(path)") { chmod(path, mode) }
            try check("listen \(path)") { Glibc.listen(fd, 64) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        self.path = path
        self.loop = loop
        listening = ListeningSocket(fd: fd, loop: loop, onAccept: { client, _ in onAccept(client) }, onError: { _ in })
    }

    /// Stops accepting and removes the socket file.
    public func close() {
        listening.close()
        loop.execute { [path] in unlink(path) }
    }
}
