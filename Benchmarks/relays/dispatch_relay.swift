// The Dispatch floor for point 3 of the performance issue: a minimal TCP relay on the old
// design's terms (non-blocking sockets, one read source per socket, a write source only while a
// destination is full, serial queues as loops), without protocol, routing or TLS: that
// design's floor (mailswitch now has an epoll set per loop instead). Each LISTEN=BACKEND pair
// forwards every connection to one backend.
//   dispatch_relay 127.0.0.1:7143=127.0.0.2:10443 ...
// Benchmarks/relays.py builds it with the old design's epoll_wait shim (the libdispatch hang-up
// race, Benchmarks/hangup_race/epoll_hangup.c) and runs it until killed.
import Dispatch
import Glibc

func address(_ text: Substring) -> sockaddr_in {
    let parts = text.split(separator: ":")
    var result = sockaddr_in()
    result.sin_family = sa_family_t(AF_INET)
    result.sin_port = in_port_t(UInt16(parts[1])!).bigEndian
    guard inet_pton(AF_INET, String(parts[0]), &result.sin_addr) == 1 else { fatalError("bad address \(text)") }
    return result
}

let loops = (0..<max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))).map { DispatchQueue(label: "relay.loop\($0)") }

/// One direction of a connection. `@unchecked Sendable`: touched only on its loop's queue.
final class Direction: @unchecked Sendable {
    let from: Int32, to: Int32
    let reader: any DispatchSourceRead
    var writer: (any DispatchSourceWrite)?
    var buffer = [UInt8](repeating: 0, count: 65536)
    var start = 0, length = 0
    var reading = true, writing = false, done = false
    unowned(unsafe) var connection: Connection!

    init(from: Int32, to: Int32, queue: DispatchQueue) {
        self.from = from
        self.to = to
        reader = DispatchSource.makeReadSource(fileDescriptor: from, queue: queue)
    }

    func readable() {
        let n = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
        if n < 0 && errno == EAGAIN { return }
        guard n > 0 else {
            if n < 0 { return connection.end() }
            done = true
            setReading(false)
            shutdown(to, Int32(SHUT_WR))
            return connection.directionEnded()
        }
        start = 0
        length = n
        flush()
    }

    func flush() {
        while length > 0 {
            let n = buffer.withUnsafeBytes { write(to, $0.baseAddress! + start, length) }
            if n < 0 {
                if errno != EAGAIN { return connection.end() }
                setReading(false)
                setWriting(true)
                return
            }
            start += n
            length -= n
        }
        setWriting(false)
        setReading(true)
    }

    func setReading(_ on: Bool) {
        guard on != reading, !done || !on else { return }
        reading = on
        if on { reader.resume() } else { reader.suspend() }
    }

    func setWriting(_ on: Bool) {
        guard on != writing else { return }
        writing = on
        if writer == nil {
            let source = DispatchSource.makeWriteSource(fileDescriptor: to, queue: connection.queue)
            source.setEventHandler { [unowned self] in flush() }
            writer = source
        }
        if on { writer!.resume() } else { writer!.suspend() }
    }
}

/// A client and its backend. `@unchecked Sendable`: touched only on `queue`.
final class Connection: @unchecked Sendable {
    let queue: DispatchQueue
    let client: Int32, backend: Int32
    let up: Direction, down: Direction
    var ended = false

    init(client: Int32, backend: Int32, queue: DispatchQueue) {
        self.queue = queue
        self.client = client
        self.backend = backend
        up = Direction(from: client, to: backend, queue: queue)
        down = Direction(from: backend, to: client, queue: queue)
        for direction in [up, down] {
            direction.connection = self
            direction.reader.setEventHandler { [self] in if !ended { direction.readable() } }
            direction.reader.activate()
        }
    }

    func directionEnded() {
        if up.done && down.done { end() }
    }

    /// Sources resumed, then cancelled; each socket closed when its last source is gone.
    func end() {
        guard !ended else { return }
        ended = true
        var remaining = [client: 0, backend: 0]
        var sources: [(Int32, any DispatchSourceProtocol)] = []
        for direction in [up, down] {
            if !direction.reading { direction.reader.resume() }
            sources.append((direction.from, direction.reader))
            if let writer = direction.writer {
                if !direction.writing { writer.resume() }
                sources.append((direction.to, writer))
            }
        }
        for (fd, _) in sources { remaining[fd]! += 1 }
        for (fd, source) in sources {
            source.setCancelHandler { [self] in
                remaining[fd]! -= 1
                if remaining[fd]! == 0 { close(fd) }
                _ = self
            }
            source.cancel()
        }
    }
}

final class Listener: @unchecked Sendable {   // touched only on its queue
    let fd: Int32
    var backend: sockaddr_in
    let source: any DispatchSourceRead
    var next = 0

    init(listen: sockaddr_in, backend: sockaddr_in) {
        self.backend = backend
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = listen
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 1024) == 0 else { fatalError("bind/listen: errno \(errno)") }
        source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: DispatchQueue(label: "relay.accept"))
        source.setEventHandler { [unowned self] in acceptAll() }
        source.activate()
    }

    func acceptAll() {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }
            _ = fcntl(client, F_SETFL, O_NONBLOCK)
            let backendFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let connected = withUnsafePointer(to: &backend) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(backendFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 || errno == EINPROGRESS else {
                close(client)
                close(backendFD)
                continue
            }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(backendFD, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let queue = loops[next % loops.count]
            next += 1
            // The connection keeps itself alive through its sources' handlers until it ends.
            queue.async { _ = Connection(client: client, backend: backendFD, queue: queue) }
        }
    }
}

signal(SIGPIPE, SIG_IGN)
var listeners: [Listener] = []
for argument in CommandLine.arguments.dropFirst() {
    let pair = argument.split(separator: "=")
    guard pair.count == 2 else { fatalError("usage: dispatch_relay LISTEN=BACKEND ...") }
    listeners.append(Listener(listen: address(pair[0]), backend: address(pair[1])))
}
if listeners.isEmpty { fatalError("usage: dispatch_relay LISTEN=BACKEND ...") }
dispatchMain()
