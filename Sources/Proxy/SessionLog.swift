#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import Logging
import TLS

/// A session's fields for its log lines, kept as values and made into a logger's metadata
/// only when a line is written: a metadata dictionary held by every idle session cost about
/// half a KiB each.
struct SessionLog {
    var client: String
    /// The proxy the client came through (PROXY protocol).
    var via: String?
    var tls: String?
    var sni: String?
    var user: String?

    /// A PROXY header named the client: the peer was the proxy it came through.
    mutating func cameThrough(to client: String) {
        via = self.client
        self.client = client
    }

    mutating func tls(_ transport: TLSTransport) {
        tls = transport.summary
        if let name = transport.serverName { sni = LogText.escaped(name) }
    }

    /// Writes a line with these fields; nothing is built when the level is off.
    func write(_ logger: Logger, session: String, _ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
               metadata extra: @autoclosure () -> Logger.Metadata?) {
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = ["session": "\(session)", "client": "\(client)"]
        if let via { metadata["via"] = "\(via)" }
        if let tls { metadata["tls"] = "\(tls)" }
        if let sni { metadata["sni"] = "\(sni)" }
        if let user { metadata["user"] = "\(user)" }
        if let extra = extra() { metadata.merge(extra) { _, new in new } }
        logger.log(level: level, message(), metadata: metadata)
    }
}

extension SessionLog {
    static func loginOK(_ route: (backend: String, host: String), method: String, storeTLS: String?,
                        readOnly: Bool) -> Logger.Metadata {
        var metadata: Logger.Metadata = ["backend": "\(route.backend)", "host": "\(route.host)", "method": "\(method)"]
        if let storeTLS { metadata["backend_tls"] = "\(storeTLS)" }
        if readOnly { metadata["read_only"] = "true" }
        return metadata
    }

    static func how(_ end: Relay.End, _ reason: SessionEndReason?) -> String {
        switch end {
        case .closed: return "closed"
        case .error(let message): return "error: \(message)"
        case .stopped: return reason?.rawValue ?? "stopped"
        }
    }

    /// One line that says it all: who, from where, through which listener, to which store, for
    /// how long, how much each way (the fields of the line), and how it ended (its message).
    static func ended(_ totals: Relay.Totals, listener: String, route: (backend: String, host: String)?,
                      since startedAt: Double) -> Logger.Metadata {
        let seconds = (Double(time(nil)) - startedAt).rounded()
        return [
            "in": "\(totals.clientToBackend)", "out": "\(totals.backendToClient)", "relay": "\(totals.spliced ? "splice" : "copy")",
            "listener": "\(listener)", "backend": "\(route?.backend ?? "?")", "host": "\(route?.host ?? "?")",
            "duration": "\(Int(seconds))s",
        ]
    }
}
