import Dispatch
import Metrics

/// What the directory code records (swift-metrics; exposed on /metrics when `metrics.address`
/// is set, a no-op otherwise). Names and labels are fixed here, next to the code that records
/// them; the LDAP server label is a configured URI, so its cardinality is the configuration's.
public enum DirectoryMetrics {
    public static let lookupDurationName = "mailswitch_directory_lookup_duration_seconds"
    public static let errorsName = "mailswitch_directory_errors_total"

    /// One LDAP search, sent to answered (Prometheus histogram; buckets set by the factory).
    static let lookupDuration = Timer(label: lookupDurationName)

    /// The search round trip since `sent`.
    static func lookupAnswered(sentAt sent: DispatchTime) {
        lookupDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- sent.uptimeNanoseconds))
    }

    /// Creates the series at zero, so a scrape shows them before anything happened.
    public static func register(servers: [String]) {
        _ = lookupDuration
        for server in servers { _ = Counter(label: errorsName, dimensions: [("server", server)]) }
    }

    /// A connect or bind that failed, a search that failed or timed out, a connection lost,
    /// on the lookup connection or the change feed. Rare: the counter is looked up each time.
    public static func error(server: String) {
        Counter(label: errorsName, dimensions: [("server", server)]).increment()
    }
}
