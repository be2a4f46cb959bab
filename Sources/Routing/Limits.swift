import MailProtocol

/// Every limit and timeout of the service, in one place.
public struct Limits: Sendable, Equatable {
    public var protocolLimits = ProtocolLimits()
    /// From accept to the backend accepting the login.
    public var loginTimeoutSeconds: Double = 60
    public var backendConnectTimeoutSeconds: Double = 5
    /// From connected to the backend's verdict on the replayed login.
    public var backendLoginTimeoutSeconds: Double = 15
    /// Bytes buffered per direction in the relay before that side stops being read.
    public var relayBufferBytes = 65_536
    /// Open client connections, all listeners together; beyond it a new one gets the
    /// protocol's goodbye and is closed. The unit's LimitNOFILE allows two descriptors each.
    public var maxConnections = 100_000
    /// Open connections from one client address (a NAT in front of a campus needs more).
    public var maxConnectionsPerIP = 200
    /// Sessions of one user, logged in or logging in (the client that IDLEs on every folder).
    public var maxSessionsPerUser = 50
    /// A failed login is answered this long after its command arrived (a store slower than
    /// that is not waited for twice): a wrong password and an unknown user look the same.
    public var authFailureDelaySeconds: Double = 2
    public var authFailures = AuthFailureTracker.Settings()

    public init() {}
}
