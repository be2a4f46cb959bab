import Routing

extension ConfigLoader {
    /// One entry of `backends`: its hosts per protocol, how mailswitch talks TLS to it, how
    /// the store learns the client's address, its limits, and the name and credentials it is
    /// logged in to with.
    func parseBackend(name: String, _ value: Value) throws -> Backend {
        let keys = try value.mapping(allowed: ["hosts", "pop3_hosts", "tls", "forward_client", "forward_client_address", "ca_file",
                                               "server_name", "verify", "client_cert", "client_key", "min_version",
                                               "max_sessions", "max_logins_per_second", "login_name", "login",
                                               "master_user", "master_password_file"])
        let tls = try keys["tls"]?.enumeration(BackendTLS.self) ?? BackendTLS.none
        // Without a port, the protocol's own: 143/110, or 993/995 for implicit TLS.
        func port(_ service: MailService) -> Int { tls == .implicit ? service.implicitTLSPort : service.standardPort }
        let imapHosts = try keys["hosts"]?.sequence().map { try $0.hostPort(defaultPort: port(.imap)) } ?? []
        let pop3Hosts = try keys["pop3_hosts"]?.sequence().map { try $0.hostPort(defaultPort: port(.pop3)) } ?? []
        guard !imapHosts.isEmpty || !pop3Hosts.isEmpty else { throw value.fail("needs hosts, pop3_hosts or both") }
        var settings = BackendTLSConfiguration()
        settings.caFile = try keys["ca_file"]?.filePath()
        settings.serverName = try keys["server_name"]?.string()
        settings.verify = try keys["verify"]?.bool() ?? true
        settings.minVersion = try keys["min_version"]?.enumeration(TLSVersion.self) ?? .v1_2
        switch (keys["client_cert"], keys["client_key"]) {
        case (nil, nil):
            break
        case (let cert?, let key?):
            settings.clientCertificate = CertificateFiles(certificate: try cert.filePath(), key: try key.filePath(),
                                                          origin: value.path + ".client_cert")
        case (let one?, nil), (nil, let one?):
            throw one.fail("client_cert and client_key go together")
        }
        if tls == .none, let stray = ["ca_file", "server_name", "verify", "client_cert", "min_version"].compactMap({ keys[$0] }).first {
            throw stray.fail("only meaningful with tls: starttls or implicit")
        }
        // forward_client_address (true/false) is the older spelling of auto/none.
        if keys["forward_client"] != nil, let old = keys["forward_client_address"] {
            throw old.fail("forward_client replaces forward_client_address: keep one")
        }
        let forward = try keys["forward_client"]?.enumeration(ForwardClient.self)
            ?? keys["forward_client_address"].map { try $0.bool() ? .auto : ForwardClient.none } ?? .auto
        var backend = Backend(name: name, imapHosts: imapHosts, pop3Hosts: pop3Hosts, tls: tls, tlsSettings: settings,
                              forwardClient: forward)
        backend.maxSessions = try keys["max_sessions"]?.int(1...10_000_000)
        backend.maxLoginsPerSecond = try keys["max_logins_per_second"]?.positiveNumber()
        if let value = keys["login_name"] {
            if value.node.mapping != nil {
                let attribute = try value.mapping(allowed: ["attribute"])["attribute"]
                guard let attribute else { throw value.fail("expected a template such as \"%n\" or { attribute: uid }") }
                let name = try attribute.string()
                guard LDAPFilter.isAttributeName(name) else { throw attribute.fail("\"\(name)\" is not an LDAP attribute name") }
                backend.loginName = .attribute(name)
            } else {
                let template = try value.string()
                if let problem = StoreLoginName.problem(in: template) { throw value.fail("login_name \(problem)") }
                backend.loginName = .template(template)
            }
        }
        switch try keys["login"]?.string() ?? "passthrough" {
        case "passthrough":
            if let stray = keys["master_user"] ?? keys["master_password_file"] { throw stray.fail("only meaningful with login: master") }
        case "master":
            guard let user = keys["master_user"], let file = keys["master_password_file"] else {
                throw value.fail("login: master needs master_user and master_password_file")
            }
            let name = try user.string()
            guard !name.isEmpty, !name.utf8.contains(0) else { throw user.fail("expected a user name") }
            let password = try file.secret()
            guard !password.isEmpty else { throw file.fail("the master password file is empty") }
            backend.login = .master(user: name, password: Array(password.utf8))
        default:
            throw keys["login"]!.fail("expected passthrough or master")
        }
        return backend
    }
}
