#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Dispatch

/// How accepted connections are spread over the loops.
public enum AcceptDistribution: String, Sendable, CaseIterable {
    /// One listening socket, watched by the first loop, which accepts and hands each
    /// connection to the next loop round-robin (a queue hop for those that go elsewhere).
    case handover
    /// A listening socket per loop on the same address (`SO_REUSEPORT`): the kernel spreads
    /// connections by a hash of their addresses, and each loop accepts its own, with no hop.
    /// A socket the service manager passed is one socket, so it is always handed over.
    case perLoop = "per-loop"

    /// Measured against each other in the README's performance section.
    public static let defaultChoice = AcceptDistribution.handover
}

/// A listening address: one socket, or one per loop (`AcceptDistribution`). Each accepted
/// descriptor lives on its loop from then on.
public final class Listener: @unchecked Sendable {
    public let address: SocketAddress
    private let sockets: [ListeningSocket]

    /// `onAccept` runs on the connection's own loop. `inherited`: a listening socket the
    /// service manager opened for us (socket activation); otherwise one is bound to `address`.
    public init(address: SocketAddress, inherited: Int32? = nil, group: EventLoopGroup,
                onAccept: @escaping @Sendable (_ fd: Int32, _ peer: SocketAddress, _ loop: EventLoop) -> Void,
                onError: @escaping @Sendable (SystemError) -> Void) throws(SystemError) {
        var descriptors: [(Int32, EventLoop)] = []
        if let inherited {
            // Accepting must never block the loop.
            _ = fcntl(inherited, F_SETFL, fcntl(inherited, F_GETFL) | O_NONBLOCK)
            _ = fcntl(inherited, F_SETFD, FD_CLOEXEC)
            descriptors = [(inherited, group.loops[0])]
        } else if group.acceptDistribution == .perLoop && group.loops.count > 1 {
            do throws(SystemError) {
                // Port 0 picks a free port with the first socket; the others take the same one.
                var bound = address
                for loop in group.loops {
                    let fd = try Socket.listen(on: bound, reusePort: true)
                    descriptors.append((fd, loop))
                    if let local = Socket.localAddress(of: fd) { bound = local }
                }
            } catch {
                descriptors.forEach { Glibc.close($0.0) }
                throw error
            }
        } else {
            descriptors = [(try Socket.listen(on: address), group.loops[0])]
        }
        self.address = Socket.localAddress(of: descriptors[0].0) ?? address
        let handsOver = descriptors.count == 1 && group.loops.count > 1
        // An accepted socket takes SO_KEEPALIVE and TCP_NODELAY from its listening socket
        // (Linux copies the listener's options; EventLoopTests check it): two system calls
        // per connection saved.
        descriptors.forEach { Socket.configureStream($0.0) }
        sockets = descriptors.map { fd, loop in
            ListeningSocket(fd: fd, loop: loop, onAccept: { client, peer in
                guard handsOver else { return onAccept(client, peer, loop) }
                let target = group.nextLoop()
                if target === loop { onAccept(client, peer, target) } else { target.execute { onAccept(client, peer, target) } }
            }, onError: onError)
        }
    }

    /// Stops accepting; sessions already accepted carry on.
    public func close() {
        sockets.forEach { $0.close() }
    }
}

/// One listening descriptor in one loop's readiness set (TCP, or the admin socket).
///
/// `@unchecked Sendable`: its state is touched on its loop's queue only.
final class ListeningSocket: ReadinessHandler, @unchecked Sendable {
    private let fd: Int32
    private let loop: EventLoop
    private var registration = Registration(fd: -1, generation: 0)
    private var open = true
    private var paused = false
    private let onAccept: (_ fd: Int32, _ peer: SocketAddress) -> Void
    private let onError: @Sendable (SystemError) -> Void
    /// A bounded batch per event keeps one burst from starving the loop's sessions.
    static let acceptsPerEvent = 64

    init(fd: Int32, loop: EventLoop, onAccept: @escaping (_ fd: Int32, _ peer: SocketAddress) -> Void,
         onError: @escaping @Sendable (SystemError) -> Void) {
        self.fd = fd
        self.loop = loop
        self.onAccept = onAccept
        self.onError = onError
        loop.execute { [self] in
            registration = loop.readiness.register(fd, self, shared: true)
            setAccepting(true)
        }
    }

    private func setAccepting(_ on: Bool) {
        loop.readiness.setInterest(on ? .input : .none, of: registration)
    }

    func refused(_ error: SystemError) {
        onError(error)
    }

    func ready(_ events: UInt32) {
        guard open, !paused else { return }
        for _ in 0..<Self.acceptsPerEvent {
            do throws(SystemError) {
                guard let (client, peer) = try Socket.accept(fd) else { return }
                onAccept(client, peer)
            } catch {
                onError(error)
                // Out of descriptors or memory: the pending connection stays queued and the
                // level-triggered set would report it at once again, spinning a core and
                // flooding the log. Stop listening briefly instead.
                pause(seconds: 0.1)
                return
            }
        }
    }

    private func pause(seconds: Double) {
        paused = true
        setAccepting(false)
        loop.schedule(after: seconds) { [self] in
            guard open, paused else { return }
            paused = false
            setAccepting(true)
        }
    }

    func close() {
        loop.execute { [self] in
            guard open else { return }
            open = false
            loop.readiness.unregister(registration)
            Glibc.close(fd)
        }
    }
}
