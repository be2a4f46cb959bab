public struct Backend: Sendable, Equatable {
    public var name: String
    /// Each protocol's hosts, tried in order (`imap_hosts`, `pop3_hosts`).
    public var hosts: [MailService: [HostPort]]
    public var tls: BackendTLS
    public var tlsSettings: BackendTLSConfiguration
    /// How the store learns who the real client is.
    public var forwardClient: ForwardClient
    /// Sessions open on this store at once, from connect to close; nil is unlimited.
    public var maxSessions: Int?
    /// Logins sent to this store per second (a burst of one second's worth); nil is unlimited.
    public var maxLoginsPerSecond: Double?
    /// `login_name`: the name this store is sent for the user.
    public var loginName = StoreLoginName.asTyped
    /// `login`: the client's credentials, or a master user's.
    public var login = StoreLogin.passthrough

    public init(name: String, imapHosts: [HostPort], pop3Hosts: [HostPort], tls: BackendTLS = .none,
                tlsSettings: BackendTLSConfiguration = BackendTLSConfiguration(), forwardClient: ForwardClient = .auto) {
        self.name = name
        hosts = [.imap: imapHosts, .pop3: pop3Hosts]
        self.tls = tls
        self.tlsSettings = tlsSettings
        self.forwardClient = forwardClient
    }

    /// Whether `max_sessions` or `max_logins_per_second` is set (`BackendBudget` tracks it).
    public var hasLimits: Bool { maxSessions != nil || maxLoginsPerSecond != nil }

    public func hosts(for service: MailService) -> [HostPort] {
        hosts[service] ?? []
    }

    public var imapHosts: [HostPort] {
        get { hosts(for: .imap) }
        set { hosts[.imap] = newValue }
    }

    public var pop3Hosts: [HostPort] {
        get { hosts(for: .pop3) }
        set { hosts[.pop3] = newValue }
    }
}

/// How a store learns the real client's address (`forward_client`).
public enum ForwardClient: String, Sendable, CaseIterable {
    /// IMAP ID `x-originating-ip` etc. and POP3 XCLIENT (Dovecot honours them from
    /// `login_trusted_networks`), with the hop count `x-proxy-ttl`.
    case auto
    /// A PROXY protocol v2 header first (Dovecot's `haproxy_trusted_networks`), then as auto.
    case proxyV2 = "proxy_v2"
    /// Nothing: the store sees mailswitch's address, and no hop count stops a routing loop.
    case none
}

public enum BackendTLS: String, Sendable, CaseIterable { case none, starttls, implicit }

/// How mailswitch logs in to a store (`login`).
public enum StoreLogin: Sendable, Equatable, CustomStringConvertible {
    /// With the client's own credentials, under the store's login name for the user.
    case passthrough
    /// SASL PLAIN with authorization id = the store's login name for the user and
    /// authentication id = a master user (Dovecot master users, Cyrus proxy admins): the
    /// client's password never reaches the store. Only with `verify_credentials` on, since
    /// the store then trusts mailswitch to have checked it.
    case master(user: String, password: [UInt8])

    /// Never the password.
    public var description: String {
        switch self {
        case .passthrough: "passthrough"
        case .master(let user, _): "master (\(user))"
        }
    }
}
