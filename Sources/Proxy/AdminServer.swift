#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import Logging

/// Serves the admin socket: one JSON request line in, one JSON response line out, then the
/// connection is closed (see `AdminProtocol`). Runs on one event loop; the work behind a
/// request (the registry, the directory) hops wherever it needs and answers back here.
final class AdminServer: Sendable {
    private let listener: UnixListener

    init(path: String, loop: EventLoop, logger: Logger,
         handle: @escaping @Sendable (AdminRequest, @escaping @Sendable (AdminResponse) -> Void) -> Void) throws(SystemError) {
        listener = try UnixListener(path: path, mode: 0o660, loop: loop) { fd in
            AdminConnection(fd: fd, loop: loop, logger: logger, handle: handle).start()
        }
    }

    func close() { listener.close() }
}

/// One CLI connection. `@unchecked Sendable`: confined to its loop.
private final class AdminConnection: @unchecked Sendable {
    private let connection: Connection
    private let loop: EventLoop
    private let logger: Logger
    private let handle: @Sendable (AdminRequest, @escaping @Sendable (AdminResponse) -> Void) -> Void
    private var received: [UInt8] = []
    private var selfReference: AdminConnection?
    private var timer: LoopTimer?

    init(fd: Int32, loop: EventLoop, logger: Logger,
         handle: @escaping @Sendable (AdminRequest, @escaping @Sendable (AdminResponse) -> Void) -> Void) {
        connection = Connection(fd: fd, loop: loop)
        self.loop = loop
        self.logger = logger
        self.handle = handle
    }

    func start() {
        selfReference = self
        connection.onReadable = { [unowned self] in read() }
        connection.onError = { [unowned self] _ in close() }
        // A client that connects and says nothing must not hold a descriptor for ever.
        timer = loop.schedule(after: 30) { [weak self] in
            guard let self else { return }
            self.loop.execute { self.close() }
        }
        connection.setReading(true)
    }

    private func read() {
        guard let (result, buffer) = try? connection.readIntoScratch(max: 16_384) else { return close() }
        switch result {
        case .wouldBlock:
            return
        case .endOfFile:
            close()
        case .processed(let count):
            received += buffer[0..<count]
            if let newline = received.firstIndex(of: 10) {
                connection.setReading(false)
                respond(to: received[..<newline])
            } else if received.count > AdminCodec.maxRequestBytes {
                reply(.failure(.badRequest, "request line longer than \(AdminCodec.maxRequestBytes) bytes"))
            }
        }
    }

    private func respond(to line: ArraySlice<UInt8>) {
        let request: AdminRequest
        do {
            request = try AdminCodec.decode(AdminRequest.self, from: line)
        } catch {
            return reply(.failure(.badRequest, "not a request: \(error)"))
        }
        logger.info("admin: \(request.command.rawValue)", metadata: request.user.map { ["user": "\(LogText.escaped($0))"] } ?? [:])
        handle(request) { [self] response in
            loop.execute { [self] in reply(response) }
        }
    }

    private func reply(_ response: AdminResponse) {
        connection.setReading(false)
        connection.onOutboxDrained = { [unowned self] in close() }
        connection.send(AdminCodec.encode(response))
    }

    private func close() {
        guard selfReference != nil else { return }
        timer?.cancel()
        connection.close()
        loop.execute { [self] in selfReference = nil }
    }
}
