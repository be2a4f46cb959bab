/// Which store addresses answer, so a new login does not wait for a dead host's connect
/// timeout each time. An address that failed to connect is skipped, and tried again by one
/// login after a back-off (1 s, doubling to 30 s); the first success brings it back. With
/// every address of a store down and none due for a retry, the login fails at once as
/// temporary instead of waiting. A pure value with time passed in; the proxy keeps one under
/// a lock, shared by every loop.
public struct HostHealth: Sendable {
    public enum Change: Sendable, Equatable {
        case wentDown, cameBack
    }

    private struct Down {
        var backoff: Double
        var retryAt: Double
    }

    public static let firstBackoff = 1.0
    public static let maxBackoff = 30.0

    private var down: [String: Down] = [:]

    public init() {}

    /// The addresses to try, in configuration order: those up, and those down whose retry is
    /// due (each handed to one login only: its next retry moves on at once). A due address
    /// keeps its place, so the login that retries it really tries it, and the preferred host
    /// takes its traffic back as soon as it answers.
    public mutating func usable(_ addresses: [String], now: Double) -> [String] {
        addresses.filter { address in
            guard var state = down[address] else { return true }
            guard state.retryAt <= now else { return false }
            state.retryAt = now + state.backoff
            down[address] = state
            return true
        }
    }

    /// Returns `.wentDown` when the address was up until now.
    public mutating func failed(_ address: String, now: Double) -> Change? {
        if var state = down[address] {
            state.backoff = min(state.backoff * 2, Self.maxBackoff)
            state.retryAt = now + state.backoff
            down[address] = state
            return nil
        }
        down[address] = Down(backoff: Self.firstBackoff, retryAt: now + Self.firstBackoff)
        return .wentDown
    }

    /// Returns `.cameBack` when the address was down until now.
    public mutating func succeeded(_ address: String) -> Change? {
        down.removeValue(forKey: address) == nil ? nil : .cameBack
    }

    public func isDown(_ address: String) -> Bool { down[address] != nil }

    public var downAddresses: [String] { down.keys.sorted() }
}
