#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

/// Listening sockets passed by the service manager (sd_listen_fds(3)): $LISTEN_FDS descriptors
/// from 3 on, meant for us when $LISTEN_PID is our pid. Each is matched to a configured
/// listener by the address it is bound to.
public enum SocketActivation {
    /// The inherited listening TCP sockets by their bound address ("127.0.0.1:143",
    /// "[::]:993"); empty when nothing was passed.
    public static func inherited(environment: [String: String]) -> [String: Int32] {
        guard let count = environment["LISTEN_FDS"].flatMap(Int32.init), count > 0,
              environment["LISTEN_PID"].flatMap(Int32.init) == getpid() else { return [:] }
        var sockets: [String: Int32] = [:]
        for fd in 3..<(3 + count) {
            var type: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == Int32(SOCK_STREAM.rawValue),
                  let address = Socket.localAddress(of: fd) else { continue }
            sockets[address.description] = fd
        }
        return sockets
    }
}
