import Routing

public struct ListenerConfiguration: Sendable, Equatable {
    public var service: MailService
    public var address: HostPort
    public var tls: ListenerTLS
    /// Refuse LOGIN/USER/AUTH before TLS (LOGINDISABLED). Defaults to true unless the
    /// listener is bound to loopback.
    public var requireTLS: Bool
    /// Every connection starts with a PROXY header (v1 or v2) from one of `trusted_proxies`.
    public var proxyProtocol: Bool
    /// Offer the bearer-token mechanisms OAUTHBEARER and XOAUTH2: the stores behind this
    /// listener check the tokens, the proxy routes on the user the message names.
    public var oauth: Bool

    public init(service: MailService, address: HostPort, tls: ListenerTLS, requireTLS: Bool, proxyProtocol: Bool = false,
                oauth: Bool = false) {
        self.service = service
        self.address = address
        self.tls = tls
        self.requireTLS = requireTLS
        self.proxyProtocol = proxyProtocol
        self.oauth = oauth
    }
}

public enum ListenerTLS: String, Sendable, CaseIterable { case none, starttls, implicit }
