#if canImport(Glibc)
import Glibc
#endif
import COpenSSLShims
import COpenSSL
import EventLoop
import Routing

/// The TLS context towards one backend: trusted CAs, hostname verification (on unless the
/// configuration says `verify: false`), and an optional client certificate.
///
/// `@unchecked Sendable`: immutable after `init`; every transport keeps it alive.
public final class TLSClientContext: @unchecked Sendable {
    private let context: OpaquePointer
    public let settings: BackendTLSConfiguration

    public init(_ settings: BackendTLSConfiguration, origin: String) throws(TLSConfigurationError) {
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw TLSConfigurationError("\(origin): cannot create an OpenSSL context: \(OpenSSLErrors.drain())")
        }
        self.context = context
        self.settings = settings
        mailswitch_ssl_ctx_configure(context, settings.minVersion == .v1_3 ? 1 : 0)
        ERR_clear_error()
        if let caFile = settings.caFile {
            try OpenSSLErrors.checkReadable(caFile, origin: origin + ".ca_file", what: "CA file")
            guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
                throw TLSConfigurationError("\(origin).ca_file: \(caFile): no usable PEM certificate: \(OpenSSLErrors.drain())")
            }
        } else if SSL_CTX_set_default_verify_paths(context) != 1 {
            throw TLSConfigurationError("\(origin): cannot load the system's CA store: \(OpenSSLErrors.drain())")
        }
        if settings.verify { SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil) }
        if let files = settings.clientCertificate {
            try OpenSSLErrors.checkReadable(files.certificate, origin: origin + ".client_cert", what: "certificate")
            try OpenSSLErrors.checkReadable(files.key, origin: origin + ".client_key", what: "key")
            guard SSL_CTX_use_certificate_chain_file(context, files.certificate) == 1 else {
                throw TLSConfigurationError("\(origin).client_cert: \(files.certificate): not a usable PEM certificate: \(OpenSSLErrors.drain())")
            }
            guard SSL_CTX_use_PrivateKey_file(context, files.key, SSL_FILETYPE_PEM) == 1,
                  SSL_CTX_check_private_key(context) == 1 else {
                throw TLSConfigurationError("\(origin).client_key: \(files.key) does not match \(files.certificate): \(OpenSSLErrors.drain())")
            }
        }
    }

    deinit { SSL_CTX_free(context) }

    /// A client-side session on a connected socket to `host`; the handshake is still to be run.
    public func makeTransport(fd: Int32, host: String) -> TLSTransport? {
        guard let ssl = SSL_new(context) else { return nil }
        SSL_set_fd(ssl, fd)
        SSL_set_connect_state(ssl)
        let name = settings.serverName ?? host
        let isAddress = SocketAddress(numericHost: name, port: 0) != nil
        if !isAddress { _ = mailswitch_ssl_set_host_name(ssl, name) }   // SNI carries names only
        if settings.verify {
            if isAddress {
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
            } else {
                SSL_set1_host(ssl, name)
            }
        }
        return TLSTransport(ssl: ssl, keepAlive: self)
    }
}
