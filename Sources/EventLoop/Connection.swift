#if canImport(Glibc)
import Glibc
#endif
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

/// One socket on one loop: its descriptor, a read source, a write source made on first need,
/// and an outbox for protocol replies.
///
/// `@unchecked Sendable`: all mutable state is confined to `loop.queue`; every entry point
/// asserts it. Dispatch sources must be resumed before they are cancelled, and the descriptor
/// is closed only in the last cancel handler, after every source on it is gone.
public final class Connection: @unchecked Sendable {
    public let fd: Int32
    public let loop: EventLoop
    public var transport: any Transport

    private let readSource: any DispatchSourceRead
    private var writeSource: (any DispatchSourceWrite)?
    private var reading = false
    private var announcing = false
    private var writing = false
    public private(set) var isClosed = false

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

    public init(fd: Int32, loop: EventLoop, transport: any Transport = PlainTransport.shared) {
        self.fd = fd
        self.loop = loop
        self.transport = transport
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: loop.queue)
        EventLoopStatistics.count(EventLoopStatistics.readSources)
        readSource.setEventHandler { [weak self] in
            guard let self, !self.isClosed else { return }
            self.onReadable?()
            self.announceBufferedInput()
        }
    }

    /// Calls the read handler again, on a later turn of the loop, while the transport holds
    /// input the socket no longer signals.
    private func announceBufferedInput() {
        guard reading, !isClosed, transport.hasBufferedInput, !announcing else { return }
        announcing = true
        loop.queue.async { [weak self] in
            guard let self else { return }
            self.announcing = false
            guard self.reading, !self.isClosed, self.transport.hasBufferedInput else { return }
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
        if on {
            EventLoopStatistics.count(EventLoopStatistics.resumes)
            readSource.resume()
            announceBufferedInput()
        } else {
            EventLoopStatistics.count(EventLoopStatistics.suspends)
            readSource.suspend()
        }
    }

    public func setWriting(_ on: Bool) {
        loop.assertOnLoop()
        guard !isClosed, on != writing else { return }
        writing = on
        let source = writeSource ?? makeWriteSource()
        if on {
            EventLoopStatistics.count(EventLoopStatistics.resumes)
            source.resume()
        } else {
            EventLoopStatistics.count(EventLoopStatistics.suspends)
            source.suspend()
        }
    }

    private func makeWriteSource() -> any DispatchSourceWrite {
        let source = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: loop.queue)
        EventLoopStatistics.count(EventLoopStatistics.writeSources)
        source.setEventHandler { [weak self] in
            guard let self, !self.isClosed else { return }
            if self.outboxCount > 0 { self.flushOutbox() } else { self.onWritable?() }
        }
        writeSource = source
        return source
    }

    /// Reads into the loop's scratch buffer; the slice is valid until the next read on this loop.
    public func readIntoScratch(max: Int = Int.max) throws(SystemError) -> (IOResult, UnsafeMutableRawBufferPointer) {
        loop.assertOnLoop()
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
                    try transport.write(fd, from: UnsafeRawBufferPointer(rebasing: raw[outboxOffset...]))
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

    /// Cancels the sources; the descriptor is closed once both cancel handlers have run.
    public func close() {
        loop.assertOnLoop()
        guard !isClosed else { return }
        isClosed = true
        onReadable = nil
        onWritable = nil
        onOutboxDrained = nil
        onError = nil
        outbox = []
        let fd = self.fd
        let sources: [any DispatchSourceProtocol] = [readSource] + (writeSource.map { [$0] } ?? [])
        let remaining = CancelCounter(sources.count)
        for source in sources {
            source.setCancelHandler {
                if remaining.decrement() { Glibc.close(fd) }
            }
        }
        if !reading { readSource.resume() }
        if let writeSource, !writing { writeSource.resume() }
        for source in sources { source.cancel() }
    }
}

/// Counts cancel handlers on one loop queue (they run serially there).
private final class CancelCounter: @unchecked Sendable {
    private var count: Int
    init(_ count: Int) { self.count = count }
    func decrement() -> Bool {
        count -= 1
        return count == 0
    }
}
