import EventLoop
import Logging
import class Prometheus.PrometheusCollectorRegistry

/// A minimal HTTP/1.1 server for Prometheus and load balancers, on the event loops:
/// `GET /metrics` gives the registry in the Prometheus text format, `GET /health` says 200 "ok"
/// while serving and 503 "draining" once the stop sequence has begun, anything else 404. One
/// request per connection (`Connection: close`), at most 8 KiB of request head, 10 s for the
/// whole exchange. No session is created and nothing is logged per request, so probes every
/// few seconds leave no trace in the session logs.
final class MetricsServer: Sendable {
    static let maxRequestBytes = 8192
    static let timeoutSeconds = 10.0

    private let listener: Listener

    init(address: SocketAddress, group: EventLoopGroup, registry: PrometheusCollectorRegistry, logger: Logger,
         draining: @escaping @Sendable () -> Bool) throws(SystemError) {
        listener = try Listener(address: address, group: group, onAccept: { fd, _, loop in
            HTTPExchange(fd: fd, loop: loop, logger: logger) { method, path in
                MetricsServer.respond(method: method, path: path, registry: registry, draining: draining())
            }.start()
        }, onError: { error in
            logger.error("accept failed on the metrics address \(address): \(error)")
        })
    }

    var address: SocketAddress { listener.address }

    func close() { listener.close() }

    struct Response {
        var status: Int
        var reason: String
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]
        var allow: String?
    }

    static func respond(method: String, path: String, registry: PrometheusCollectorRegistry, draining: Bool) -> Response {
        let known = path == "/metrics" || path == "/health"
        guard known else { return Response(status: 404, reason: "Not Found", body: Array("not found\n".utf8)) }
        guard method == "GET" || method == "HEAD" else {
            return Response(status: 405, reason: "Method Not Allowed", body: Array("GET or HEAD\n".utf8), allow: "GET, HEAD")
        }
        if path == "/health" {
            return draining
                ? Response(status: 503, reason: "Service Unavailable", body: Array("draining\n".utf8))
                : Response(status: 200, reason: "OK", body: Array("ok\n".utf8))
        }
        var body: [UInt8] = []
        body.reserveCapacity(16_384)
        registry.emit(into: &body)
        return Response(status: 200, reason: "OK", contentType: "text/plain; version=0.0.4; charset=utf-8", body: body)
    }
}

/// One HTTP connection: reads the request head, answers, closes. `@unchecked Sendable`:
/// confined to its loop, like every connection.
private final class HTTPExchange: @unchecked Sendable {
    private let connection: Connection
    private let loop: EventLoop
    private let logger: Logger
    private let handle: (_ method: String, _ path: String) -> MetricsServer.Response
    private var received: [UInt8] = []
    private var answered = false
    private var peerClosed = false
    private var selfReference: HTTPExchange?
    private var timer: LoopTimer?

    init(fd: Int32, loop: EventLoop, logger: Logger,
         handle: @escaping (_ method: String, _ path: String) -> MetricsServer.Response) {
        connection = Connection(fd: fd, loop: loop)
        self.loop = loop
        self.logger = logger
        self.handle = handle
    }

    func start() {
        selfReference = self
        connection.onReadable = { [unowned self] in read() }
        connection.onError = { [unowned self] _ in close() }
        timer = loop.schedule(after: MetricsServer.timeoutSeconds) { [weak self] in
            guard let self else { return }
            self.loop.execute { self.close() }
        }
        connection.setReading(true)
    }

    private func read() {
        guard let (result, buffer) = try? connection.readIntoScratch(max: MetricsServer.maxRequestBytes + 1) else { return close() }
        switch result {
        case .wouldBlock:
            return
        case .endOfFile:
            // A client that half-closed after its request still gets the whole answer.
            guard answered, connection.outboxCount > 0 else { return close() }
            peerClosed = true
            connection.setReading(false)
        case .processed(let count):
            // After the answer, whatever the client still sends is read and dropped until it
            // closes: closing with unread input would reset the connection and could cut
            // the answer short on the client's side.
            guard !answered else { return }
            received += buffer[0..<count]
            if let end = Self.endOfHead(received) {
                respond(to: received[..<end])
            } else if received.count > MetricsServer.maxRequestBytes {
                send(MetricsServer.Response(status: 431, reason: "Request Header Fields Too Large",
                                            body: Array("request head over \(MetricsServer.maxRequestBytes) bytes\n".utf8)), head: false)
            }
        }
    }

    /// The index after the blank line that ends the request head (CRLF CRLF, or LF LF).
    private static func endOfHead(_ bytes: [UInt8]) -> Int? {
        var index = 0
        while let newline = bytes[index...].firstIndex(of: 10) {
            let next = newline + 1
            if next < bytes.count, bytes[next] == 10 { return next + 1 }
            if next + 1 < bytes.count, bytes[next] == 13, bytes[next + 1] == 10 { return next + 2 }
            index = next
        }
        return nil
    }

    private func respond(to head: ArraySlice<UInt8>) {
        let firstLine = head.prefix { $0 != 13 && $0 != 10 }
        let parts = firstLine.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].starts(with: Array("HTTP/1.".utf8)), parts[1].first == UInt8(ascii: "/") else {
            logger.debug("metrics: malformed HTTP request")
            return send(MetricsServer.Response(status: 400, reason: "Bad Request", body: Array("bad request\n".utf8)), head: false)
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = String(decoding: parts[1], as: UTF8.self)
        let path = String(target.prefix { $0 != "?" && $0 != "#" })
        send(handle(method, path), head: method == "HEAD")
    }

    private func send(_ response: MetricsServer.Response, head: Bool) {
        answered = true
        var text = "HTTP/1.1 \(response.status) \(response.reason)\r\n"
            + "Content-Type: \(response.contentType)\r\n"
            + "Content-Length: \(response.body.count)\r\n"
            + "Cache-Control: no-store\r\n"
            + "Connection: close\r\n"
        if let allow = response.allow { text += "Allow: \(allow)\r\n" }
        text += "\r\n"
        connection.onOutboxDrained = { [unowned self] in
            if peerClosed { return close() }
            connection.shutdownWrite()
        }
        connection.send(Array(text.utf8) + (head ? [] : response.body))
    }

    private func close() {
        guard selfReference != nil else { return }
        timer?.cancel()
        connection.close()
        loop.execute { [self] in selfReference = nil }
    }
}
