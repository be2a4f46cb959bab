#if canImport(Glibc)
import Glibc
#endif
import Configuration
import COpenSSLShims
import COpenSSL
import EventLoop
import Routing

/// The client-facing TLS contexts of one protocol: a default context for the first
/// certificate, and alternates chosen by SNI. Certificates whose names are the same (an RSA
/// and an ECDSA certificate for one host) share a context, so OpenSSL can pick the one the
/// client's signature algorithms allow.
///
/// `@unchecked Sendable`: immutable after `init`; OpenSSL contexts may be used from any
/// thread to create connections. Every transport made here keeps this object alive, so a
/// reload that drops it never frees a context under a handshake in progress.
public final class TLSServerContext: @unchecked Sendable {
    private let contexts: [OpaquePointer]      // [0] is the default
    private let sniTable: OpaquePointer?
    public let service: MailService
    /// The protocol's ALPN name in wire form, for every context's callback: freed after them.
    private let alpn: UnsafeMutableBufferPointer<UInt8>

    public init(_ configuration: ServerTLSConfiguration, service: MailService) throws(TLSConfigurationError) {
        self.service = service
        let name = Array(service.descriptor.alpn.utf8.prefix(255))
        let alpn = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 1 + name.count)
        _ = alpn.initialize(from: [UInt8(name.count)] + name)
        self.alpn = alpn
        var contexts: [OpaquePointer] = []
        var identities: [(names: [UInt8], keyTypes: Set<Int32>)] = []
        do throws(TLSConfigurationError) {
            for files in configuration.certificates {
                let probe = try Self.makeContext(configuration, service: service, alpn: alpn)
                defer { SSL_CTX_free(probe) }
                let (names, keyType) = try Self.load(files, into: probe)
                if let group = identities.firstIndex(where: { $0.names == names }) {
                    guard !identities[group].keyTypes.contains(keyType) else {
                        throw TLSConfigurationError("\(files.origin): \(files.certificate) has the same names and key type as an earlier certificate")
                    }
                    _ = try Self.load(files, into: contexts[group])
                    identities[group].keyTypes.insert(keyType)
                } else {
                    let context = try Self.makeContext(configuration, service: service, alpn: alpn)
                    do throws(TLSConfigurationError) {
                        _ = try Self.load(files, into: context)
                    } catch {
                        SSL_CTX_free(context)
                        throw error
                    }
                    contexts.append(context)
                    identities.append((names, [keyType]))
                }
            }
        } catch {
            contexts.forEach { SSL_CTX_free($0) }
            alpn.deallocate()
            throw error
        }
        self.contexts = contexts
        if contexts.count > 1 {
            var alternates: [OpaquePointer?] = Array(contexts.dropFirst())
            sniTable = mailswitch_sni_table_new(&alternates, Int32(alternates.count))
            mailswitch_ssl_ctx_set_sni(contexts[0], sniTable)
        } else {
            sniTable = nil
        }
    }

    deinit {
        mailswitch_sni_table_free(sniTable)
        contexts.forEach { SSL_CTX_free($0) }
        alpn.deallocate()
    }

    /// A server-side session on an accepted socket; the handshake is still to be run.
    public func makeTransport(fd: Int32) -> TLSTransport? {
        guard let ssl = SSL_new(contexts[0]) else { return nil }
        SSL_set_fd(ssl, fd)
        SSL_set_accept_state(ssl)
        return TLSTransport(ssl: ssl, keepAlive: self)
    }

    private static func makeContext(_ configuration: ServerTLSConfiguration, service: MailService,
                                    alpn: UnsafeMutableBufferPointer<UInt8>) throws(TLSConfigurationError) -> OpaquePointer {
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            throw TLSConfigurationError("tls: cannot create an OpenSSL context: \(OpenSSLErrors.drain())")
        }
        mailswitch_ssl_ctx_configure(context, configuration.minVersion == .v1_3 ? 1 : 0)
        mailswitch_ssl_ctx_accept_alpn(context, alpn.baseAddress)
        // Resumption: TLS 1.3 tickets are on by default; TLS 1.2 session IDs need a context id.
        let id = Array("mailswitch-\(service.rawValue)".utf8)
        SSL_CTX_set_session_id_context(context, id, UInt32(id.count))
        return context
    }

    /// Loads one pair; returns the certificate's identity (subject and alternative names, DER)
    /// and its key type.
    private static func load(_ files: CertificateFiles, into context: OpaquePointer) throws(TLSConfigurationError) -> ([UInt8], Int32) {
        try OpenSSLErrors.checkReadable(files.certificate, origin: files.origin + ".cert", what: "certificate")
        try OpenSSLErrors.checkReadable(files.key, origin: files.origin + ".key", what: "key")
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(context, files.certificate) == 1 else {
            throw TLSConfigurationError("\(files.origin).cert: \(files.certificate): not a usable PEM certificate: \(OpenSSLErrors.drain())")
        }
        guard let certificate = SSL_CTX_get0_certificate(context) else {
            throw TLSConfigurationError("\(files.origin).cert: \(files.certificate): no certificate in the file")
        }
        guard SSL_CTX_use_PrivateKey_file(context, files.key, SSL_FILETYPE_PEM) == 1 else {
            throw TLSConfigurationError("\(files.origin).key: \(files.key): not a usable PEM private key for \(files.certificate): \(OpenSSLErrors.drain())")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw TLSConfigurationError("\(files.origin).key: \(files.key) does not match the certificate \(files.certificate): \(OpenSSLErrors.drain())")
        }
        return (identity(of: certificate), EVP_PKEY_get_base_id(X509_get0_pubkey(certificate)))
    }

    private static func identity(of certificate: OpaquePointer) -> [UInt8] {
        var bytes: [UInt8] = []
        var pointer: UnsafeMutablePointer<UInt8>?
        let length = i2d_X509_NAME(X509_get_subject_name(certificate), &pointer)
        if length > 0, let pointer {
            bytes += UnsafeBufferPointer(start: pointer, count: Int(length))
            CRYPTO_free(pointer, #fileID, #line)
        }
        let index = X509_get_ext_by_NID(certificate, NID_subject_alt_name, -1)
        if index >= 0, let data = X509_EXTENSION_get_data(X509_get_ext(certificate, index)),
           let start = ASN1_STRING_get0_data(data) {
            bytes += UnsafeBufferPointer(start: start, count: Int(ASN1_STRING_length(data)))
        }
        return bytes
    }
}
