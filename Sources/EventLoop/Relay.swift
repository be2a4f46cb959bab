#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

/// The transparent pump between a logged-in client and its backend. Protocol-independent:
/// after login nothing is parsed. Each direction moves bytes from one socket to the other with
/// a bounded buffer; when the destination cannot take more, the source is no longer read
/// (back-pressure), so memory per session is bounded whatever the peers do. When both legs
/// are plain sockets the bytes go through a kernel pipe with splice(2) and never enter user
/// space. An idle session holds no buffer and no pipe.
///
/// Sees the backend-to-client stream without changing it, so the session knows where the
/// protocol's responses begin and end. It sees every byte except the ones it lets pass unseen
/// (`unseenAllowance`: the rest of a literal), which may then still go through the pipe.
public protocol RelayStreamObserver: AnyObject {
    func observe(_ bytes: UnsafeRawBufferPointer)
    /// How many of the next bytes may pass without `observe`; 0 when they must be seen.
    var unseenAllowance: Int { get }
    /// `count` bytes (at most `unseenAllowance`) passed unseen.
    func passedUnseen(_ count: Int)
}

/// Rewrites a session's traffic (the read-only hold): sees every byte both ways, decides what
/// reaches the store, and may answer the client itself. A filtered session is always copied.
public protocol RelayFilter: AnyObject {
    /// Client bytes in: what goes to the store, and answers of the filter's own for the client.
    func fromClient(_ bytes: UnsafeRawBufferPointer) -> (toStore: [UInt8], toClient: [UInt8])
    /// Store bytes in: what goes to the client (the filter's answers inserted where they
    /// belong), and client bytes the filter held until the store's word and now lets go.
    func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8])
}

/// Confined to the loop of its two connections (they share one loop).
public final class Relay: @unchecked Sendable {
    public struct Totals: Sendable {
        public var clientToBackend: Int = 0
        public var backendToClient: Int = 0
        /// Both directions went through kernel pipes (no fallback to copying).
        public var spliced = false
        /// The store's leg ended first (end of stream or an error), not the client's.
        public var storeEndedFirst = false
    }

    public enum End: Sendable {
        case closed           // both sides finished cleanly
        case error(String)
        case stopped          // `stop()` was called (kick, shutdown)
    }

    private final class Direction {
        let source: Connection
        let destination: Connection
        var pending: [UInt8] = []      // copy mode: bytes read but not yet written
        var pendingOffset = 0
        var pipe: Pipe?                // splice mode: bytes sitting in the pipe
        var inPipe = 0
        var useSplice: Bool
        var sourceFinished = false     // EOF read from source
        var shutDown = false           // EOF passed on to destination
        var moved = 0

        init(from source: Connection, to destination: Connection, splice: Bool) {
            self.source = source
            self.destination = destination
            self.useSplice = splice
        }

        var hasPending: Bool { inPipe > 0 || pendingOffset < pending.count }

        /// Bytes to write after those already waiting.
        func keep(_ bytes: UnsafeRawBufferPointer) {
            if pendingOffset == pending.count {
                pending = []
                pendingOffset = 0
            }
            pending += bytes
        }
        var finished: Bool { shutDown }
    }

    private let loop: EventLoop
    private let up: Direction      // client -> backend
    private let down: Direction    // backend -> client
    private let bufferBytes: Int
    private var ended = false
    /// Which leg ended first, for the session's end reason: true for the store's.
    private var storeEndedFirst: Bool?
    private let onEnd: (End, Totals) -> Void
    /// Watches what goes to the client (IMAP: response boundaries, for a clean BYE).
    private let observer: (any RelayStreamObserver)?
    private let filter: (any RelayFilter)?

    public init(client: Connection, backend: Connection, bufferBytes: Int, allowSplice: Bool = true,
                observingBackend observer: (any RelayStreamObserver)? = nil, filter: (any RelayFilter)? = nil,
                onEnd: @escaping (End, Totals) -> Void) {
        precondition(client.loop === backend.loop, "a relay's two legs share one loop")
        loop = client.loop
        let splice = allowSplice && filter == nil && client.transport.isPlainSocket && backend.transport.isPlainSocket
        up = Direction(from: client, to: backend, splice: splice)
        down = Direction(from: backend, to: client, splice: splice)
        self.bufferBytes = min(bufferBytes, client.loop.scratch.count)
        self.onEnd = onEnd
        self.observer = observer
        self.filter = filter
    }

    public var usesSplice: Bool { up.useSplice }

    /// Bytes moved so far: client to backend, backend to client.
    public var totals: Totals {
        Totals(clientToBackend: up.moved, backendToClient: down.moved, spliced: up.useSplice && down.useSplice)
    }

    /// True when everything read from the backend has been written to the client: nothing
    /// sits in a buffer or a pipe.
    public var clientCaughtUp: Bool { !down.hasPending }

    /// Ends the session with `bytes` as the client's last words, if they can be written
    /// whole right now behind everything already relayed; otherwise just closes. Returns
    /// whether they were written.
    @discardableResult
    public func stop(sayingToClient bytes: [UInt8]) -> Bool {
        loop.assertOnLoop()
        guard !ended else { return false }
        var written = false
        if !down.hasPending && !down.shutDown {
            // One attempt: an idle session's socket buffer is empty, and a client whose buffer
            // is full is in no state to read a goodbye anyway. A part-written line would be
            // worse than none, so only a whole write counts.
            let result = bytes.withUnsafeBytes { raw in
                Result { () throws(SystemError) in try down.destination.write(from: raw) }
            }
            if case .success(.processed(let n)) = result {
                written = n == bytes.count
                down.moved += n
            }
        }
        finish(.stopped)
        return written
    }

    /// Starts pumping. `toBackend`/`toClient` are bytes already read during login that belong
    /// to the other side (pipelined commands, trailing backend data).
    public func start(toBackend: [UInt8], toClient: [UInt8]) {
        loop.assertOnLoop()
        for direction in [up, down] {
            direction.source.onReadable = { [weak self, unowned direction] in self?.readable(direction) }
            direction.destination.onWritable = { [weak self, unowned direction] in self?.writable(direction) }
            direction.destination.onError = nil
            direction.destination.onOutboxDrained = nil
        }
        if let filter {
            // The store's leftovers first: the filter's answers to pipelined commands follow them.
            if !toClient.isEmpty {
                let (forward, released) = toClient.withUnsafeBytes { filter.fromStore($0) }
                queue(forward, on: down)
                queue(released, on: up)
            }
            let (forward, replies) = toBackend.withUnsafeBytes { filter.fromClient($0) }
            queue(forward, on: up)
            queue(replies, on: down)
        } else {
            if !toBackend.isEmpty { queue(toBackend, on: up) }
            if !toClient.isEmpty { queue(toClient, on: down) }
        }
        for direction in [up, down] where !ended {
            if direction.hasPending { flush(direction) } else { direction.source.setReading(true) }
        }
    }

    public func stop() {
        loop.assertOnLoop()
        finish(.stopped)
    }

    private func queue(_ bytes: [UInt8], on direction: Direction) {
        guard !bytes.isEmpty else { return }
        if direction === down, let observer { bytes.withUnsafeBytes { observer.observe($0) } }
        bytes.withUnsafeBytes { direction.keep($0) }
        direction.moved += bytes.count
    }

    /// Reads per wake-up at most, while the input comes in bulk.
    static let readsPerWakeUp = 4
    /// A read at least this big says more is probably waiting (a full TLS record's plaintext
    /// is 16 KiB); a smaller one, a command or a reply, is not followed by a read that would
    /// only find nothing.
    static let bulkReadBytes = 16_384

    /// A bulk transfer is read a few times per readiness event, which saves the waits and
    /// the wake-ups in between; a bounded few, so that one big FETCH does not hold up the
    /// loop's other sessions (the level-triggered readiness set reports what is left).
    private func readable(_ direction: Direction) {
        if let refused = direction.source.refused ?? direction.destination.refused {
            finish(.error(refused.description))
            return
        }
        for _ in 0..<Self.readsPerWakeUp {
            guard !ended, !direction.sourceFinished, !direction.hasPending else { return }
            let read: Int
            do throws(SystemError) {
                read = direction.useSplice ? try spliceIn(direction) : try copyIn(direction)
            } catch {
                if storeEndedFirst == nil { storeEndedFirst = direction === down }
                finish(.error(error.description))
                return
            }
            guard read >= Self.bulkReadBytes else { return }
        }
    }

    /// One read and what follows it; returns the bytes read (0 when none were waiting, or at
    /// the end of the stream).
    private func copyIn(_ direction: Direction) throws(SystemError) -> Int {
        let (result, buffer) = try direction.source.readIntoScratch(max: bufferBytes)
        switch result {
        case .wouldBlock:
            return 0
        case .endOfFile:
            sourceEnded(direction)
            return 0
        case .processed(let count):
            direction.moved += count
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            guard let filter else {
                if direction === down, let observer { observer.observe(chunk) }
                try pass(chunk, on: direction)
                return count
            }
            // What the filter says for the other side (its own answers to the client, or client
            // bytes it held for the store's word) queues behind what that side already has.
            let forward: [UInt8]
            let other: [UInt8]
            if direction === up {
                (forward, other) = filter.fromClient(chunk)
            } else {
                (forward, other) = filter.fromStore(chunk)
                if let observer { forward.withUnsafeBytes { observer.observe($0) } }
            }
            try forward.withUnsafeBytes { raw in Result { () throws(SystemError) in try pass(raw, on: direction) } }.get()
            if !other.isEmpty {
                let opposite = direction === up ? down : up
                queue(other, on: opposite)
                flush(opposite)
            }
            return count
        }
    }

    /// Writes what the destination takes now; keeps the rest and waits for it to drain.
    private func pass(_ bytes: UnsafeRawBufferPointer, on direction: Direction) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let written = try direction.destination.write(from: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            guard case .processed(let n) = written, n > 0 else { break }
            offset += n
        }
        if offset < bytes.count {
            direction.keep(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            direction.source.setReading(false)
            direction.destination.setWriting(true)
        }
    }

    private func spliceIn(_ direction: Direction) throws(SystemError) -> Int {
        // An observed stream is copied where it must be seen and spliced where it may pass
        // unseen (a literal's body): FETCH bodies still avoid user space.
        var limit = Int.max
        if direction === down, let observer {
            limit = observer.unseenAllowance
            if limit == 0 {
                return try copyIn(direction)
            }
        }
        if direction.pipe == nil {
            guard let pipe = loop.pipes.take() else {
                // Out of descriptors: this direction copies through user space from now on.
                direction.useSplice = false
                return try copyIn(direction)
            }
            direction.pipe = pipe
        }
        let pipe = direction.pipe!
        let result = try syscall("splice") { mailswitch_splice(direction.source.fd, pipe.writeFD, min(pipe.capacity, limit)) }
        switch result {
        case .wouldBlock:
            releasePipeIfEmpty(direction)
            return 0
        case .processed(0), .endOfFile:
            releasePipeIfEmpty(direction)
            sourceEnded(direction)
            return 0
        case .processed(let count):
            if direction === down, let observer { observer.passedUnseen(count) }
            direction.inPipe += count
            direction.moved += count
            try spliceOut(direction)
            return count
        }
    }

    private func spliceOut(_ direction: Direction) throws(SystemError) {
        guard let pipe = direction.pipe else { return }
        while direction.inPipe > 0 {
            let result = try syscall("splice") { mailswitch_splice(pipe.readFD, direction.destination.fd, direction.inPipe) }
            guard case .processed(let n) = result, n > 0 else { break }
            direction.inPipe -= n
        }
        if direction.inPipe > 0 {
            direction.source.setReading(false)
            direction.destination.setWriting(true)
        } else {
            releasePipeIfEmpty(direction)
        }
    }

    private func releasePipeIfEmpty(_ direction: Direction) {
        if direction.inPipe == 0, let pipe = direction.pipe {
            direction.pipe = nil
            loop.pipes.give(pipe)
        }
    }

    private func writable(_ direction: Direction) {
        guard !ended else { return }
        flush(direction)
    }

    /// Writes what is pending; when drained, reading the source resumes.
    private func flush(_ direction: Direction) {
        do throws(SystemError) {
            if direction.inPipe > 0 {
                try spliceOut(direction)
            }
            while direction.pendingOffset < direction.pending.count {
                let offset = direction.pendingOffset
                let result = try direction.pending.withUnsafeBytes { raw in
                    Result { () throws(SystemError) in
                        try direction.destination.write(from: UnsafeRawBufferPointer(rebasing: raw[offset...]))
                    }
                }.get()
                guard case .processed(let n) = result, n > 0 else { break }
                direction.pendingOffset += n
            }
        } catch {
            if storeEndedFirst == nil { storeEndedFirst = direction === up }
            finish(.error(error.description))
            return
        }
        if direction.hasPending {
            direction.source.setReading(false)
            direction.destination.setWriting(true)
            return
        }
        direction.pending = []
        direction.pendingOffset = 0
        direction.destination.setWriting(false)
        if direction.sourceFinished {
            passEndOfFile(direction)
        } else {
            direction.source.setReading(true)
        }
    }

    private func sourceEnded(_ direction: Direction) {
        direction.sourceFinished = true
        if storeEndedFirst == nil { storeEndedFirst = direction === down }
        direction.source.setReading(false)
        if !direction.hasPending { passEndOfFile(direction) }
    }

    /// Half-close: the peer that finished sending gets its EOF passed on; the other direction
    /// keeps flowing until it finishes too.
    private func passEndOfFile(_ direction: Direction) {
        guard !direction.shutDown else { return }
        direction.shutDown = true
        direction.destination.shutdownWrite()
        if up.finished && down.finished { finish(.closed) }
    }

    private func finish(_ end: End) {
        guard !ended else { return }
        ended = true
        for direction in [up, down] {
            direction.pipe = nil   // may hold data: not returned to the pool
            direction.pending = []
        }
        up.source.close()
        down.source.close()
        onEnd(end, Totals(clientToBackend: up.moved, backendToClient: down.moved,
                          spliced: up.useSplice && down.useSplice, storeEndedFirst: storeEndedFirst ?? false))
    }
}
