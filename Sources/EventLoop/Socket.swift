#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

/// Thin non-blocking socket calls over a raw descriptor. Ownership of the descriptor is the
/// caller's (a `Connection` closes it once it has left its loop's readiness set).
public enum Socket {
    /// `reusePort`: one of several sockets on the same address, one per loop (`SO_REUSEPORT`).
    public static func listen(on address: SocketAddress, backlog: Int32 = 1024, reusePort: Bool = false) throws(SystemError) -> Int32 {
        let fd = try check("socket") { socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            var one: Int32 = 1
            try check("setsockopt(SO_REUSEADDR)") { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
            if reusePort { try check("setsockopt(SO_REUSEPORT)") { mailswitch_set_reuse_port(fd) } }
            try check("bind \(address)") { address.withSockaddr { bind(fd, $0, $1) } }
            try check("listen") { Glibc.listen(fd, backlog) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// nil when no connection is pending.
    public static func accept(_ fd: Int32) throws(SystemError) -> (fd: Int32, peer: SocketAddress)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try syscall("accept4") {
            Int(withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { mailswitch_accept4(fd, $0, &length) }
            })
        }
        guard case .processed(let client) = result else { return nil }
        return (Int32(client), SocketAddress(storage: storage, length: length))
    }

    /// Starts a non-blocking connect; the caller waits for writability, then calls `connectResult`.
    public static func startConnect(to address: SocketAddress) throws(SystemError) -> Int32 {
        let fd = try check("socket") { socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let result = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if result != 0 && errno != EINPROGRESS {
            let error = SystemError("connect \(address)", errno: errno)
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// 0 when the connect succeeded, else its errno.
    public static func connectResult(_ fd: Int32) -> Int32 {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { return errno }
        return error
    }

    /// Long-idle sessions (IMAP IDLE held for days) must notice a vanished peer eventually,
    /// and small protocol lines must not wait for Nagle.
    public static func configureStream(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult {
        let result = try syscall("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
        if case .processed(0) = result, buffer.count > 0 { return .endOfFile }
        return result
    }

    /// Like `read`, but the bytes stay in the socket (MSG_PEEK).
    public static func peek(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult {
        let result = try syscall("recv") { Glibc.recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_PEEK)) }
        if case .processed(0) = result, buffer.count > 0 { return .endOfFile }
        return result
    }

    public static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult {
        try syscall("write") { Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
    }

    public static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    public static func localAddress(of fd: Int32) -> SocketAddress? { SocketAddress.of(fd, getsockname) }
    public static func peerAddress(of fd: Int32) -> SocketAddress? { SocketAddress.of(fd, getpeername) }
}

extension Socket {
    /// One datagram to a Unix socket path (a leading "@" names the abstract namespace, as
    /// systemd's NOTIFY_SOCKET may). Best effort: false when it could not be sent.
    public static func sendDatagram(_ bytes: [UInt8], toUnixPath path: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let name = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !name.isEmpty, name.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in name.enumerated() { raw[index] = index == 0 && byte == UInt8(ascii: "@") ? 0 : byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (name.first == UInt8(ascii: "@") ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        let sent = bytes.withUnsafeBytes { raw in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        return sent == bytes.count
    }
}
