#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// Host names resolve off the loops: getaddrinfo blocks. Numeric addresses skip it.
public enum Resolver {
    private static let queue = DispatchQueue(label: "mailswitch.resolver", attributes: .concurrent)

    public static func resolve(host: String, port: Int, on loop: EventLoop,
                               _ completion: @escaping @Sendable (Result<[SocketAddress], SystemError>) -> Void) {
        if let address = SocketAddress(numericHost: host, port: port) {
            completion(.success([address]))
            return
        }
        queue.async {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = AF_UNSPEC
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            var addresses: [SocketAddress] = []
            if status == 0 {
                var entry = list
                while let current = entry {
                    if let sockaddrPointer = current.pointee.ai_addr {
                        var storage = sockaddr_storage()
                        withUnsafeMutableBytes(of: &storage) { target in
                            target.copyMemory(from: UnsafeRawBufferPointer(start: sockaddrPointer, count: Int(current.pointee.ai_addrlen)))
                        }
                        addresses.append(SocketAddress(storage: storage, length: current.pointee.ai_addrlen))
                    }
                    entry = current.pointee.ai_next
                }
                freeaddrinfo(list)
            }
            let result: Result<[SocketAddress], SystemError> = addresses.isEmpty
                ? .failure(SystemError("resolve \(host)", errno: status == EAI_SYSTEM ? errno : ENOENT))
                : .success(addresses)
            loop.execute { completion(result) }
        }
    }
}

/// Connects to the first address that answers, with a timeout per attempt.
/// Confined to its loop; the completion runs there exactly once.
///
/// With `peerSpeaksFirst` (an IMAP or POP3 store on a plain or STARTTLS port greets as soon
/// as it accepts), the connect counts as done when the first bytes arrive, seen by the read
/// source the session needs for the greeting anyway: no write source is made for the connect,
/// and the timeout covers the greeting too. An implicit-TLS store says nothing until the
/// client's hello, so there the write source tells when the connect completed.
public final class Connector: @unchecked Sendable {
    private let loop: EventLoop
    private var addresses: [SocketAddress]
    private let timeout: Double
    private let peerSpeaksFirst: Bool
    private var completion: ((Result<Connection, SystemError>) -> Void)?
    private var attempt: Connection?
    private var timer: LoopTimer?
    private var lastError = SystemError("connect", errno: ECONNREFUSED)
    /// Each address's outcome as it is known (nil: connected), so dead hosts can be skipped.
    public var onAttempt: ((SocketAddress, SystemError?) -> Void)?
    /// The address that answered, once connected (no `getpeername` needed).
    public private(set) var connectedAddress: SocketAddress?

    public init(loop: EventLoop, addresses: [SocketAddress], timeout: Double, peerSpeaksFirst: Bool = false,
                completion: @escaping (Result<Connection, SystemError>) -> Void) {
        self.loop = loop
        self.addresses = addresses
        self.timeout = timeout
        self.peerSpeaksFirst = peerSpeaksFirst
        self.completion = completion
    }

    public func start() {
        loop.assertOnLoop()
        next()
    }

    /// Abandons the attempt without calling the completion.
    public func cancel() {
        loop.assertOnLoop()
        completion = nil
        timer?.cancel()
        attempt?.close()
        attempt = nil
    }

    private func next() {
        guard completion != nil else { return }
        guard !addresses.isEmpty else {
            finish(.failure(lastError))
            return
        }
        let address = addresses.removeFirst()
        let fd: Int32
        do throws(SystemError) {
            fd = try Socket.startConnect(to: address)
        } catch {
            lastError = error
            onAttempt?(address, error)
            next()
            return
        }
        Socket.configureStream(fd)
        let connection = Connection(fd: fd, loop: loop)
        attempt = connection
        let settled: () -> Void = { [weak self, unowned connection] in
            guard let self else { return }
            let status = Socket.connectResult(connection.fd)
            self.timer?.cancel()
            if self.peerSpeaksFirst {
                // Reading stays on: the greeting that told us is still in the socket, and
                // the level-triggered source calls the session's reader for it at once.
                connection.onReadable = nil
            } else {
                connection.setWriting(false)
                connection.onWritable = nil
            }
            self.attempt = nil
            if status == 0 {
                self.connectedAddress = address
                self.onAttempt?(address, nil)
                self.finish(.success(connection))
            } else {
                self.lastError = SystemError("connect \(address)", errno: status)
                self.onAttempt?(address, self.lastError)
                connection.close()
                self.next()
            }
        }
        if peerSpeaksFirst {
            connection.onReadable = settled
            connection.setReading(true)
        } else {
            connection.onWritable = settled
            connection.setWriting(true)
        }
        timer = loop.schedule(after: timeout) { [weak self] in
            guard let self, let attempt = self.attempt else { return }
            self.attempt = nil
            attempt.close()
            self.lastError = SystemError("connect \(address) (timed out)", errno: ETIMEDOUT)
            self.onAttempt?(address, self.lastError)
            self.next()
        }
    }

    private func finish(_ result: Result<Connection, SystemError>) {
        let completion = self.completion
        self.completion = nil
        completion?(result)
    }
}
