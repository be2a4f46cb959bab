import Dispatch
import Routing
import Synchronization

/// Checks OAuth access tokens against an RFC 7662 introspection endpoint
/// (`oauth_introspection_url`) before a login is routed: a POST of the form-encoded token with
/// `token_type_hint=access_token`, the client authenticated with HTTP Basic when an id is
/// configured; a 200 answer's `active` and `username` make the verdict, anything else is
/// `.unavailable`.
///
/// libcurl's easy interface blocks, so, as the LDAP bind pool does, each of `connections`
/// connections is a serial queue of its own, never an event loop and never the caller's thread;
/// that many checks run at once and the rest wait in a bounded queue, first come first served.
/// Every check ends within the timeout once it has a connection.
///
/// No verdict, log line or error text holds the token: reasons come from libcurl's fixed
/// error strings, the HTTP status, or our own words.
public final class TokenIntrospection: TokenChecker {
    private struct Request {
        let token: [UInt8]
        let completion: @Sendable (TokenVerdict) -> Void
    }

    private let state: Mutex<(idle: [IntrospectionConnection], waiting: [Request])>
    private let maxWaiting: Int

    /// - Parameters:
    ///   - url: the endpoint, `http` or `https`; a malformed one makes every check unavailable.
    ///   - clientID: with it, requests carry HTTP Basic with this id and `clientSecret`
    ///     (empty when nil); without it they are not authenticated.
    ///   - timeoutSeconds: the bound on one request, connecting included.
    ///   - connections: checks in flight at once, each over a connection kept alive.
    ///   - maxWaiting: checks that may wait for a connection (256 per connection by default);
    ///     beyond it a check is unavailable at once.
    public init(url: String, clientID: String?, clientSecret: String?, timeoutSeconds: Double, connections: Int,
                maxWaiting: Int? = nil) {
        let endpoint = IntrospectionEndpoint(
            url: url,
            basicUser: clientID.map(FormEncoding.encode),
            basicPassword: clientID.map { _ in FormEncoding.encode(clientSecret ?? "") },
            // 0 would mean "no timeout" to libcurl.
            timeoutMilliseconds: max(1, Int((timeoutSeconds * 1000).rounded(.up))))
        let count = max(1, connections)
        state = Mutex((idle: (0..<count).map { IntrospectionConnection(index: $0, endpoint: endpoint) }, waiting: []))
        self.maxWaiting = max(0, maxWaiting ?? count * 256)
    }

    /// The completion runs on a connection's queue, or on the caller's thread when the answer
    /// needs no request (an empty token, too many checks waiting).
    public func check(token: [UInt8], completion: @escaping @Sendable (TokenVerdict) -> Void) {
        // No server calls an empty string a token; there is nothing to ask.
        guard !token.isEmpty else {
            completion(.inactive)
            return
        }
        let request = Request(token: token, completion: completion)
        enum Start { case now(IntrospectionConnection), queued, full }
        let start: Start = state.withLock { state in
            if let connection = state.idle.popLast() { return .now(connection) }
            guard state.waiting.count < maxWaiting else { return .full }
            state.waiting.append(request)
            return .queued
        }
        switch start {
        case .now(let connection): run(request, on: connection)
        case .queued: break
        case .full: completion(.unavailable(reason: "too many token checks waiting"))
        }
    }

    private func run(_ request: Request, on connection: IntrospectionConnection) {
        connection.queue.async { [self] in
            request.completion(connection.introspect(token: request.token))
            let next: Request? = state.withLock { state in
                if state.waiting.isEmpty {
                    state.idle.append(connection)
                    return nil
                }
                return state.waiting.removeFirst()
            }
            if let next { run(next, on: connection) }
        }
    }
}
