import Routing

/// The client-facing TLS settings: certificates (the first is the default, others are chosen
/// by SNI) and the lowest protocol version accepted.
public struct ServerTLSConfiguration: Sendable, Equatable {
    public var certificates: [CertificateFiles]
    public var minVersion: TLSVersion

    public init(certificates: [CertificateFiles], minVersion: TLSVersion = .v1_2) {
        self.certificates = certificates
        self.minVersion = minVersion
    }
}
