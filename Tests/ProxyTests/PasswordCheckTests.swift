import Configuration
import Directory
@testable import Proxy
import Routing
import Synchronization
import XCTest

/// A directory that answers from a table and counts the binds it was asked for.
private final class CountingChecker: PasswordChecker {
    let passwords: [String: [UInt8]]
    let binds = Mutex(0)
    let down = Atomic(false)

    init(passwords: [String: [UInt8]]) { self.passwords = passwords }

    func check(dn: String, password: [UInt8], completion: @escaping @Sendable (CredentialVerdict) -> Void) {
        binds.withLock { $0 += 1 }
        if down.load(ordering: .relaxed) { return completion(.unavailable(reason: "down")) }
        completion(passwords[dn] == password ? .accepted : .refused(reason: "Invalid credentials"))
    }
}

final class PasswordCheckTests: XCTestCase {
    private let directory = DirectoryConfiguration(uris: ["ldap://127.0.0.1:1"], bindDN: nil, bindPassword: nil, base: "dc=x",
                                                   filter: "(uid=%u)", backendAttribute: "mailHost", timeoutSeconds: 1)

    private func verdict(_ check: PasswordCheck, _ dn: String, _ password: String) -> CredentialVerdict {
        let answer = Mutex<CredentialVerdict?>(nil)
        check.check(dn: dn, password: Array(password.utf8)) { verdict in answer.withLock { $0 = verdict } }
        return answer.withLock { $0 } ?? .unavailable(reason: "no answer")
    }

    private func check(ttl: Double, _ checker: CountingChecker) -> PasswordCheck {
        var settings = CredentialCheck()
        settings.mode = .ldapBind
        settings.cacheTTL = ttl
        return PasswordCheck(settings: settings, directory: directory, checker: checker)
    }

    func testWithoutACacheEveryLoginBinds() {
        let checker = CountingChecker(passwords: ["uid=alice": Array("secret".utf8)])
        let check = check(ttl: 0, checker)
        XCTAssertEqual(verdict(check, "uid=alice", "secret"), .accepted)
        XCTAssertEqual(verdict(check, "uid=alice", "secret"), .accepted)
        XCTAssertEqual(verdict(check, "uid=alice", "wrong"), .refused(reason: "Invalid credentials"))
        XCTAssertEqual(checker.binds.withLock { $0 }, 3)
    }

    func testAnAcceptedPasswordIsTakenFromTheCacheAndOnlyThatOne() {
        let checker = CountingChecker(passwords: ["uid=alice": Array("secret".utf8)])
        let check = check(ttl: 300, checker)
        XCTAssertEqual(verdict(check, "uid=alice", "secret"), .accepted)
        XCTAssertEqual(verdict(check, "UID=Alice", "secret"), .accepted)
        XCTAssertEqual(checker.binds.withLock { $0 }, 1, "the second came from the cache")
        // Another password binds, and is refused, also while the right one is cached.
        XCTAssertEqual(verdict(check, "uid=alice", "wrong"), .refused(reason: "Invalid credentials"))
        XCTAssertEqual(checker.binds.withLock { $0 }, 2)
        // A refusal drops what was cached: the password may have changed.
        XCTAssertEqual(verdict(check, "uid=alice", "secret"), .accepted)
        XCTAssertEqual(checker.binds.withLock { $0 }, 3)
        // The directory down: the cached password still opens the mailbox, a guess does not.
        checker.down.store(true, ordering: .relaxed)
        XCTAssertEqual(verdict(check, "uid=alice", "secret"), .accepted)
        XCTAssertEqual(verdict(check, "uid=alice", "guess"), .unavailable(reason: "down"))
        // The change feed says the entry changed: bind again.
        check.forget(dn: "uid=alice")
        XCTAssertEqual(verdict(check, "uid=alice", "secret"), .unavailable(reason: "down"))
    }

    func testAReloadKeepsTheCheckUnlessItsSettingsChanged() throws {
        let base = ServiceConfiguration(listeners: [], directory: directory, routing: RoutingTable(backends: [:], defaultBackend: nil),
                                            limits: Limits(), logLevel: "info", tls: nil)
        XCTAssertNil(PasswordCheck.make(for: base, reusing: nil), "off by default")
        var on = base
        on.routing.credentialCheck.mode = .ldapBind
        let first = try XCTUnwrap(PasswordCheck.make(for: on, reusing: nil))
        XCTAssertTrue(PasswordCheck.make(for: on, reusing: first) === first)
        var longer = on
        longer.routing.credentialCheck.cacheTTL = 60
        XCTAssertFalse(PasswordCheck.make(for: longer, reusing: first) === first)
    }
}
