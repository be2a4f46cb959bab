import MailProtocol
import Routing
import XCTest

/// The shared counters in a plain value: what the proxy keeps under locks.
private final class Ledger: LoginLedger, @unchecked Sendable {
    var failures = AuthFailureTracker(settings: .init(maxPerAddress: 3, maxPerUser: 2, window: 60))
    var budget = BackendBudget()
    var sessions: [String: Int] = [:]
    var entrySessions: [String: Int] = [:]
    var holds: [String: OperatorHold] = [:]

    func failedLoginRefusal(address: String, user: String, now: Double) -> AuthFailureTracker.Refusal? {
        failures.check(address: address, user: user, now: now)
    }

    func sessionCount(ofUser user: String, entry dn: String?) -> Int {
        max(sessions[user, default: 1], dn.flatMap { entrySessions[$0] } ?? 0)
    }
    func takeStoreSlot(_ backend: Backend, now: Double) -> BackendBudget.Refusal? { budget.admit(backend, now: now) }
    var entryHolds: [String: OperatorHold] = [:]
    func operatorHold(for user: String, entry dn: String?) -> OperatorHold? { holds[user] ?? dn.flatMap { entryHolds[$0] } }
}

final class LoginGateTests: XCTestCase {
    private let legacy = Backend(name: "legacy", imapHosts: [HostPort(host: "127.0.0.2", port: 143)],
                                 pop3Hosts: [HostPort(host: "127.0.0.2", port: 110)])
    private var limited: Backend {
        var backend = Backend(name: "limited", imapHosts: [HostPort(host: "127.0.0.3", port: 143)], pop3Hosts: [])
        backend.maxSessions = 1
        return backend
    }

    private func gate(maxSessionsPerUser: Int = 5) -> LoginGate {
        var table = RoutingTable(backends: ["legacy": legacy, "limited": limited], defaultBackend: nil, holdValues: ["moving"])
        table.readOnlyValues = ["moving-ro"]
        return LoginGate(routing: table, maxSessionsPerUser: maxSessionsPerUser, service: .imap)
    }

    private func login(_ user: String, ttl: Int? = nil) -> LoginRequest {
        LoginRequest(credentials: Credentials(username: user, password: Array("secret".utf8)), method: "LOGIN", proxyTTL: ttl)
    }

    private func found(_ value: String?) -> RouteAnswer {
        RouteAnswer(result: .found(dn: "uid=alice,dc=example", backendValue: value), source: .directory)
    }

    private func refusal(_ verdict: LoginVerdict, file: StaticString = #filePath, line: UInt = #line) -> LoginRefusal? {
        guard case .refuse(let refusal) = verdict else {
            XCTFail("expected a refusal, got \(verdict)", file: file, line: line)
            return nil
        }
        return refusal
    }

    private func route(_ verdict: LoginVerdict, file: StaticString = #filePath, line: UInt = #line) -> LoginRoute? {
        guard case .admit(let route) = verdict else {
            XCTFail("expected a route, got \(verdict)", file: file, line: line)
            return nil
        }
        return route
    }

    func testAnOrdinaryLoginLooksTheUserUpThenGoesToTheNamedStore() throws {
        let ledger = Ledger()
        XCTAssertEqual(gate().begin(login("alice"), user: "alice", address: "192.0.2.1", now: 0, ledger: ledger), .lookUp)
        let admitted = try XCTUnwrap(route(gate().routed(found("legacy"), user: "alice", now: 0, ledger: ledger)))
        XCTAssertEqual(admitted.backend.name, "legacy")
        XCTAssertEqual(admitted.hosts, legacy.imapHosts)
        XCTAssertNil(admitted.readOnlyMessage)
        XCTAssertEqual(admitted.target, .backend("legacy"))
        XCTAssertEqual(admitted.dn, "uid=alice,dc=example")
        XCTAssertFalse(admitted.holdsStoreSlot, "a store without limits has no slot to give back")
    }

    func testARoutingLoopIsRefusedAsTemporaryWhenNoHopIsLeft() throws {
        let refused = try XCTUnwrap(refusal(gate().begin(login("alice", ttl: 1), user: "alice", address: "192.0.2.1", now: 0, ledger: Ledger())))
        XCTAssertEqual(refused.failure, .temporary)
        XCTAssertTrue(refused.reason.contains("proxy loop"), refused.reason)
        XCTAssertFalse(refused.delayed)
        XCTAssertEqual(LoginGate.hopsLeft(after: nil), ClientEndpoint.defaultTTL - 1)
        XCTAssertEqual(LoginGate.hopsLeft(after: 2), 1)
        XCTAssertEqual(LoginGate.hopsLeft(after: 99), ClientEndpoint.defaultTTL - 1, "a client cannot raise the count")
        XCTAssertNil(LoginGate.hopsLeft(after: 1))
        XCTAssertNil(LoginGate.hopsLeft(after: 0))
    }

    func testFailedLoginsLockTheAddressOutBeforeAnyLookup() throws {
        let ledger = Ledger()
        for second in 0..<3 { ledger.failures.failed(address: "192.0.2.9", user: "user\(second)", now: Double(second)) }
        let refused = try XCTUnwrap(refusal(gate().begin(login("alice"), user: "alice", address: "192.0.2.9", now: 5, ledger: ledger)))
        XCTAssertEqual(refused.failure, .unavailable(text: "Too many failed logins, try again later."))
        XCTAssertEqual(refused.limit, .failedLogins(.address))
        XCTAssertEqual(refused.outcome, .limited)
        XCTAssertTrue(refused.delayed, "a locked-out guesser waits like a wrong password")
        XCTAssertFalse(refused.countsAsFailedLogin, "no password was tried")
        XCTAssertEqual(gate().begin(login("alice"), user: "alice", address: "192.0.2.10", now: 5, ledger: ledger), .lookUp)
    }

    func testFailedLoginsOfAnEntryCountWhateverNameTheyUsed() throws {
        let ledger = Ledger()
        let key = LoginGate.failureKey(user: "alice", entry: "UID=alice,dc=example")
        XCTAssertEqual(key, "entry:uid=alice,dc=example")
        XCTAssertEqual(LoginGate.failureKey(user: "nobody", entry: nil), "nobody", "no entry: the name")
        ledger.failures.failed(address: "192.0.2.1", user: key, now: 0)
        ledger.failures.failed(address: "192.0.2.2", user: key, now: 1)
        // The name alone is not locked out; its entry is, once the directory names it.
        XCTAssertEqual(gate().begin(login("alice@example.org"), user: "alice@example.org", address: "192.0.2.3", now: 2,
                                    ledger: ledger), .lookUp)
        let refused = try XCTUnwrap(refusal(gate().routed(found("legacy"), user: "alice@example.org", address: "192.0.2.3",
                                                          now: 2, ledger: ledger)))
        XCTAssertEqual(refused.limit, .failedLogins(.user))
        XCTAssertTrue(refused.delayed)
    }

    func testAnOperatorHoldRefusesWithoutTheDirectory() throws {
        let ledger = Ledger()
        ledger.holds["alice"] = OperatorHold(message: "Moving, back soon.", readOnlyStore: nil)
        let refused = try XCTUnwrap(refusal(gate().begin(login("alice"), user: "alice", address: "192.0.2.1", now: 0, ledger: ledger)))
        XCTAssertEqual(refused.failure, .unavailable(text: "Moving, back soon."))
        XCTAssertEqual(refused.outcome, .held)
    }

    func testAnOperatorHoldOnTheEntryHoldsEveryNameThatReachesIt() throws {
        let ledger = Ledger()
        ledger.entryHolds["uid=alice,dc=example"] = OperatorHold(message: "Moving.", readOnlyStore: nil)
        XCTAssertEqual(gate().begin(login("alice@example.org"), user: "alice@example.org", address: "192.0.2.1", now: 0,
                                    ledger: ledger), .lookUp, "the name alone is not held")
        let refused = try XCTUnwrap(refusal(gate().routed(found("legacy"), user: "alice@example.org", now: 0, ledger: ledger)))
        XCTAssertEqual(refused.outcome, .held)
    }

    func testAHoldValueInTheDirectoryRefusesAsHeld() throws {
        let refused = try XCTUnwrap(refusal(gate().routed(found("moving"), user: "alice", now: 0, ledger: Ledger())))
        XCTAssertEqual(refused.outcome, .held)
        XCTAssertEqual(refused.failure, .unavailable(text: RoutingTable.defaultHoldMessage))
    }

    func testAReadOnlyHoldAdmitsToItsStoreWithTheMessage() throws {
        let fromDirectory = try XCTUnwrap(route(gate().routed(found("moving-ro:legacy"), user: "alice", now: 0, ledger: Ledger())))
        XCTAssertEqual(fromDirectory.backend.name, "legacy")
        XCTAssertEqual(fromDirectory.readOnlyMessage, RoutingTable.defaultReadOnlyMessage)
        XCTAssertEqual(fromDirectory.target, .readOnly("legacy"))

        let ledger = Ledger()
        ledger.holds["alice"] = OperatorHold(message: "Read-only for now.", readOnlyStore: "legacy")
        let byOperator = try XCTUnwrap(route(gate().begin(login("alice"), user: "alice", address: "192.0.2.1", now: 0, ledger: ledger)))
        XCTAssertEqual(byOperator.readOnlyMessage, "Read-only for now.")
    }

    private func checkingGate() -> LoginGate {
        var checking = gate()
        checking.routing.credentialCheck.mode = .ldapBind
        return checking
    }

    func testWithVerifyCredentialsThePasswordIsCheckedBeforeAnythingElseAboutTheEntry() throws {
        let ledger = Ledger()
        let checking = checkingGate()
        XCTAssertEqual(checking.routed(found("legacy"), user: "alice", now: 0, ledger: ledger),
                       .checkCredentials(dn: "uid=alice,dc=example"))
        // A hold's message is for whoever knows the password.
        XCTAssertEqual(checking.routed(found("moving"), user: "alice", now: 0, ledger: ledger),
                       .checkCredentials(dn: "uid=alice,dc=example"))
        XCTAssertEqual(try XCTUnwrap(refusal(checking.routed(found("moving"), user: "alice", now: 0, ledger: ledger,
                                                              passwordChecked: true))).outcome, .held)
        let admitted = try XCTUnwrap(route(checking.routed(found("legacy"), user: "alice", now: 0, ledger: ledger,
                                                           passwordChecked: true)))
        XCTAssertEqual(admitted.backend.name, "legacy")
        // No entry, nothing to check a password against: refused like a wrong one, even with a
        // default backend.
        var withDefault = checking
        withDefault.routing.defaultBackend = "legacy"
        let unknown = try XCTUnwrap(refusal(withDefault.routed(RouteAnswer(result: .notFound, source: .directory), user: "alice",
                                                               now: 0, ledger: ledger)))
        XCTAssertEqual(unknown.failure, .authenticationFailed)
        XCTAssertTrue(unknown.countsAsFailedLogin)
        // The directory down: temporary, not a refusal of the password.
        let down = try XCTUnwrap(refusal(checking.routed(RouteAnswer(result: .unavailable(reason: "x"), source: .directory),
                                                         user: "alice", now: 0, ledger: ledger)))
        XCTAssertEqual(down.failure, .temporary)
    }

    func testWithVerifyCredentialsAnOperatorsReadOnlyHoldStillChecksThePassword() throws {
        let ledger = Ledger()
        ledger.holds["alice"] = OperatorHold(message: "Read-only for now.", readOnlyStore: "legacy")
        XCTAssertEqual(checkingGate().begin(login("alice"), user: "alice", address: "192.0.2.1", now: 0, ledger: ledger), .lookUp)
        XCTAssertEqual(checkingGate().routed(found("legacy"), user: "alice", now: 0, ledger: ledger),
                       .checkCredentials(dn: "uid=alice,dc=example"))
        // A full hold refuses at once: no store is contacted, so no password is needed.
        ledger.holds["alice"] = OperatorHold(message: "Moving.", readOnlyStore: nil)
        XCTAssertEqual(try XCTUnwrap(refusal(checkingGate().begin(login("alice"), user: "alice", address: "192.0.2.1", now: 0,
                                                                   ledger: ledger))).outcome, .held)
    }

    func testTheRouteCarriesTheEntrysAttributes() throws {
        let answer = RouteAnswer(result: .found(dn: "uid=alice,dc=example", backendValue: "legacy", attributes: ["uid": "alice"]),
                                 source: .directory)
        XCTAssertEqual(try XCTUnwrap(route(gate().routed(answer, user: "alice", now: 0, ledger: Ledger()))).attributes,
                       ["uid": "alice"])
    }

    func testAnUnknownUserIsRefusedLikeAWrongPasswordAndADirectoryFailureAsTemporary() throws {
        let unknown = try XCTUnwrap(refusal(gate().routed(RouteAnswer(result: .notFound, source: .directory), user: "nobody",
                                                          now: 0, ledger: Ledger())))
        XCTAssertEqual(unknown.failure, .authenticationFailed)
        XCTAssertTrue(unknown.delayed)
        XCTAssertTrue(unknown.countsAsFailedLogin)

        let down = try XCTUnwrap(refusal(gate().routed(RouteAnswer(result: .unavailable(reason: "timeout"), source: .directory),
                                                       user: "alice", now: 0, ledger: Ledger())))
        XCTAssertEqual(down.failure, .temporary)
        XCTAssertFalse(down.delayed)
        XCTAssertFalse(down.countsAsFailedLogin)

        let nowhere = try XCTUnwrap(refusal(gate().routed(found("no-such-store"), user: "alice", now: 0, ledger: Ledger())))
        XCTAssertEqual(nowhere.failure, .temporary, "a route the directory names wrongly is ours to fix, not the user's")
    }

    func testTooManySessionsOfTheUserRefuseWithTheLimitCode() throws {
        let ledger = Ledger()
        ledger.sessions["alice"] = 3   // this login's own session included
        XCTAssertNotNil(route(gate(maxSessionsPerUser: 3).routed(found("legacy"), user: "alice", now: 0, ledger: ledger)))
        ledger.sessions["alice"] = 4
        let refused = try XCTUnwrap(refusal(gate(maxSessionsPerUser: 3).routed(found("legacy"), user: "alice", now: 0, ledger: ledger)))
        XCTAssertEqual(refused.failure, .limit(text: "Too many sessions for this user."))
        XCTAssertEqual(refused.limit, .sessionsPerUser)
        XCTAssertEqual(refused.outcome, .limited)
    }

    func testSessionsAreCountedByTheDirectoryEntryWhateverNameTheyUsed() throws {
        let ledger = Ledger()
        ledger.entrySessions["uid=alice,dc=example"] = 4   // alice and ALICE@example.org together
        let refused = try XCTUnwrap(refusal(gate(maxSessionsPerUser: 3).routed(found("legacy"), user: "alice", now: 0, ledger: ledger)))
        XCTAssertEqual(refused.limit, .sessionsPerUser)
    }

    func testAStoreOverItsSlotsIsRefusedAndATakenSlotIsSaid() throws {
        let ledger = Ledger()
        let first = try XCTUnwrap(route(gate().routed(found("limited"), user: "alice", now: 0, ledger: ledger)))
        XCTAssertTrue(first.holdsStoreSlot)
        let refused = try XCTUnwrap(refusal(gate().routed(found("limited"), user: "bob", now: 0, ledger: ledger)))
        XCTAssertEqual(refused.failure, .temporary)
        XCTAssertEqual(refused.limit, .store(.maxSessions))
        ledger.budget.release(backendNamed: "limited")
        XCTAssertNotNil(route(gate().routed(found("limited"), user: "bob", now: 0, ledger: ledger)))
    }

    func testARefusalWaitsForTheFailureDelayCountedFromTheLoginCommand() {
        let wrongPassword = LoginRefusal(.authenticationFailed, "store said no")
        XCTAssertEqual(wrongPassword.answerDelay(loginStartedAt: 100, now: 100.5, authFailureDelay: 2), 1.5)
        XCTAssertNil(wrongPassword.answerDelay(loginStartedAt: 100, now: 102.5, authFailureDelay: 2),
                     "a store slower than the delay is not waited for twice")
        XCTAssertNil(wrongPassword.answerDelay(loginStartedAt: 100, now: 101.9995, authFailureDelay: 2),
                     "less than a millisecond is answered at once")
        XCTAssertNil(LoginRefusal(.temporary, "store down").answerDelay(loginStartedAt: 100, now: 100, authFailureDelay: 2))
        XCTAssertEqual(LoginRefusal(.temporary, "locked", delayed: true).answerDelay(loginStartedAt: 100, now: 100, authFailureDelay: 2), 2)
        XCTAssertNil(LoginRefusal(.authenticationFailed, "x", delayed: false).answerDelay(loginStartedAt: 0, now: 0, authFailureDelay: 2))
    }
}
