import Dispatch
import Routing

/// What the service manager needs from a running proxy: proof that every loop still turns
/// (the watchdog), a first word from the directory (readiness), and a graceful drain (stop).
extension ProxyServer {
    /// Calls back with true when every event loop ran a block within `timeout` seconds. A loop
    /// stuck in a handler never answers, so the watchdog ping is not sent and the service
    /// manager restarts the service.
    public func loopsRespond(within timeout: Double, _ completion: @escaping @Sendable (Bool) -> Void) {
        let group = DispatchGroup()
        for loop in self.group.loops {
            group.enter()
            loop.execute { group.leave() }
        }
        DispatchQueue.global().async {
            completion(group.wait(timeout: .now() + timeout) == .success)
        }
    }

    /// Asks the directory once (a name nobody has) and reports what it said: the service is
    /// ready once the directory is reachable or known to be down.
    public func probeDirectory(_ completion: @escaping @Sendable (String) -> Void) {
        let probe: @Sendable (Router.Answer) -> Void = { answer in
            if case .unavailable(let reason) = answer.result {
                completion("directory unavailable: \(reason)")
            } else {
                completion("directory reachable")
            }
        }
        router.routeFresh("mailswitch-readiness-probe", completion: probe)
    }

    /// Stops accepting at once, lets sessions finish for `grace` seconds, then ends the rest
    /// (IMAP clients get `* BYE [UNAVAILABLE]` at a response boundary) and calls back when
    /// none is left, or a second later at most.
    public func drain(grace: Double, completion: @escaping @Sendable (_ endedByUs: Int) -> Void) {
        stop()
        Drain(server: self, grace: grace, completion: completion).start()
    }
}

/// The stop sequence's clock: checks every 100 ms whether sessions are left.
/// `@unchecked Sendable`: its state is touched only on its own queue.
private final class Drain: @unchecked Sendable {
    private let server: ProxyServer
    private let grace: Double
    private let completion: @Sendable (Int) -> Void
    private let queue = DispatchQueue(label: "mailswitch.drain")
    private let timer: any DispatchSourceTimer
    private let started = DispatchTime.now()
    private var endedByUs: Int?
    private var settleBy = DispatchTime.now()

    init(server: ProxyServer, grace: Double, completion: @escaping @Sendable (Int) -> Void) {
        self.server = server
        self.grace = grace
        self.completion = completion
        timer = DispatchSource.makeTimerSource(queue: queue)
    }

    func start() {
        timer.schedule(deadline: .now(), repeating: 0.1)
        timer.setEventHandler { [self] in tick() }
        timer.resume()
    }

    private func tick() {
        let now = DispatchTime.now()
        if let endedByUs {
            guard server.registry.count == 0 || now >= settleBy else { return }
            return finish(endedByUs)
        }
        if server.registry.count == 0 { return finish(0) }
        guard Double(now.uptimeNanoseconds - started.uptimeNanoseconds) / 1e9 >= grace else { return }
        let remaining = server.registry.snapshot()
        server.logger.notice("shutdown grace over: ending \(remaining.count) session(s)")
        for session in remaining { session.control.end(.shutdown, message: nil) }
        endedByUs = remaining.count
        settleBy = now + 1
    }

    private func finish(_ ended: Int) {
        timer.cancel()
        completion(ended)
    }
}
