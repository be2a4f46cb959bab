#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Configuration
import Foundation
import Proxy

/// The CLI's side of the admin socket: one request, one answer (see `AdminProtocol`).
struct AdminClient {
    /// Exit statuses shared by every admin command, so scripts can tell the cases apart.
    enum Status: Int32 {
        case notFound = 1       // unknown user, no such session or hold
        case unavailable = 2    // route: the directory could not answer, or the user is held
        case noDaemon = 3       // nothing listens on the socket
        case denied = 4         // the socket's permissions keep this user out
        case refused = 5        // the service refused or failed the request
    }

    struct Failure: Error {
        let status: Status
        let message: String
    }

    let socketPath: String

    func send(_ request: AdminRequest, timeout: Int = 30) throws(Failure) -> AdminResponse {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(status: .refused, message: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in socketPath.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if connected != 0 {
            let error = errno
            switch error {
            case EACCES, EPERM:
                throw Failure(status: .denied, message: "permission denied on \(socketPath): run as the service's user or a member of its group")
            case ENOENT, ECONNREFUSED:
                throw Failure(status: .noDaemon, message: "no mailswitch is running (nothing answers on \(socketPath))")
            default:
                throw Failure(status: .noDaemon, message: "cannot reach \(socketPath): \(String(cString: strerror(error)))")
            }
        }
        let line = AdminCodec.encode(request)
        let sent = line.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == line.count else { throw Failure(status: .noDaemon, message: "the service closed the admin connection") }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while !received.contains(10) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            received += chunk[..<n]
        }
        guard let newline = received.firstIndex(of: 10),
              let response = try? AdminCodec.decode(AdminResponse.self, from: received[..<newline]) else {
            throw Failure(status: .refused, message: "no answer from the service on \(socketPath)")
        }
        return response
    }
}

/// `--config` for the admin commands: only the socket's path is read from it.
struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: "Path to the YAML configuration (only admin.socket is read).")
    var config: String = "/etc/mailswitch/mailswitch.yaml"

    @Flag(help: "Print the service's answer as JSON.")
    var json = false

    func client() throws -> AdminClient {
        do {
            return AdminClient(socketPath: try ConfigLoader(path: config).adminSocketPath())
        } catch {
            fail(.refused, "configuration error: \(error.description)")
        }
    }

    /// Sends the request; prints a one-line error and exits with the status of its kind.
    func ask(_ request: AdminRequest) throws -> AdminResponse {
        let response: AdminResponse
        do {
            response = try client().send(request)
        } catch let failure as AdminClient.Failure {
            fail(failure.status, failure.message)
        }
        if json { print(String(decoding: AdminCodec.encode(response).dropLast(), as: UTF8.self)) }
        guard response.ok else {
            fail(response.kind == .notFound ? .notFound : .refused, response.error ?? "the request failed")
        }
        return response
    }
}

func fail(_ status: AdminClient.Status, _ message: String) -> Never {
    FileHandle.standardError.write(Data("mailswitch: \(message)\n".utf8))
    exit(status.rawValue)
}
