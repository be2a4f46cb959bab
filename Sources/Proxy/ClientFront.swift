import Configuration
import EventLoop
import MailProtocol
import Routing
import TLS

/// What the client front tells its session.
protocol ClientFrontEvents: AnyObject {
    /// The PROXY header was read (its address is the client's now), or none was expected.
    func clientIntroduced()
    /// The client's TLS handshake ended, either way (implicit TLS, or after STARTTLS/STLS).
    func clientTLS(_ result: Result<TLSTransport, TLSHandshakeError>, attemptedVersion: String)
    func clientAsksLogin(_ request: LoginRequest)
    /// The pre-login machine ended the conversation (a logout, a limit): flush, then close.
    func clientFinished(limit: ProtocolLimit?)
    /// The client went away, TLS failed under it, or its PROXY header is none: close now,
    /// with `notice` in the log first when there is something to say.
    func clientFailed(_ reason: String, notice: String?)
}

/// The client's side of a session until the store accepts its login: the PROXY header, the
/// TLS handshake, and the pre-login machine fed from the socket, with the rules that keep that
/// conversation sound (nothing read while a login is out, a STARTTLS reply flushed before the
/// handshake, no growing backlog of replies to a client that does not read).
///
/// Confined to its session's loop, like the session.
final class ClientFront {
    let connection: Connection
    private unowned let events: any ClientFrontEvents
    private let tls: TLSServerContext?
    /// Dropped once the store accepted the login: a relayed session no longer needs it.
    private var machine: (any PreLoginMachine)?
    /// The client's address for limits, failure counters and what the store is told
    /// (canonical text; a dual-stack listener's `::ffff:a.b.c.d` as IPv4).
    private(set) var address: String
    private(set) var port: Int
    /// The address the client connected to, when a PROXY header named it (the load
    /// balancer's); otherwise nil, and our socket's own is asked when needed.
    private(set) var connectedTo: (host: String, port: Int)?
    /// A PROXY header named the client: the peer was the proxy it came through.
    private(set) var cameThroughProxy = false
    private var proxyHeader: ProxyHeaderReader?
    /// The machine is being fed: not while a login is out, nor once it is over.
    private var conversing = false
    /// Beyond this many unsent reply bytes, the client is not read until it takes them.
    private let backlogLimit: Int

    init(connection: Connection, peer: SocketAddress, listener: ListenerConfiguration, context: ServiceContext,
         events: any ClientFrontEvents) {
        self.connection = connection
        let limits = context.configuration.limits.protocolLimits
        machine = listener.service.descriptor.makePreLogin(
            .init(offersStartTLS: listener.tls == .starttls, allowsPlaintextLogin: !listener.requireTLS, oauth: listener.oauth,
                  limits: limits),
            listener.tls == .implicit)
        tls = context.tls.servers[listener.service]
        backlogLimit = limits.lineLength * 2
        self.events = events
        address = IPAddress(peer.host).flatMap { $0.unmappedIPv4?.description } ?? peer.host
        port = peer.port
    }

    /// The client as logs show it.
    var endpoint: String { Self.endpointText(address, port) }

    static func endpointText(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    // MARK: - PROXY header

    /// Starts reading the header, unless the peer is not one of the proxies trusted to send one.
    func readProxyHeader(from trusted: [NetworkPrefix]) -> Bool {
        // Until the header is read, the client's address is the peer's.
        guard let peer = IPAddress(address), trusted.contains(where: { $0.contains(peer) }) else { return false }
        proxyHeader = ProxyHeaderReader()
        connection.onReadable = { [unowned self] in proxyHeaderReadable() }
        connection.setReading(true)
        return true
    }

    /// Peeks, and consumes nothing after the header (see `ProxyHeaderReader`): its source
    /// address is the client's from then on, in logs, limits, failure counters and what the
    /// store is told.
    private func proxyHeaderReadable() {
        guard var reader = proxyHeader,
              let bytes = read(max: 16 + ProxyProtocol.maxV2PayloadLength, peek: true,
                               endOfFile: "client disconnected before its PROXY header") else { return }
        let step = reader.offer(bytes)
        proxyHeader = reader
        switch step {
        case .invalid(let why):
            events.clientFailed("invalid PROXY header", notice: "invalid PROXY header from \(endpoint): \(why)")
        case .consume(let taken):
            discard(taken)
        case .complete(let header, let taken):
            discard(taken)
            proxyHeader = nil
            connection.setReading(false)
            if let source = header.source {
                cameThroughProxy = true
                address = source.address.unmappedIPv4?.description ?? source.address.description
                port = Int(source.port)
            }
            if let destination = header.destination {
                connectedTo = (destination.address.unmappedIPv4?.description ?? destination.address.description,
                               Int(destination.port))
            }
            events.clientIntroduced()
        }
    }

    // MARK: - The conversation before login

    /// The greeting, after the handshake on an implicit-TLS listener.
    func greet(afterHandshake: Bool) {
        guard afterHandshake else {
            converse(greeting: true)
            return
        }
        handshake { $0.converse(greeting: true) }
    }

    private func converse(greeting: Bool) {
        connection.onReadable = { [unowned self] in readable() }
        if greeting { connection.send(machine?.greeting() ?? []) }
        conversing = true
        connection.setReading(true)
    }

    private func readable() {
        guard let bytes = read(max: 16_384, endOfFile: "client disconnected before login") else { return }
        perform(machine?.receive(bytes) ?? [])
        holdBackIfRepliesPileUp()
    }

    private func perform(_ actions: [ClientAction]) {
        for action in actions {
            guard !connection.isClosed else { return }
            switch action {
            case .send(let bytes):
                connection.send(bytes)
            case .login(let request):
                conversing = false
                connection.setReading(false)   // pipelined bytes wait in the socket meanwhile
                events.clientAsksLogin(request)
            case .startTLS:
                // The "begin TLS" reply goes out in plaintext, completely, before the handshake;
                // whatever the client pipelined after STARTTLS was dropped by the machine, and
                // bytes still in the socket are taken as handshake data (CVE-2011-0411 class).
                conversing = false
                connection.setReading(false)
                let begin: () -> Void = { [unowned self] in
                    connection.onOutboxDrained = nil
                    handshake { front in
                        front.machine?.tlsEstablished()
                        front.converse(greeting: false)
                    }
                }
                if connection.outboxCount == 0 { begin() } else { connection.onOutboxDrained = begin }
                return
            case .close:
                conversing = false
                events.clientFinished(limit: machine?.limitReached)
            }
        }
    }

    /// A client that pipelines CAPABILITY or ID without reading the answers would make the
    /// outbox grow for as long as the login timeout lets it: past a bound, stop reading it
    /// until it has taken what it was sent.
    private func holdBackIfRepliesPileUp() {
        // A hook already set (the STARTTLS handshake waiting for its reply to go out) stops
        // reading itself and must not be replaced.
        guard conversing, connection.onOutboxDrained == nil, connection.outboxCount > backlogLimit else { return }
        connection.setReading(false)
        connection.onOutboxDrained = { [unowned self] in
            connection.onOutboxDrained = nil
            if conversing { connection.setReading(true) }
        }
    }

    /// The login was refused: the machine answers the client and the conversation goes on.
    func loginRefused(_ failure: LoginFailure) {
        conversing = true
        perform(machine?.loginRejected(failure) ?? [])
        if conversing { connection.setReading(true) }
    }

    /// The store accepted: the client's reply and what it pipelined after its login command.
    /// The machine goes: a relayed session keeps no login state.
    func loginAccepted(_ success: BackendLoginSuccess) -> (reply: [UInt8], leftover: [UInt8])? {
        defer { machine = nil }
        return machine?.loginAccepted(success)
    }

    /// The relay takes the connection over: no hook of ours may outlive this front.
    func handOver() {
        connection.onReadable = nil
        connection.onOutboxDrained = nil
    }

    /// Ends the conversation: nothing more is read for the machine.
    func stopConversing() {
        conversing = false
        connection.setReading(false)
    }

    /// The protocol's last words to an idle client.
    func goodbye(_ text: String) {
        connection.send(machine?.goodbye(text) ?? [])
    }

    /// The same for a reason that passes (a shutdown, a limit).
    func temporaryGoodbye(_ text: String) {
        connection.send(machine?.temporaryGoodbye(text) ?? [])
    }

    // MARK: - I/O

    private func handshake(then next: @escaping (ClientFront) -> Void) {
        connection.setReading(false)
        guard let transport = tls?.makeTransport(fd: connection.fd) else {
            events.clientFailed("TLS is not available on this listener", notice: nil)
            return
        }
        TLSHandshake.run(on: connection, transport: transport) { [unowned self] result in
            events.clientTLS(result, attemptedVersion: transport.attemptedVersion)
            if case .success = result, !connection.isClosed { next(self) }
        }
    }

    /// One read (or peek): its bytes, or nil when there are none yet or the client is gone
    /// (reported, with `endOfFile` as the reason at its end).
    private func read(max: Int, peek: Bool = false, endOfFile: String) -> UnsafeRawBufferPointer? {
        let result: IOResult
        let buffer: UnsafeMutableRawBufferPointer
        do {
            (result, buffer) = peek ? try connection.peekIntoScratch(max: max) : try connection.readIntoScratch(max: max)
        } catch {
            events.clientFailed("client read failed: \(error)", notice: nil)
            return nil
        }
        switch result {
        case .wouldBlock:
            return nil
        case .endOfFile:
            events.clientFailed(endOfFile, notice: nil)
            return nil
        case .processed(let count):
            return UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        }
    }

    /// Takes bytes already seen by a peek out of the socket.
    private func discard(_ count: Int) {
        guard count > 0 else { return }
        _ = try? connection.readIntoScratch(max: count)
    }
}
