import Logging
import Routing
import Synchronization

/// The health of every store address, shared by all loops and kept across reloads: a dead
/// host is skipped by new logins until a retry finds it answering (see `HostHealth`). Each
/// change is logged once and shown in `mailswitch_backend_host_up` and `mailswitch status`.
final class BackendHosts: Sendable {
    private let health = Mutex(HostHealth())
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func usable(_ addresses: [String], now: Double) -> [String] {
        health.withLock { $0.usable(addresses, now: now) }
    }

    func failed(_ address: String, backend: String, error: String, now: Double) {
        guard health.withLock({ $0.failed(address, now: now) }) == .wentDown else { return }
        logger.warning("backend \(backend) host \(address) is down (\(error)): new logins skip it until a retry answers")
        ProxyMetrics.backendHostUp(backend, address).record(0)
    }

    func succeeded(_ address: String, backend: String) {
        // The usual case (it was up) touches no metric: no labelled lookup per login.
        guard health.withLock({ $0.succeeded(address) }) == .cameBack else { return }
        ProxyMetrics.backendHostUp(backend, address).record(1)
        logger.notice("backend \(backend) host \(address) answers again")
    }

    var downAddresses: [String] { health.withLock { $0.downAddresses } }
}
