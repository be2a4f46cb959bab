#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Dispatch

/// Bytes in and out of one descriptor: plain TCP, or a TLS session, without the protocol code
/// or the relay noticing which. `isPlainSocket` tells the relay whether splice(2) may bypass it.
public protocol Transport: AnyObject {
    var isPlainSocket: Bool { get }
    /// Input already taken from the socket but not yet read (decrypted TLS records): the
    /// level-triggered read source cannot announce it.
    var hasBufferedInput: Bool { get }
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult
    func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult
    /// Ends the sending side (TLS says close_notify first).
    func shutdownWrite(_ fd: Int32)
}

extension Transport {
    public var hasBufferedInput: Bool { false }
    public func shutdownWrite(_ fd: Int32) { Socket.shutdownWrite(fd) }
}

/// Stateless, so one instance serves every plain connection.
public final class PlainTransport: Transport, Sendable {
    public static let shared = PlainTransport()
    private init() {}
    public var isPlainSocket: Bool { true }
    public func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult {
        try Socket.read(fd, into: buffer)
    }
    public func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult {
        try Socket.write(fd, from: buffer)
    }
}

/// One socket on one loop: its descriptor, its entry in the loop's readiness set, and an
/// outbox for protocol replies.
///
/// `@unchecked Sendable`: all mutable state is confined to `loop.queue`; every entry point
/// asserts it. The descriptor is closed in `close()`, after it has left the readiness set.
public final class Connection: ReadinessHandler, @unchecked Sendable {
    public let fd: Int32
    public let loop: EventLoop
    public var transport: any Transport

    private var registration = Registration(fd: -1, generation: 0)
    private var reading = false
    private var announcing = false
    private var writing = false
    public private(set) var isClosed = false
    /// Why the readiness set refused the descriptor (out of kernel memory): every read and
    /// write then fails with it, so the owner ends the connection the ordinary way.
    public private(set) var refused: SystemError?

    private var outbox: [UInt8] = []
    private var outboxOffset = 0

    /// Called on the loop when the socket is readable (level-triggered while reading is on).
    public var onReadable: (() -> Void)?
    /// Called on the loop when the socket is writable and writing is on (used by the relay
    /// and for connect completion; the outbox handles its own writability).
    public var onWritable: (() -> Void)?
    /// Called when the outbox has been written completely.
    public var onOutboxDrained: (() -> Void)?
    /// Called once, when a write fails (peer gone).
    public var onError: ((SystemError) -> Void)?

    /// Made on `loop`'s queue.
    public init(fd: Int32, loop: EventLoop, transport: any Transport = PlainTransport.shared) {
        self.fd = fd
        self.loop = loop
        self.transport = transport
        registration = loop.readiness.register(fd, self)
    }

    /// What the kernel reported. A hang-up or an error wakes whichever side is on: the read
    /// then finds the end of the stream or the error, and the write fails, which every owner
    /// already takes as the end of the connection. Reported while neither side is on, it is
    /// reported once (see `ReadinessSet`) and left for the next interest change to find.
    func ready(_ events: UInt32) {
        guard !isClosed else { return }
        let broken = UInt32(MAILSWITCH_HANGUP) | UInt32(MAILSWITCH_ERROR)
        if reading, events & (UInt32(MAILSWITCH_READABLE) | UInt32(MAILSWITCH_READ_HANGUP) | broken) != 0 {
            onReadable?()
            announceBufferedInput()
        }
        if writing, !isClosed, events & (UInt32(MAILSWITCH_WRITABLE) | broken) != 0 {
            if outboxCount > 0 { flushOutbox() } else { onWritable?() }
        }
    }

    /// Calls the read handler again, on a later turn of the loop, while the transport holds
    /// input the socket no longer signals (or the descriptor could not be watched at all).
    private func announceBufferedInput() {
        guard reading, !isClosed, transport.hasBufferedInput || refused != nil, !announcing else { return }
        announcing = true
        loop.readiness.later { [weak self] in
            guard let self else { return }
            self.announcing = false
            guard self.reading, !self.isClosed, self.transport.hasBufferedInput || self.refused != nil else { return }
            self.onReadable?()
            self.announceBufferedInput()
        }
    }

    deinit {
        assert(isClosed, "Connection released without close(): its descriptor leaks")
    }

    public var outboxCount: Int { outbox.count - outboxOffset }

    public func setReading(_ on: Bool) {
        loop.assertOnLoop()
        guard !isClosed, on != reading else { return }
        reading = on
        updateInterest()
        if on { announceBufferedInput() }
    }

    public func setWriting(_ on: Bool) {
        loop.assertOnLoop()
        guard !isClosed, on != writing else { return }
        writing = on
        updateInterest()
    }

    private func updateInterest() {
        guard refused == nil else { return }
        var interest = Interest.none
        if reading { interest.insert(.input) }
        if writing { interest.insert(.output) }
        loop.readiness.setInterest(interest, of: registration)
    }

    func refused(_ error: SystemError) {
        guard refused == nil else { return }
        refused = error
        if writing { loop.readiness.later { [weak self] in self?.ready(UInt32(MAILSWITCH_ERROR)) } }
        announceBufferedInput()
    }

    /// Reads into the loop's scratch buffer; the slice is valid until the next read on this loop.
    public func readIntoScratch(max: Int = Int.max) throws(SystemError) -> (IOResult, UnsafeMutableRawBufferPointer) {
        loop.assertOnLoop()
        if let refused { throw refused }
        let buffer = UnsafeMutableRawBufferPointer(rebasing: loop.scratch.prefix(min(max, loop.scratch.count)))
        let result = try transport.read(fd, into: buffer)
        return (result, buffer)
    }

    /// The bytes waiting in the socket, left there (plaintext only: for what precedes TLS,
    /// such as a PROXY header, whose end must be found before anything is consumed).
    public func peekIntoScratch(max: Int) throws(SystemError) -> (IOResult, UnsafeMutableRawBufferPointer) {
        loop.assertOnLoop()
        let buffer = UnsafeMutableRawBufferPointer(rebasing: loop.scratch.prefix(min(max, loop.scratch.count)))
        return (try Socket.peek(fd, into: buffer), buffer)
    }

    public func write(from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult {
        loop.assertOnLoop()
        if let refused { throw refused }
        return try transport.write(fd, from: buffer)
    }

    /// Queues protocol bytes and writes what the socket takes now.
    public func send(_ bytes: [UInt8]) {
        loop.assertOnLoop()
        guard !isClosed, !bytes.isEmpty else { return }
        if outboxCount == 0 {
            outbox = bytes
            outboxOffset = 0
        } else {
            outbox.append(contentsOf: bytes)
        }
        flushOutbox()
    }

    private func flushOutbox() {
        while outboxCount > 0 {
            let attempt: Result<IOResult, SystemError> = outbox.withUnsafeBytes { raw in
                Result { () throws(SystemError) in
                    if let refused { throw refused }
                    return try transport.write(fd, from: UnsafeRawBufferPointer(rebasing: raw[outboxOffset...]))
                }
            }
            let result: IOResult
            switch attempt {
            case .success(let value): result = value
            case .failure(let error):
                fail(error)
                return
            }
            switch result {
            case .processed(let count):
                outboxOffset += count
            case .wouldBlock, .endOfFile:
                setWriting(true)
                return
            }
        }
        outbox = []
        outboxOffset = 0
        if writing && onWritable == nil { setWriting(false) }
        onOutboxDrained?()
    }

    private func fail(_ error: SystemError) {
        let handler = onError
        onError = nil
        handler?(error)
    }

    public func shutdownWrite() {
        guard !isClosed else { return }
        transport.shutdownWrite(fd)
    }

    /// Leaves the readiness set and closes the descriptor, at once: an event for it already
    /// fetched in this batch finds the registration gone (see `Registration`).
    public func close() {
        loop.assertOnLoop()
        guard !isClosed else { return }
        isClosed = true
        onReadable = nil
        onWritable = nil
        onOutboxDrained = nil
        onError = nil
        outbox = []
        loop.readiness.unregister(registration)
        Glibc.close(fd)
    }
}
