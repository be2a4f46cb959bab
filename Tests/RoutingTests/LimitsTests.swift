import Routing
import XCTest

final class ConnectionBudgetTests: XCTestCase {
    func testPerAddressAndOverallLimitsAndRelease() {
        var limits = Limits()
        limits.maxConnections = 3
        limits.maxConnectionsPerIP = 2
        var budget = ConnectionBudget()
        XCTAssertNil(budget.admit("192.0.2.1", limits: limits))
        XCTAssertNil(budget.admit("192.0.2.1", limits: limits))
        XCTAssertEqual(budget.admit("192.0.2.1", limits: limits), .maxConnectionsPerIP)
        XCTAssertNil(budget.admit("192.0.2.2", limits: limits))
        XCTAssertEqual(budget.admit("192.0.2.3", limits: limits), .maxConnections)
        XCTAssertEqual(budget.total, 3)
        budget.release("192.0.2.1")
        XCTAssertEqual(budget.connections(from: "192.0.2.1"), 1)
        XCTAssertNil(budget.admit("192.0.2.3", limits: limits))
        // Releasing an address that holds nothing changes nothing.
        budget.release("198.51.100.9")
        XCTAssertEqual(budget.total, 3)
        for address in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] { budget.release(address) }
        XCTAssertEqual(budget.total, 0)
        XCTAssertEqual(budget.connections(from: "192.0.2.1"), 0)
    }
}

final class BackendBudgetTests: XCTestCase {
    private func backend(sessions: Int?, rate: Double?) -> Backend {
        var backend = Backend(name: "legacy", imapHosts: [HostPort(host: "127.0.0.1", port: 143)], pop3Hosts: [])
        backend.maxSessions = sessions
        backend.maxLoginsPerSecond = rate
        return backend
    }

    func testMaxSessionsCountsUntilReleased() {
        let store = backend(sessions: 2, rate: nil)
        var budget = BackendBudget()
        XCTAssertNil(budget.admit(store, now: 0))
        XCTAssertNil(budget.admit(store, now: 0))
        XCTAssertEqual(budget.admit(store, now: 0), .maxSessions)
        budget.release(backendNamed: store.name)
        XCTAssertNil(budget.admit(store, now: 0))
        XCTAssertEqual(budget.sessions(on: "legacy"), 2)
    }

    func testLoginRateAllowsOneSecondsBurstThenRefills() {
        let store = backend(sessions: nil, rate: 5)
        var budget = BackendBudget()
        for _ in 0..<5 { XCTAssertNil(budget.admit(store, now: 100)) }
        XCTAssertEqual(budget.admit(store, now: 100), .maxLoginsPerSecond)
        XCTAssertEqual(budget.admit(store, now: 100.1), .maxLoginsPerSecond, "0.5 token after 0.1 s")
        XCTAssertNil(budget.admit(store, now: 100.3), "one token back after 0.2 s")
        XCTAssertEqual(budget.admit(store, now: 100.3), .maxLoginsPerSecond)
        // A long pause refills to one second's worth, not more.
        for _ in 0..<5 { XCTAssertNil(budget.admit(store, now: 200)) }
        XCTAssertEqual(budget.admit(store, now: 200), .maxLoginsPerSecond)
    }

    func testRateBelowOnePerSecondStillAdmitsOne() {
        let store = backend(sessions: nil, rate: 0.5)
        var budget = BackendBudget()
        XCTAssertNil(budget.admit(store, now: 0))
        XCTAssertEqual(budget.admit(store, now: 1), .maxLoginsPerSecond)
        XCTAssertNil(budget.admit(store, now: 2.01))
    }

    func testUnlimitedBackendIsNotTracked() {
        let store = backend(sessions: nil, rate: nil)
        var budget = BackendBudget()
        for _ in 0..<1000 { XCTAssertNil(budget.admit(store, now: 0)) }
        XCTAssertEqual(budget.sessions(on: "legacy"), 0)
    }
}

final class AuthFailureTrackerTests: XCTestCase {
    private let settings = AuthFailureTracker.Settings(maxPerAddress: 3, maxPerUser: 2, window: 60, trustedFor: 3600,
                                                       maxKeys: 100)

    func testAddressIsRefusedAfterItsFailuresUntilTheyLeaveTheWindow() {
        var tracker = AuthFailureTracker(settings: settings)
        for (index, user) in ["a", "b", "c"].enumerated() {
            XCTAssertNil(tracker.check(address: "203.0.113.5", user: user, now: Double(index)))
            tracker.failed(address: "203.0.113.5", user: user, now: Double(index))
        }
        XCTAssertEqual(tracker.check(address: "203.0.113.5", user: "d", now: 10), .address)
        XCTAssertNil(tracker.check(address: "203.0.113.6", user: "d", now: 10), "another address is not affected")
        XCTAssertNil(tracker.check(address: "203.0.113.5", user: "d", now: 60.5), "the first failure left the window")
    }

    func testUserIsRefusedFromNewAddressesButNotFromOneItLoggedInFrom() {
        var tracker = AuthFailureTracker(settings: settings)
        tracker.succeeded(address: "198.51.100.7", user: "Alice", now: 0)
        tracker.failed(address: "203.0.113.1", user: "alice", now: 1)
        tracker.failed(address: "203.0.113.2", user: "ALICE", now: 2)
        XCTAssertEqual(tracker.check(address: "203.0.113.3", user: "alice", now: 3), .user, "case does not matter")
        XCTAssertNil(tracker.check(address: "198.51.100.7", user: "alice", now: 3), "the real user's own client")
        XCTAssertNil(tracker.check(address: "203.0.113.3", user: "bob", now: 3))
        XCTAssertNil(tracker.check(address: "203.0.113.3", user: "alice", now: 62.5), "the lock ends with the window")
        // Trust in an address expires too.
        tracker.failed(address: "203.0.113.1", user: "alice", now: 4000)
        tracker.failed(address: "203.0.113.2", user: "alice", now: 4001)
        XCTAssertEqual(tracker.check(address: "198.51.100.7", user: "alice", now: 4002), .user)
    }

    func testASuccessfulLoginDoesNotResetTheAddressesCount() {
        // Otherwise one account of its own would let a sprayer guess on without end.
        var tracker = AuthFailureTracker(settings: settings)
        tracker.failed(address: "192.0.2.9", user: "carol", now: 0)
        tracker.failed(address: "192.0.2.9", user: "dave", now: 1)
        tracker.succeeded(address: "192.0.2.9", user: "mallory", now: 2)
        tracker.failed(address: "192.0.2.9", user: "erin", now: 3)
        XCTAssertEqual(tracker.check(address: "192.0.2.9", user: "frank", now: 4), .address)
    }

    func testMemoryStaysBoundedUnderAFloodOfNewKeys() {
        var tracker = AuthFailureTracker(settings: settings)
        for index in 0..<10_000 {
            tracker.failed(address: "10.0.\(index / 256).\(index % 256)", user: "user\(index)", now: Double(index) / 1000)
            tracker.succeeded(address: "10.1.\(index / 256).\(index % 256)", user: "user\(index)", now: Double(index) / 1000)
        }
        let keys = tracker.trackedKeys
        XCTAssertLessThanOrEqual(keys.addresses, 100)
        XCTAssertLessThanOrEqual(keys.users, 100)
        XCTAssertLessThanOrEqual(keys.good, 100)
        // The newest failures survived the evictions.
        tracker.failed(address: "10.0.39.15", user: "x", now: 10)
        tracker.failed(address: "10.0.39.15", user: "y", now: 10)
        XCTAssertEqual(tracker.check(address: "10.0.39.15", user: "z", now: 10), .address)
    }
}

final class HostHealthTests: XCTestCase {
    func testADeadHostIsSkippedUntilItsRetryIsDueThenComesBack() {
        var health = HostHealth()
        XCTAssertEqual(health.usable(["a", "b"], now: 0), ["a", "b"])
        XCTAssertEqual(health.failed("a", now: 0), .wentDown)
        XCTAssertEqual(health.usable(["a", "b"], now: 0.5), ["b"], "skipped within its back-off")
        XCTAssertEqual(health.usable(["a", "b"], now: 1.0), ["a", "b"], "due: retried in its place, first")
        XCTAssertEqual(health.usable(["a", "b"], now: 1.1), ["b"], "one login probes it, not every one")
        XCTAssertNil(health.failed("a", now: 1.2), "already down")
        XCTAssertEqual(health.usable(["a", "b"], now: 2.5), ["b"], "the back-off doubled to 2 s")
        XCTAssertEqual(health.usable(["a", "b"], now: 3.3), ["a", "b"])
        XCTAssertEqual(health.succeeded("a"), .cameBack)
        XCTAssertNil(health.succeeded("a"))
        XCTAssertEqual(health.usable(["a", "b"], now: 3.4), ["a", "b"])
    }

    func testBackoffIsCapped() {
        var health = HostHealth()
        for step in 0..<20 { _ = health.failed("a", now: Double(step)) }
        XCTAssertEqual(health.usable(["a"], now: 19 + HostHealth.maxBackoff - 0.1), [])
        XCTAssertEqual(health.usable(["a"], now: 19 + HostHealth.maxBackoff), ["a"])
        XCTAssertEqual(health.downAddresses, ["a"])
    }
}
