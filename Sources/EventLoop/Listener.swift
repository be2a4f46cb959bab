#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// A listening socket. Accepting runs on the first loop's queue; each accepted descriptor is
/// handed to the next loop round-robin and lives there from then on.
public final class Listener: @unchecked Sendable {
    public let address: SocketAddress
    private let fd: Int32
    private let source: any DispatchSourceRead
    private let group: EventLoopGroup
    private let acceptQueue: DispatchQueue
    private var open = true

    /// `onAccept` runs on the connection's own loop.
    public init(address: SocketAddress, group: EventLoopGroup,
                onAccept: @escaping @Sendable (_ fd: Int32, _ peer: SocketAddress, _ loop: EventLoop) -> Void,
                onError: @escaping @Sendable (SystemError) -> Void) throws(SystemError) {
        let fd = try Socket.listen(on: address)
        self.fd = fd
        self.address = Socket.localAddress(of: fd) ?? address
        self.group = group
        self.acceptQueue = group.loops[0].queue
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: acceptQueue)
        source.setEventHandler { [group] in
            // A bounded batch per wake-up keeps one burst from starving the loop's sessions.
            for _ in 0..<64 {
                do throws(SystemError) {
                    guard let (client, peer) = try Socket.accept(fd) else { return }
                    Socket.configureStream(client)
                    let loop = group.nextLoop()
                    loop.execute { onAccept(client, peer, loop) }
                } catch {
                    // EMFILE and friends: report, and let the next wake-up try again.
                    onError(error)
                    return
                }
            }
        }
        source.setCancelHandler { Glibc.close(fd) }
        source.resume()
    }

    /// Stops accepting; sessions already accepted carry on.
    public func close() {
        acceptQueue.async { [self] in
            guard open else { return }
            open = false
            source.cancel()
        }
    }
}
