import EventLoop

/// Runs a TLS handshake on a connection's loop, waiting for readability or writability as
/// OpenSSL asks, then installs the transport for everything that follows. The caller's own
/// timer bounds it (the login timeout towards clients, the backend login timeout towards stores).
public enum TLSHandshake {
    public static func run(on connection: Connection, transport: TLSTransport,
                           completion: @escaping (Result<TLSTransport, TLSHandshakeError>) -> Void) {
        connection.loop.assertOnLoop()
        connection.transport = transport
        let driver = Driver(connection: connection, transport: transport, completion: completion)
        driver.step()
    }

    private final class Driver {
        weak var connection: Connection?
        let transport: TLSTransport
        var completion: ((Result<TLSTransport, TLSHandshakeError>) -> Void)?

        init(connection: Connection, transport: TLSTransport,
             completion: @escaping (Result<TLSTransport, TLSHandshakeError>) -> Void) {
            self.connection = connection
            self.transport = transport
            self.completion = completion
        }

        func step() {
            guard let connection, !connection.isClosed else { return }
            switch transport.handshake() {
            case .done:
                finish(connection, .success(transport))
            case .wantRead:
                connection.onWritable = nil
                connection.setWriting(false)
                connection.onReadable = { [self] in step() }
                connection.setReading(true)
            case .wantWrite:
                connection.onReadable = nil
                connection.setReading(false)
                connection.onWritable = { [self] in step() }
                connection.setWriting(true)
            case .failed(let reason):
                finish(connection, .failure(TLSHandshakeError(reason: reason)))
            }
        }

        private func finish(_ connection: Connection, _ result: Result<TLSTransport, TLSHandshakeError>) {
            // The handlers held this driver: dropping them ends the cycle.
            connection.onReadable = nil
            connection.onWritable = nil
            connection.setReading(false)
            connection.setWriting(false)
            let completion = self.completion
            self.completion = nil
            completion?(result)
        }
    }
}

public struct TLSHandshakeError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
