import Foundation
import MailProtocol
import Routing
import Yams

/// Reads the YAML configuration into `ServiceConfiguration`, checking every key: an unknown
/// key, a wrong type or a bad value is reported with its path and line, so a typo never
/// silently becomes a default.
public struct ConfigLoader {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Only `admin.socket` (or its default): the admin commands need nothing else, and an
    /// operator allowed on the socket may not be allowed to read the LDAP secret. The `admin`
    /// section is checked as `load()` checks it, so a bad socket path is an error here too.
    public func adminSocketPath() throws(Failure) -> String {
        guard let root = try document() else { throw Failure(description: "\(path): the file is empty") }
        return try located {
            let top = Value(node: root, path: "")
            guard let mapping = root.mapping else { throw top.fail("expected a mapping of keys") }
            guard let admin = mapping["admin"] else { return AdminConfiguration().socketPath }
            return try parseAdmin(Value(node: admin, path: "admin")).socketPath
        }
    }

    public func load() throws(Failure) -> ServiceConfiguration {
        guard let root = try document() else { throw Failure(description: "\(path): the file is empty") }
        return try located { try parse(Value(node: root, path: "")) }
    }

    /// The file's YAML tree; nil when it holds no document.
    private func document() throws(Failure) -> Node? {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw Failure(description: "\(path): cannot read the file (\(error.localizedDescription))")
        }
        do {
            return try Yams.compose(yaml: text)
        } catch {
            throw Failure(description: "\(path): not valid YAML: \(error)")
        }
    }

    /// A failure found inside the file, prefixed with the file's path.
    private func located<T>(_ body: () throws -> T) throws(Failure) -> T {
        do {
            return try body()
        } catch let error as Failure {
            throw Failure(description: "\(path): \(error.description)")
        } catch {
            throw Failure(description: "\(path): \(error)")
        }
    }

    private func parse(_ root: Value) throws -> ServiceConfiguration {
        let top = try root.mapping(allowed: ["listeners", "directory", "routing", "backends", "limits", "log", "tls", "admin",
                                             "shutdown_grace", "metrics", "trusted_proxies"])
        guard let listenersValue = top["listeners"] else { throw root.fail("missing key: listeners") }
        guard let directoryValue = top["directory"] else { throw root.fail("missing key: directory") }
        guard let backendsValue = top["backends"] else { throw root.fail("missing key: backends") }

        var backends: [String: Backend] = [:]
        for (name, value) in try backendsValue.entries() {
            backends[name] = try parseBackend(name: name, value)
        }
        guard !backends.isEmpty else { throw backendsValue.fail("at least one backend is needed") }

        var routingTable = RoutingTable(backends: backends, defaultBackend: nil)
        var disconnects = DisconnectPolicy()
        if let routing = top["routing"] {
            let keys = try routing.mapping(allowed: ["default_backend", "hold_values", "hold_message", "disconnect_burst",
                                                     "max_disconnect_delay", "read_only_values", "read_only_message",
                                                     "login_rewrite", "verify_credentials", "verify_cache_ttl",
                                                     "verify_connections", "oauth_introspection_url", "oauth_client_id",
                                                     "oauth_client_secret_file"])
            if let value = keys["login_rewrite"] { routingTable.loginRewrite = try parseLoginRewrite(value) }
            if let value = keys["verify_credentials"] {
                routingTable.credentialCheck.mode = try value.enumeration(CredentialCheck.Mode.self)
            }
            if let value = keys["verify_cache_ttl"] { routingTable.credentialCheck.cacheTTL = try value.duration(zero: true) }
            if let value = keys["verify_connections"] { routingTable.credentialCheck.connections = try value.int(1...256) }
            if let value = keys["oauth_introspection_url"] {
                let url = try value.string()
                guard url.hasPrefix("http://") || url.hasPrefix("https://"), !url.contains(where: \.isWhitespace) else {
                    throw value.fail("expected an http:// or https:// URL")
                }
                routingTable.credentialCheck.introspectionURL = url
            }
            if let value = keys["oauth_client_id"] { routingTable.credentialCheck.introspectionClientID = try value.string() }
            if let value = keys["oauth_client_secret_file"] { routingTable.credentialCheck.introspectionClientSecret = try value.secret() }
            if routingTable.credentialCheck.introspectionURL == nil, let stray = keys["oauth_client_id"] ?? keys["oauth_client_secret_file"] {
                throw stray.fail("only meaningful with oauth_introspection_url")
            }
            if !routingTable.credentialCheck.isOn,
               let stray = keys["verify_cache_ttl"] ?? keys["verify_connections"] ?? keys["oauth_introspection_url"] {
                throw stray.fail("only meaningful with verify_credentials: ldap_bind")
            }
            if let value = keys["default_backend"] {
                let name = try value.string()
                guard backends[name] != nil else {
                    throw value.fail("\"\(name)\" is not a backend (have: \(backends.keys.sorted().joined(separator: ", ")))")
                }
                routingTable.defaultBackend = name
            }
            if let value = keys["hold_values"] {
                routingTable.holdValues = try value.sequence().map { item in
                    let text = try item.string()
                    guard !text.isEmpty else { throw item.fail("a hold value must not be empty") }
                    if backends.keys.contains(where: { $0.lowercased() == text.lowercased() }) {
                        throw item.fail("\"\(text)\" is also a backend's name")
                    }
                    return text
                }
            }
            if let value = keys["read_only_values"] {
                routingTable.readOnlyValues = try value.sequence().map { item in
                    let text = try item.string()
                    guard !text.isEmpty, !text.contains(":") else {
                        throw item.fail("a read-only value is a word without \":\" (the store follows it in LDAP: \"\(text):legacy\")")
                    }
                    let clash = backends.keys.map { $0.lowercased() } + routingTable.holdValues.map { $0.lowercased() }
                    if clash.contains(text.lowercased()) { throw item.fail("\"\(text)\" is also a backend's name or a hold value") }
                    return text
                }
            }
            if let value = keys["read_only_message"] {
                let text = try value.string()
                guard !text.isEmpty, !text.contains(where: { $0.isNewline }) else { throw value.fail("expected one line of text") }
                routingTable.readOnlyMessage = text
            }
            if let value = keys["hold_message"] {
                let text = try value.string()
                guard !text.isEmpty, !text.contains(where: { $0.isNewline }) else { throw value.fail("expected one line of text") }
                routingTable.holdMessage = text
            }
            if let value = keys["disconnect_burst"] { disconnects.burst = try value.int(1...1_000_000) }
            if let value = keys["max_disconnect_delay"] { disconnects.maxDelaySeconds = try value.duration() }
        }

        let admin = try top["admin"].map(parseAdmin) ?? AdminConfiguration()

        let listenerValues = try listenersValue.sequence()
        let listeners = try listenerValues.map(parseListener)
        guard !listeners.isEmpty else { throw listenersValue.fail("at least one listener is needed") }
        let tls = try top["tls"].map(parseServerTLS)
        if tls == nil, let index = listeners.firstIndex(where: { $0.tls != .none }) {
            throw listenerValues[index].fail("tls: \(listeners[index].tls.rawValue) needs certificates: add a top-level tls.certificates list")
        }

        var limits = Limits()
        if let value = top["limits"] {
            let keys = try value.mapping(allowed: ["login_timeout", "backend_connect_timeout", "backend_login_timeout",
                                                   "relay_buffer_bytes", "max_line_length", "max_literal_size",
                                                   "max_commands_before_login", "max_connections", "max_connections_per_ip",
                                                   "max_sessions_per_user", "auth_failure_delay", "max_auth_failures_per_ip",
                                                   "max_auth_failures_per_user", "auth_failure_window"])
            if let v = keys["login_timeout"] { limits.loginTimeoutSeconds = try v.duration() }
            if let v = keys["backend_connect_timeout"] { limits.backendConnectTimeoutSeconds = try v.duration() }
            if let v = keys["backend_login_timeout"] { limits.backendLoginTimeoutSeconds = try v.duration() }
            if let v = keys["relay_buffer_bytes"] { limits.relayBufferBytes = try v.int(4096...4_194_304) }
            if let v = keys["max_line_length"] { limits.protocolLimits.lineLength = try v.int(1024...65_536) }
            if let v = keys["max_literal_size"] { limits.protocolLimits.literalSize = try v.int(256...65_536) }
            if let v = keys["max_commands_before_login"] { limits.protocolLimits.commandsBeforeLogin = try v.int(5...10_000) }
            if let v = keys["max_connections"] { limits.maxConnections = try v.int(1...10_000_000) }
            if let v = keys["max_connections_per_ip"] { limits.maxConnectionsPerIP = try v.int(1...10_000_000) }
            if let v = keys["max_sessions_per_user"] { limits.maxSessionsPerUser = try v.int(1...100_000) }
            if let v = keys["auth_failure_delay"] { limits.authFailureDelaySeconds = try v.duration(zero: true) }
            if let v = keys["max_auth_failures_per_ip"] { limits.authFailures.maxPerAddress = try v.int(1...1_000_000) }
            if let v = keys["max_auth_failures_per_user"] { limits.authFailures.maxPerUser = try v.int(1...1_000_000) }
            if let v = keys["auth_failure_window"] { limits.authFailures.window = try v.duration() }
            // A whole command holds at least one line and one literal.
            limits.protocolLimits.commandSize = max(limits.protocolLimits.commandSize,
                                                   limits.protocolLimits.lineLength + limits.protocolLimits.literalSize)
        }

        var logLevel = "info"
        if let value = top["log"] {
            let keys = try value.mapping(allowed: ["level"])
            if let level = keys["level"] {
                logLevel = try level.string()
                let known = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
                guard known.contains(logLevel) else { throw level.fail("expected one of \(known.joined(separator: ", "))") }
            }
        }

        // A master login trusts mailswitch to have checked the password: without the check,
        // anyone naming a user would be let in.
        for (name, value) in try backendsValue.entries() where backends[name]?.login != .passthrough && !routingTable.credentialCheck.isOn {
            throw value.fail("login: master needs routing.verify_credentials: ldap_bind (the store would let in "
                             + "anyone who names a user)")
        }
        var directory = try parseDirectory(directoryValue)
        directory.entryAttributes = Array(Set(backends.values.compactMap { $0.loginName.attribute?.lowercased() })).sorted()
        var configuration = ServiceConfiguration(listeners: listeners, directory: directory,
                                                 routing: routingTable, limits: limits, logLevel: logLevel, tls: tls)
        configuration.disconnects = disconnects
        configuration.admin = admin
        if let value = top["shutdown_grace"] { configuration.shutdownGraceSeconds = try value.duration() }
        if let value = top["metrics"] { configuration.metricsAddress = try parseMetrics(value) }
        if let value = top["trusted_proxies"] {
            configuration.trustedProxies = try value.sequence().map { item in
                let text = try item.string()
                guard let prefix = NetworkPrefix(text) else {
                    throw item.fail("\"\(text)\" is not an IP address or a prefix such as \"10.0.0.0/8\" or \"fd00::/8\"")
                }
                return prefix
            }
        }
        if configuration.trustedProxies.isEmpty, let index = listeners.firstIndex(where: \.proxyProtocol) {
            throw listenerValues[index].fail("proxy_protocol: true needs trusted_proxies (who may send the header)")
        }
        return configuration
    }

    /// `metrics.address`: where /metrics and /health are served over HTTP.
    private func parseMetrics(_ value: Value) throws -> HostPort {
        let keys = try value.mapping(allowed: ["address"])
        guard let addressValue = keys["address"] else { throw value.fail("missing key: address") }
        return try addressValue.bindAddress(examples: "\"127.0.0.1:9143\"")
    }

    private func parseAdmin(_ value: Value) throws -> AdminConfiguration {
        let keys = try value.mapping(allowed: ["socket", "state_file"])
        return AdminConfiguration(socketPath: try keys["socket"]?.socketPath() ?? AdminConfiguration().socketPath,
                                  stateFile: try keys["state_file"]?.filePath())
    }

    private func parseListener(_ value: Value) throws -> ListenerConfiguration {
        let keys = try value.mapping(allowed: ["protocol", "address", "tls", "require_tls", "proxy_protocol", "oauth"])
        guard let serviceValue = keys["protocol"] else { throw value.fail("missing key: protocol") }
        guard let addressValue = keys["address"] else { throw value.fail("missing key: address") }
        let service = try serviceValue.enumeration(MailService.self)
        let address = try addressValue.bindAddress(examples: "\"0.0.0.0:143\" or \"[::]:143\"")
        let tls = try keys["tls"]?.enumeration(ListenerTLS.self) ?? ListenerTLS.none
        let loopback = address.host.hasPrefix("127.") || address.host == "::1"
        let requireTLS = try keys["require_tls"]?.bool() ?? (tls == .starttls && !loopback)
        if requireTLS && tls == .none {
            throw keys["require_tls"]!.fail("require_tls: true needs tls: starttls or implicit")
        }
        let proxyProtocol = try keys["proxy_protocol"]?.bool() ?? false
        let oauth = try keys["oauth"]?.bool() ?? false
        // Only the settings the protocol has a use for (its descriptor says which).
        let options = service.descriptor.listenerOptions
        if (tls == .starttls && !options.startTLS) || (tls == .implicit && !options.implicitTLS) {
            throw keys["tls"]!.fail("\(service.rawValue) has no tls: \(tls.rawValue)")
        }
        if proxyProtocol && !options.proxyProtocol {
            throw keys["proxy_protocol"]!.fail("\(service.rawValue) listeners take no PROXY header")
        }
        return ListenerConfiguration(service: service, address: address, tls: tls, requireTLS: requireTLS,
                                     proxyProtocol: proxyProtocol, oauth: oauth)
    }

    private func parseServerTLS(_ value: Value) throws -> ServerTLSConfiguration {
        let keys = try value.mapping(allowed: ["certificates", "min_version"])
        guard let list = keys["certificates"] else { throw value.fail("missing key: certificates") }
        let certificates = try list.sequence().map { item in
            let pair = try item.mapping(allowed: ["cert", "key"])
            guard let cert = pair["cert"], let key = pair["key"] else { throw item.fail("needs cert and key") }
            return CertificateFiles(certificate: try cert.filePath(), key: try key.filePath(), origin: item.path)
        }
        guard !certificates.isEmpty else { throw list.fail("at least one certificate is needed") }
        let minVersion = try keys["min_version"]?.enumeration(TLSVersion.self) ?? .v1_2
        return ServerTLSConfiguration(certificates: certificates, minVersion: minVersion)
    }

    private func parseLoginRewrite(_ value: Value) throws -> LoginRewrite {
        let keys = try value.mapping(allowed: ["lowercase", "map_domains", "strip_domains"])
        func isDomain(_ text: String) -> Bool { !text.isEmpty && !text.contains("@") && !text.contains(where: \.isWhitespace) }
        func domain(_ item: Value) throws -> String {
            let text = try item.string()
            guard isDomain(text) else { throw item.fail("expected a domain such as example.org") }
            return text
        }
        let map: [(String, String)] = try keys["map_domains"]?.entries().map { (from, to) -> (String, String) in
            guard isDomain(from) else { throw to.fail("\"\(from)\" is not a domain such as msd.example.org") }
            return (from, try domain(to))
        } ?? []
        let strip: [String] = try keys["strip_domains"]?.sequence().map { item -> String in
            try item.string() == "*" ? "*" : try domain(item)
        } ?? []
        return LoginRewrite(lowercase: try keys["lowercase"]?.bool() ?? false,
                            mapDomains: Dictionary(map, uniquingKeysWith: { first, _ in first }), stripDomains: strip)
    }

    private func parseDirectory(_ value: Value) throws -> DirectoryConfiguration {
        let keys = try value.mapping(allowed: ["uris", "bind_dn", "bind_password_file", "base", "filter",
                                               "backend_attribute", "timeout", "max_in_flight", "cache_ttl",
                                               "negative_cache_ttl", "stale_ttl", "change_feed", "recheck_interval",
                                               "replica"])
        func required(_ key: String) throws -> Value {
            guard let found = keys[key] else { throw value.fail("missing key: \(key)") }
            return found
        }
        let urisValue = try required("uris")
        let uris = try urisValue.sequence().map { item in
            let uri = try item.string()
            guard uri.hasPrefix("ldap://") || uri.hasPrefix("ldaps://") || uri.hasPrefix("ldapi://") else {
                throw item.fail("\"\(uri)\" is not an ldap://, ldaps:// or ldapi:// URI")
            }
            return uri
        }
        guard !uris.isEmpty else { throw urisValue.fail("at least one URI is needed") }
        let bindDN = try keys["bind_dn"]?.string()
        var bindPassword: String?
        if let passwordValue = keys["bind_password_file"] { bindPassword = try passwordValue.secret() }
        if bindDN != nil && bindPassword == nil { throw value.fail("bind_dn needs bind_password_file") }
        let filterValue = try required("filter")
        let filter = try filterValue.string()
        if let problem = LDAPFilter.validateTemplate(filter) { throw filterValue.fail(problem) }
        var directory = DirectoryConfiguration(
            uris: uris, bindDN: bindDN, bindPassword: bindPassword, base: try required("base").string(),
            filter: filter, backendAttribute: try required("backend_attribute").string(),
            timeoutSeconds: try keys["timeout"]?.duration() ?? 3,
            maxInFlight: try keys["max_in_flight"]?.int(1...10_000) ?? 100)
        if let v = keys["cache_ttl"] { directory.cache.ttl = try v.duration() }
        if let v = keys["negative_cache_ttl"] { directory.cache.negativeTTL = try v.duration() }
        if let v = keys["stale_ttl"] { directory.cache.staleTTL = try v.duration() }
        if let v = keys["change_feed"] { directory.changeFeed = try v.enumeration(ChangeFeedMode.self) }
        if let v = keys["recheck_interval"] { directory.recheckIntervalSeconds = try v.duration() }
        if let v = keys["replica"], try v.bool() {
            switch ReplicaFilter.parse(filter) {
            case .failure(let problem):
                throw filterValue.fail(problem.description)
            case .success(let parsed) where parsed.fixedAttributes.count > 64 || parsed.loginAttributes.count > 255:
                throw filterValue.fail("directory.replica matches at most 64 fixed values and 255 login attributes")
            case .success:
                break
            }
            guard directory.changeFeed == .auto || directory.changeFeed == .sync else {
                throw v.fail("replica: true is built from the RFC 4533 feed: change_feed must be auto or sync")
            }
            directory.replica = true
        }
        return directory
    }
}
