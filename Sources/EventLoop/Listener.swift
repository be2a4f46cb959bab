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
    private var paused = false

    /// `onAccept` runs on the connection's own loop.
    /// `inherited`: a listening socket the service manager opened for us (socket activation);
    /// otherwise one is bound to `address`.
    public init(address: SocketAddress, inherited: Int32? = nil, group: EventLoopGroup,
                onAccept: @escaping @Sendable (_ fd: Int32, _ peer: SocketAddress, _ loop: EventLoop) -> Void,
                onError: @escaping @Sendable (SystemError) -> Void) throws(SystemError) {
        let fd: Int32
        if let inherited {
            // Accepting must never block the loop.
            _ = fcntl(inherited, F_SETFL, fcntl(inherited, F_GETFL) | O_NONBLOCK)
            _ = fcntl(inherited, F_SETFD, FD_CLOEXEC)
            fd = inherited
        } else {
            fd = try Socket.listen(on: address)
        }
        self.fd = fd
        self.address = Socket.localAddress(of: fd) ?? address
        self.group = group
        self.acceptQueue = group.loops[0].queue
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: acceptQueue)
        source.setEventHandler { [unowned self, group] in
            // A bounded batch per wake-up keeps one burst from starving the loop's sessions.
            for _ in 0..<64 {
                do throws(SystemError) {
                    guard let (client, peer) = try Socket.accept(fd) else { return }
                    Socket.configureStream(client)
                    let loop = group.nextLoop()
                    loop.execute { onAccept(client, peer, loop) }
                } catch {
                    onError(error)
                    // Out of descriptors or memory: the pending connection stays queued and the
                    // level-triggered source would fire at once again, spinning a core and
                    // flooding the log. Pause accepting briefly instead.
                    pause(seconds: 0.1)
                    return
                }
            }
        }
        source.setCancelHandler { Glibc.close(fd) }
        source.resume()
    }

    private func pause(seconds: Double) {
        guard open, !paused else { return }
        paused = true
        source.suspend()
        acceptQueue.asyncAfter(deadline: .now() + seconds) { [self] in
            guard paused else { return }
            paused = false
            source.resume()
        }
    }

    /// Stops accepting; sessions already accepted carry on.
    public func close() {
        acceptQueue.async { [self] in
            guard open else { return }
            open = false
            if paused {
                paused = false
                source.resume()   // a suspended source must not be cancelled
            }
            source.cancel()
        }
    }
}
