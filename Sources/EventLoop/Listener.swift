#if canImport(Glibc)
import Glibc
#endif
import CMailSwitchShims
import Dispatch

/// A listening address. With several loops, each loop has a socket of its own on the address
/// (SO_REUSEPORT: the kernel spreads new connections over them) and accepts on its own queue,
/// so an accepted connection starts on the loop that accepted it with no hop to another
/// thread. A socket passed by the service manager is one socket: the first loop accepts on it
/// and hands connections round-robin to the others.
public final class Listener: @unchecked Sendable {
    public let address: SocketAddress
    private let sockets: [AcceptSocket]

    /// `onAccept` runs on the connection's own loop.
    /// `inherited`: a listening socket the service manager opened for us (socket activation);
    /// otherwise sockets are bound to `address`.
    public init(address: SocketAddress, inherited: Int32? = nil, group: EventLoopGroup,
                onAccept: @escaping @Sendable (_ fd: Int32, _ peer: SocketAddress, _ loop: EventLoop) -> Void,
                onError: @escaping @Sendable (SystemError) -> Void) throws(SystemError) {
        if let inherited {
            // Accepting must never block the loop.
            _ = fcntl(inherited, F_SETFL, fcntl(inherited, F_GETFL) | O_NONBLOCK)
            _ = fcntl(inherited, F_SETFD, FD_CLOEXEC)
            self.address = Socket.localAddress(of: inherited) ?? address
            sockets = [AcceptSocket(fd: inherited, loop: group.loops[0], group: group, onAccept: onAccept, onError: onError)]
            return
        }
        guard group.loops.count > 1 else {
            let fd = try Socket.listen(on: address)
            self.address = Socket.localAddress(of: fd) ?? address
            sockets = [AcceptSocket(fd: fd, loop: group.loops[0], group: nil, onAccept: onAccept, onError: onError)]
            return
        }
        // SO_REUSEPORT would let a second mailswitch (same user) share the port silently
        // instead of failing: a plain bind first proves the address is free, and names the
        // port when the configuration asked for port 0.
        let probe = try Socket.listen(on: address, backlog: 1)
        let bound = Socket.localAddress(of: probe) ?? address
        Glibc.close(probe)
        var fds: [Int32] = []
        do throws(SystemError) {
            for _ in group.loops { fds.append(try Socket.listen(on: bound, reusePort: true)) }
        } catch {
            fds.forEach { Glibc.close($0) }
            throw error
        }
        self.address = bound
        sockets = zip(fds, group.loops).map { fd, loop in
            AcceptSocket(fd: fd, loop: loop, group: nil, onAccept: onAccept, onError: onError)
        }
    }

    /// Stops accepting; sessions already accepted carry on.
    public func close() {
        sockets.forEach { $0.close() }
    }
}

/// One listening socket accepted on one loop's queue.
///
/// `@unchecked Sendable`: `open` and `paused` are touched on the loop's queue only.
private final class AcceptSocket: @unchecked Sendable {
    private let source: any DispatchSourceRead
    private let queue: DispatchQueue
    private var open = true
    private var paused = false

    /// `group`: hand each connection to the next loop (a single socket for several loops);
    /// nil: keep it on this loop.
    init(fd: Int32, loop: EventLoop, group: EventLoopGroup?,
         onAccept: @escaping @Sendable (_ fd: Int32, _ peer: SocketAddress, _ loop: EventLoop) -> Void,
         onError: @escaping @Sendable (SystemError) -> Void) {
        queue = loop.queue
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
        source.setEventHandler { [unowned self] in
            // A bounded batch per wake-up keeps one burst from starving the loop's sessions.
            for _ in 0..<64 {
                do throws(SystemError) {
                    guard let (client, peer) = try Socket.accept(fd) else { return }
                    Socket.configureStream(client)
                    let target = group?.nextLoop() ?? loop
                    if target === loop {
                        onAccept(client, peer, loop)
                    } else {
                        target.execute { onAccept(client, peer, target) }
                    }
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
        queue.asyncAfter(deadline: .now() + seconds) { [self] in
            guard paused else { return }
            paused = false
            source.resume()
        }
    }

    func close() {
        queue.async { [self] in
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
