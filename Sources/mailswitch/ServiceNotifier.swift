#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import EventLoop
import Foundation

/// systemd's notification protocol (sd_notify(3)): datagrams of `KEY=value` lines to the
/// socket named by $NOTIFY_SOCKET. Without that variable (not under systemd) every call is a
/// no-op, so the service runs the same by hand.
struct ServiceNotifier: Sendable {
    let socketPath: String?
    /// Half of $WATCHDOG_USEC, in seconds: systemd's advice for the ping interval.
    let watchdogInterval: Double?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        let forUs = environment["WATCHDOG_PID"].map { Int32($0) == getpid() } ?? true
        if forUs, let micros = environment["WATCHDOG_USEC"].flatMap(Double.init), micros > 0 {
            watchdogInterval = micros / 2_000_000
        } else {
            watchdogInterval = nil
        }
    }

    func notify(_ lines: String...) {
        guard let socketPath else { return }
        _ = Socket.sendDatagram(Array(lines.joined(separator: "\n").utf8), toUnixPath: socketPath)
    }

    func ready(status: String) { notify("READY=1", "STATUS=\(status)") }

    /// Before a reload: systemd waits for the READY=1 that follows.
    func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        notify("RELOADING=1", "MONOTONIC_USEC=\(UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000)")
    }

    func stopping(status: String) { notify("STOPPING=1", "STATUS=\(status)") }

    func status(_ text: String) { notify("STATUS=\(text)") }
}
