import Routing
import XCTest

final class RouteCacheTests: XCTestCase {
    let settings = RouteCacheSettings(ttl: 60, negativeTTL: 10, staleTTL: 3600, maxEntries: 3)
    let alice = DirectoryResult.found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "legacy")

    /// Runs a lookup that must start a search and completes it; returns what was delivered.
    private func searchAndComplete(_ cache: inout RouteCache<Int>, _ key: String, _ result: DirectoryResult, at now: Double)
        -> (DirectoryResult, RouteSource, [Int])? {
        guard case .search(let generation) = cache.lookup(key, now: now, waiter: 1) else { return nil }
        guard case .deliver(let delivered, let source, let waiters) = cache.complete(key, generation: generation, result: result, now: now) else {
            return nil
        }
        return (delivered, source, waiters)
    }

    func testPositiveAnswersLiveForTheTTLAndNegativeOnesForTheirs() {
        var cache = RouteCache<Int>(settings: settings)
        XCTAssertNotNil(searchAndComplete(&cache, "alice", alice, at: 0))
        guard case .answer(let result, .cache(let age)) = cache.lookup("alice", now: 59, waiter: 2) else { return XCTFail("hit") }
        XCTAssertEqual(result, alice)
        XCTAssertEqual(age, 59)
        guard case .search = cache.lookup("alice", now: 60, waiter: 3) else { return XCTFail("expired at the TTL") }

        XCTAssertNotNil(searchAndComplete(&cache, "ghost", .notFound, at: 0))
        guard case .answer(.notFound, _) = cache.lookup("ghost", now: 9, waiter: 4) else { return XCTFail("negative hit") }
        guard case .search = cache.lookup("ghost", now: 10, waiter: 5) else { return XCTFail("negative TTL") }
        // No attribute routes to the default backend: a negative entry too.
        XCTAssertNotNil(searchAndComplete(&cache, "dave", .found(dn: "uid=dave", backendValue: nil), at: 0))
        guard case .search = cache.lookup("dave", now: 10, waiter: 6) else { return XCTFail("no-attribute answers use the negative TTL") }
    }

    func testConcurrentLookupsShareOneSearch() {
        var cache = RouteCache<Int>(settings: settings)
        guard case .search(let generation) = cache.lookup("bob", now: 0, waiter: 1) else { return XCTFail() }
        for waiter in 2...5 {
            guard case .wait = cache.lookup("bob", now: 0, waiter: waiter) else { return XCTFail("joins the search") }
        }
        guard case .deliver(_, .directory, let waiters) = cache.complete("bob", generation: generation, result: alice, now: 0) else {
            return XCTFail()
        }
        XCTAssertEqual(waiters, [1, 2, 3, 4, 5])
    }

    func testExpiredAnswersStandInWhileTheDirectoryIsDownUpToTheStaleTTL() {
        var cache = RouteCache<Int>(settings: settings)
        XCTAssertNotNil(searchAndComplete(&cache, "alice", alice, at: 0))
        let down = DirectoryResult.unavailable(reason: "down")
        let stale = searchAndComplete(&cache, "alice", down, at: 100)
        XCTAssertEqual(stale?.0, alice)
        XCTAssertEqual(stale?.1, .stale(age: 100))
        let tooOld = searchAndComplete(&cache, "alice", down, at: 3600)
        XCTAssertEqual(tooOld?.0, down, "older than stale_ttl: the failure goes through")
        // An uncached user gets the failure, never a guess.
        XCTAssertEqual(searchAndComplete(&cache, "carol", down, at: 0)?.0, down)
        XCTAssertFalse(cache.contains("carol"), "failures are not cached")
    }

    func testAnInvalidationDuringASearchSearchesAgainAndNeverCachesTheOldAnswer() {
        var cache = RouteCache<Int>(settings: settings)
        guard case .search(let first) = cache.lookup("alice", now: 0, waiter: 1) else { return XCTFail() }
        cache.invalidate("alice")
        guard case .searchAgain(let second) = cache.complete("alice", generation: first, result: alice, now: 0) else {
            return XCTFail("the answer may predate the change")
        }
        XCTAssertNotEqual(first, second)
        XCTAssertFalse(cache.contains("alice"))
        let moved = DirectoryResult.found(dn: "uid=alice,ou=people,dc=example,dc=org", backendValue: "new")
        guard case .deliver(let result, _, let waiters) = cache.complete("alice", generation: second, result: moved, now: 0) else {
            return XCTFail()
        }
        XCTAssertEqual(result, moved)
        XCTAssertEqual(waiters, [1])
        XCTAssertEqual(cache.peek("alice", now: 1)?.entry.result, moved)
    }

    func testInvalidationByEntryAndByAll() {
        var cache = RouteCache<Int>(settings: settings)
        XCTAssertNotNil(searchAndComplete(&cache, "alice", alice, at: 0))
        XCTAssertNotNil(searchAndComplete(&cache, "alice@example.org", alice, at: 0))
        XCTAssertNotNil(searchAndComplete(&cache, "bob", .found(dn: "uid=bob", backendValue: "new"), at: 0))
        XCTAssertEqual(cache.invalidate(dn: "UID=alice,ou=people,dc=example,dc=org"), ["alice", "alice@example.org"])
        XCTAssertFalse(cache.contains("alice"))
        XCTAssertTrue(cache.contains("bob"))
        cache.invalidateAll()
        XCTAssertEqual(cache.count, 0)
    }

    func testBoundedAndPurged() {
        var cache = RouteCache<Int>(settings: settings)
        for (index, user) in ["a", "b", "c", "d"].enumerated() {
            XCTAssertNotNil(searchAndComplete(&cache, user, .found(dn: "uid=\(user)", backendValue: "x"), at: Double(index)))
        }
        XCTAssertEqual(cache.count, 3, "max_entries")
        XCTAssertFalse(cache.contains("a"), "the oldest went first")
        cache.purge(now: 3602)
        XCTAssertEqual(cache.count, 1, "only d is younger than stale_ttl")
    }

    func testUserKeysIgnoreCase() {
        XCTAssertEqual(UserKey.of("Alice@Example.ORG"), UserKey.of("alice@example.org"))
    }
}

final class DisconnectPacerTests: XCTestCase {
    func testABurstEndsAtOnceAndTheRestIsSpreadEvenlyOverTheWindow() {
        var pacer = DisconnectPacer<Int>(burst: 100, window: 2)
        let now = pacer.add(Array(0..<300), now: 0)
        XCTAssertEqual(now, Array(0..<100))
        XCTAssertEqual(pacer.waiting, 200)
        var released: [(Int, Double)] = []
        var clock = 0.0
        while let next = pacer.nextWakeUp(now: clock), pacer.waiting > 0 {
            clock = next
            released += pacer.due(now: clock).map { ($0, clock) }
        }
        XCTAssertEqual(released.map(\.0), Array(100..<300), "in order")
        XCTAssertEqual(released.last?.1 ?? 0, 2, accuracy: 0.001, "the last ends at the end of the window")
        XCTAssertEqual(released.first?.1 ?? 0, 0.01, accuracy: 0.001, "evenly: one every 10 ms")
        XCTAssertNil(pacer.finishEpisode(now: 1.99))
        let episode = pacer.finishEpisode(now: 2)
        XCTAssertEqual(episode?.ended, 300)
        XCTAssertEqual(episode?.spread, 200)
    }

    func testChangesArrivingOneByOneShareTheEpisodesBurstAndDeadline() {
        var pacer = DisconnectPacer<Int>(burst: 3, window: 1)
        XCTAssertEqual(pacer.add([1, 2], now: 0), [1, 2])
        XCTAssertEqual(pacer.add([3, 4], now: 0.1), [3], "the burst is per episode, not per change")
        XCTAssertEqual(pacer.add([5], now: 0.2), [], "behind the queue")
        XCTAssertEqual(pacer.due(now: 1.0), [4, 5], "by the episode's deadline")
        XCTAssertNotNil(pacer.finishEpisode(now: 1.0))
        XCTAssertEqual(pacer.add([6, 7, 8, 9], now: 5), [6, 7, 8], "a new episode, a new burst")
    }

    func testAnIdlePacerAsksForNothing() {
        var pacer = DisconnectPacer<Int>(burst: 10, window: 5)
        XCTAssertNil(pacer.nextWakeUp(now: 0))
        XCTAssertEqual(pacer.due(now: 100), [])
        XCTAssertEqual(pacer.add([1], now: 0), [1])
        XCTAssertEqual(pacer.nextWakeUp(now: 0), 5, "only the episode's end")
    }
}

final class RoutingHoldTests: XCTestCase {
    func testHoldValuesHoldTheUserAndTargetsCompareRoutes() {
        let legacy = Backend(name: "legacy", imapHosts: [HostPort(host: "127.0.0.1", port: 10143)], pop3Hosts: [])
        let table = RoutingTable(backends: ["legacy": legacy], defaultBackend: "legacy", holdValues: ["moving"],
                                 holdMessage: "Back soon.")
        let held = table.decide(.found(dn: "uid=a", backendValue: " Moving "), service: .imap)
        guard case .held(let message, _) = held else { return XCTFail("\(held)") }
        XCTAssertEqual(message, "Back soon.")
        XCTAssertEqual(held.target, .held)
        XCTAssertEqual(table.decide(.found(dn: "uid=a", backendValue: "legacy"), service: .imap).target, .backend("legacy"))
        XCTAssertEqual(table.decide(.notFound, service: .imap).target, .backend("legacy"), "the default backend")
        XCTAssertEqual(table.decide(.found(dn: "uid=a", backendValue: "10.0.0.9:143"), service: .imap).target, .backend("10.0.0.9:143"))
        XCTAssertNil(table.decide(.unavailable(reason: "down"), service: .imap).target, "never end a session on a guess")
    }

    func testLoginAttributesOfAFilter() {
        XCTAssertEqual(LDAPFilter.loginAttributes("(&(objectClass=inetOrgPerson)(uid=%u))"), ["uid"])
        XCTAssertEqual(LDAPFilter.loginAttributes("(|(uid=%u)(mail=%u)(mailAlternateAddress=%u))"), ["uid", "mail", "mailAlternateAddress"])
        XCTAssertEqual(LDAPFilter.loginAttributes("(&(uid=%n)(dc=%d))"), [], "a partial match names no login attribute")
    }
}
