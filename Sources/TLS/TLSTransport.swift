#if canImport(Glibc)
import Glibc
#endif
import COpenSSLShims
import COpenSSL
import EventLoop

/// One TLS session over a non-blocking socket, as a `Transport`: the protocol code and the
/// relay read and write plaintext through it without knowing TLS is there.
///
/// Confined to its connection's loop, like the connection (OpenSSL's `SSL` is not thread-safe).
public final class TLSTransport: Transport {
    public enum HandshakeStep: Equatable {
        case done
        case wantRead
        case wantWrite
        case failed(String)
    }

    private let ssl: OpaquePointer
    private let keepAlive: AnyObject

    init(ssl: OpaquePointer, keepAlive: AnyObject) {
        self.ssl = ssl
        self.keepAlive = keepAlive
    }

    deinit { SSL_free(ssl) }

    public var isPlainSocket: Bool { false }

    /// Plaintext OpenSSL has decrypted but nobody has read: a level-triggered socket source
    /// will not fire for it, so the connection asks.
    public var hasBufferedInput: Bool { SSL_pending(ssl) > 0 }

    public func handshake() -> HandshakeStep {
        ERR_clear_error()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 { return .done }
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_SYSCALL where errno == 0 || rc == 0:
            return .failed("connection closed during the TLS handshake")
        case SSL_ERROR_SYSCALL:
            return .failed("TLS handshake: \(String(cString: strerror(errno)))")
        default:
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                return .failed("certificate verification failed: \(String(cString: X509_verify_cert_error_string(verify)))")
            }
            return .failed("TLS handshake failed: \(OpenSSLErrors.drain())")
        }
    }

    public func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult {
        guard buffer.count > 0 else { return .processed(0) }
        ERR_clear_error()
        var count = 0
        let rc = SSL_read_ex(ssl, buffer.baseAddress, buffer.count, &count)
        if rc == 1 { return .processed(count) }
        return try outcome(rc, "TLS read")
    }

    public func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult {
        guard buffer.count > 0 else { return .processed(0) }
        ERR_clear_error()
        var count = 0
        let rc = SSL_write_ex(ssl, buffer.baseAddress, buffer.count, &count)
        if rc == 1 { return .processed(count) }
        return try outcome(rc, "TLS write")
    }

    /// Sends close_notify, then half-closes the socket.
    public func shutdownWrite(_ fd: Int32) {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        Socket.shutdownWrite(fd)
    }

    /// "TLSv1.3", "TLSv1.2".
    public var version: String { SSL_get_version(ssl).map { String(cString: $0) } ?? "?" }
    /// `version`, or "unknown" while no ClientHello was taken in (a probe that connects and
    /// closes): the label of a failed handshake in the metrics.
    public var attemptedVersion: String { SSL_get_state(ssl) == TLS_ST_BEFORE ? "unknown" : version }

    /// Details for the log line of a session.
    public var summary: String {
        let cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).map { String(cString: $0) } ?? "?"
        return "\(version) \(cipher)\(mailswitch_ssl_is_session_reused(ssl) == 1 ? " resumed" : "")"
    }

    public var serverName: String? {
        SSL_get_servername(ssl, Int32(TLSEXT_NAMETYPE_host_name)).map { String(cString: $0) }
    }

    private func outcome(_ rc: Int32, _ call: String) throws(SystemError) -> IOResult {
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wouldBlock
        case SSL_ERROR_ZERO_RETURN:
            return .endOfFile
        case SSL_ERROR_SYSCALL:
            let error = errno
            if error == 0 { return .endOfFile }
            throw SystemError(call, errno: error)
        default:
            throw SystemError("\(call) (\(OpenSSLErrors.drain()))", errno: EPROTO)
        }
    }
}
