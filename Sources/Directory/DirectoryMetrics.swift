import Dispatch
import Metrics

/// What the directory code records (swift-metrics; exposed on /metrics when `metrics.address`
/// is set, a no-op otherwise). Names and labels are fixed here, next to the code that records
/// them; the LDAP server label is a configured URI, so its cardinality is the configuration's.
public enum DirectoryMetrics {
    public static let lookupDurationName = "mailswitch_directory_lookup_duration_seconds"
    public static let errorsName = "mailswitch_directory_errors_total"
    public static let serverUpName = "mailswitch_directory_server_up"
    public static let serverInUseName = "mailswitch_directory_server_in_use"

    /// One LDAP search, sent to answered (Prometheus histogram; buckets set by the factory).
    static let lookupDuration = Timer(label: lookupDurationName)

    /// The search round trip since `sent`.
    static func lookupAnswered(sentAt sent: DispatchTime) {
        lookupDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- sent.uptimeNanoseconds))
    }

    /// Creates the series, so a scrape shows them before anything happened: no errors, every
    /// server up until an attempt on it fails, none in use until a bind succeeds.
    public static func register(servers: [String]) {
        _ = lookupDuration
        for server in servers {
            _ = Counter(label: errorsName, dimensions: [("server", server)])
            serverUp(server, true)
            serverInUse(server, false)
        }
    }

    /// A connect or bind that failed, a search that failed or timed out, a connection lost,
    /// on the lookup connection or the change feed. Rare: the counter is looked up each time.
    public static func error(server: String) {
        Counter(label: errorsName, dimensions: [("server", server)]).increment()
    }

    /// 0 after a connect or bind to the server failed (see `LDAPServerHealth`), 1 after one
    /// succeeded, or while it was never tried. Set at every attempt's outcome.
    static func serverUp(_ server: String, _ up: Bool) {
        Gauge(label: serverUpName, dimensions: [("server", server)]).record(up ? 1 : 0)
    }

    /// 1 for the server the lookups go to, 0 for the others (all 0 while none is bound).
    static func serverInUse(_ server: String, _ inUse: Bool) {
        Gauge(label: serverInUseName, dimensions: [("server", server)]).record(inUse ? 1 : 0)
    }
}
