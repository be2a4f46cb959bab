/// How mailswitch verifies a backend's certificate and presents its own.
public struct BackendTLSConfiguration: Sendable, Equatable {
    /// PEM bundle of trusted CAs; nil means the system's store.
    public var caFile: String?
    /// The name verified and sent as SNI; nil means the host from `hosts`.
    public var serverName: String?
    public var verify: Bool
    public var clientCertificate: CertificateFiles?
    public var minVersion: TLSVersion

    public init(caFile: String? = nil, serverName: String? = nil, verify: Bool = true,
                clientCertificate: CertificateFiles? = nil, minVersion: TLSVersion = .v1_2) {
        self.caFile = caFile
        self.serverName = serverName
        self.verify = verify
        self.clientCertificate = clientCertificate
        self.minVersion = minVersion
    }
}

/// A certificate (PEM, leaf first, then its chain) and its private key (PEM).
public struct CertificateFiles: Sendable, Equatable {
    public var certificate: String
    public var key: String
    /// Where it was configured (`tls.certificates[1]`), for error messages.
    public var origin: String

    public init(certificate: String, key: String, origin: String) {
        self.certificate = certificate
        self.key = key
        self.origin = origin
    }
}

public enum TLSVersion: String, Sendable, CaseIterable {
    case v1_2 = "1.2"
    case v1_3 = "1.3"
}
