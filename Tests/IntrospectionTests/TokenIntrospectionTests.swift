import Foundation
import Introspection
import Routing
import XCTest

/// `TokenIntrospection` against a real HTTP server on loopback (no other network needed).
final class TokenIntrospectionTests: XCTestCase {
    /// Each test's tokens end in a part of their own, so that a reason quoting one is caught.
    private let secret = UUID().uuidString

    private func token(_ kind: String) -> String { "\(kind).\(secret)" }

    private func isUnavailable(_ verdict: TokenVerdict?, saying text: String) -> Bool {
        guard case .unavailable(let reason)? = verdict else { return false }
        return reason.contains(text)
    }

    func testEachAnswerMakesItsVerdict() throws {
        let server = try IntrospectionServer()
        let checker = TokenIntrospection(url: server.url, clientID: nil, clientSecret: nil, timeoutSeconds: 10,
                                         connections: 2)
        let tokens = ["good", "bad", "unknown", "500", "junk", "number", "redirect", "huge"].map(token)
        let verdicts = verdicts(for: tokens, from: checker)
        XCTAssertEqual(verdicts[0], .active(username: "alice@example.org"))
        XCTAssertEqual(verdicts[1], .inactive)
        XCTAssertEqual(verdicts[2], .inactive)
        XCTAssertEqual(verdicts[3], .unavailable(reason: "introspection endpoint answered HTTP 500"))
        XCTAssertTrue(isUnavailable(verdicts[4], saying: "not RFC 7662 JSON"), "\(String(describing: verdicts[4]))")
        // RFC 7662's "active" is a boolean: 1 is not "true".
        XCTAssertTrue(isUnavailable(verdicts[5], saying: "not RFC 7662 JSON"), "\(String(describing: verdicts[5]))")
        // A redirect is not followed: the token goes to the configured URL only.
        XCTAssertEqual(verdicts[6], .unavailable(reason: "introspection endpoint answered HTTP 302"))
        XCTAssertTrue(isUnavailable(verdicts[7], saying: "longer than"), "\(String(describing: verdicts[7]))")
        assertNoReasonQuotes(tokens, secret: secret, in: verdicts)
    }

    func testASlowServerIsUnavailableOnceTheTimeoutPasses() throws {
        let server = try IntrospectionServer()
        let checker = TokenIntrospection(url: server.url, clientID: nil, clientSecret: nil, timeoutSeconds: 0.5,
                                         connections: 1)
        let started = Date()
        let tokens = [token("slow"), token("good")]
        let verdicts = verdicts(for: tokens, from: checker)
        // The server holds the first answer for a minute; the check gives up after half a second
        // and the connection serves the next check at once.
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertTrue(isUnavailable(verdicts[0], saying: "Timeout"), "\(String(describing: verdicts[0]))")
        XCTAssertEqual(verdicts[1], .active(username: "alice@example.org"))
        assertNoReasonQuotes(tokens, secret: secret, in: verdicts)
    }

    func testTheTokenArrivesIntactWhateverBytesItHolds() throws {
        let server = try IntrospectionServer()
        let checker = TokenIntrospection(url: server.url, clientID: nil, clientSecret: nil, timeoutSeconds: 10,
                                         connections: 1)
        let odd = "echo.a b&token=x+y%20=/?#ü\u{1}\(secret)"
        XCTAssertEqual(verdicts(for: [odd], from: checker), [.active(username: odd)])
    }

    func testTheClientAuthenticatesWithHTTPBasicFormEncoded() throws {
        // A ':' in the id and '+', '/', a space and a non-ASCII letter in the secret: RFC 6749
        // §2.3.1 form-encodes both before they are joined with ':'.
        let server = try IntrospectionServer(clientID: "mail:switch", clientSecret: "s3 cr+t/é")
        let authenticated = TokenIntrospection(url: server.url, clientID: "mail:switch", clientSecret: "s3 cr+t/é",
                                               timeoutSeconds: 10, connections: 1)
        let wrongSecret = TokenIntrospection(url: server.url, clientID: "mail:switch", clientSecret: "guess",
                                             timeoutSeconds: 10, connections: 1)
        let anonymous = TokenIntrospection(url: server.url, clientID: nil, clientSecret: nil, timeoutSeconds: 10,
                                           connections: 1)
        XCTAssertEqual(verdicts(for: [token("good"), token("bad")], from: authenticated),
                       [.active(username: "alice@example.org"), .inactive])
        // Refused client credentials are the proxy's configuration, not the user's token.
        let refused = TokenVerdict.unavailable(reason: "introspection endpoint answered HTTP 401")
        XCTAssertEqual(verdicts(for: [token("good")], from: wrongSecret), [refused])
        XCTAssertEqual(verdicts(for: [token("good")], from: anonymous), [refused])
    }

    func testManyChecksAtOnceAllCompleteOverKeptConnections() throws {
        let server = try IntrospectionServer()
        let checker = TokenIntrospection(url: server.url, clientID: nil, clientSecret: nil, timeoutSeconds: 10,
                                         connections: 2)
        let tokens = (0..<20).map { token($0.isMultiple(of: 2) ? "good" : "bad") }
        let verdicts = verdicts(for: tokens, from: checker)
        for (index, verdict) in verdicts.enumerated() {
            XCTAssertEqual(verdict, index.isMultiple(of: 2) ? .active(username: "alice@example.org") : .inactive,
                           "check \(index)")
        }
        // Two connections did all of it: each handle kept its connection alive between checks.
        guard case .active(let count?)? = self.verdicts(for: [token("connections")], from: checker).first,
              let connections = Int(count) else {
            return XCTFail("no connection count")
        }
        XCTAssertLessThanOrEqual(connections, 2)
    }

    func testBeyondTheWaitingLimitACheckIsUnavailableAtOnce() throws {
        let server = try IntrospectionServer()
        let checker = TokenIntrospection(url: server.url, clientID: nil, clientSecret: nil, timeoutSeconds: 0.5,
                                         connections: 1, maxWaiting: 1)
        let log = VerdictLog()
        let done = (0..<2).map { expectation(description: "check \($0)") }
        // The first holds the only connection, the second waits: the third has no room.
        for index in 0..<2 {
            let fulfilled = done[index]
            checker.check(token: Array(token("slow").utf8)) { verdict in
                log.record(verdict, for: index)
                fulfilled.fulfill()
            }
        }
        let overflow = VerdictLog()
        checker.check(token: Array(token("good").utf8)) { overflow.record($0, for: 0) }
        // Answered before `check` returned, without a request.
        XCTAssertEqual(overflow.verdicts[0], .unavailable(reason: "too many token checks waiting"))
        wait(for: done, timeout: 20)
        for index in 0..<2 {
            let verdict = log.verdicts[index]
            XCTAssertTrue(isUnavailable(verdict, saying: "Timeout"), "\(String(describing: verdict))")
        }
    }

    func testNoServerNoSchemeButHTTPAndNoTokenAreAnsweredWithoutHanging() throws {
        let server = try IntrospectionServer()
        let gone = server.url
        server.stop()
        let refused = TokenIntrospection(url: gone, clientID: nil, clientSecret: nil, timeoutSeconds: 10,
                                         connections: 1)
        let tokens = [token("good")]
        let noServer = verdicts(for: tokens, from: refused)
        XCTAssertTrue(isUnavailable(noServer[0], saying: "connect"), "\(String(describing: noServer[0]))")
        assertNoReasonQuotes(tokens, secret: secret, in: noServer)

        // Only http and https: the token is never handed to another protocol.
        let ftp = TokenIntrospection(url: "ftp://127.0.0.1:\(server.port)/", clientID: nil, clientSecret: nil,
                                     timeoutSeconds: 10, connections: 1)
        let viaFTP = verdicts(for: tokens, from: ftp)
        XCTAssertTrue(isUnavailable(viaFTP[0], saying: "request failed"), "\(String(describing: viaFTP[0]))")
        assertNoReasonQuotes(tokens, secret: secret, in: viaFTP)

        // An empty token is no token: inactive, with nothing sent.
        let log = VerdictLog()
        refused.check(token: []) { log.record($0, for: 0) }
        XCTAssertEqual(log.verdicts[0], .inactive)
    }
}
