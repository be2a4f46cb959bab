#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CLDAPShims
import Configuration
import Dispatch
import Routing
import Synchronization

/// Checks a password by binding as the user's entry (`verify_credentials: ldap_bind`), on
/// connections of a pool of its own: never the lookup connection (a bind changes who a
/// connection is), never an event loop.
///
/// LDAP allows one bind in flight per connection (RFC 4511 §4.2.1), so each connection is a
/// serial queue that binds with libldap's synchronous call, bounded by the network and
/// operation timeouts; `connections` of them bind in parallel and the rest wait in a bounded
/// queue. The connection stays open and is simply bound again for the next check, as Dovecot's
/// `auth_bind` does. Servers are tried in configuration order, skipping those the shared
/// health says are down; a connection the server dropped while idle is reopened once.
///
/// `@unchecked Sendable`: `waiting` and `idle` are touched only under `state`; each slot's
/// handle only on its own queue.
public final class LDAPBindPool: PasswordChecker, @unchecked Sendable {
    private final class Slot: @unchecked Sendable {
        let queue: DispatchQueue
        /// Used only on `queue`.
        var handle: OpaquePointer?
        var uri: String?

        init(index: Int) { queue = DispatchQueue(label: "mailswitch.ldap.bind.\(index)") }

        deinit { if let handle { ldap_unbind_ext(handle, nil, nil) } }
    }

    private struct Request {
        let dn: String
        let password: [UInt8]
        let completion: @Sendable (CredentialVerdict) -> Void
    }

    private let configuration: DirectoryConfiguration
    private let health: LDAPServerHealth
    private let state: Mutex<(idle: [Slot], waiting: [Request])>
    private let maxWaiting: Int

    public init(configuration: DirectoryConfiguration, connections: Int, health: LDAPServerHealth = .shared) {
        self.configuration = configuration
        self.health = health
        let slots = (0..<max(1, connections)).map(Slot.init)
        state = Mutex((idle: slots, waiting: []))
        maxWaiting = max(1, connections) * 256
    }

    public func check(dn: String, password: [UInt8], completion: @escaping @Sendable (CredentialVerdict) -> Void) {
        // An empty password is an unauthenticated bind (RFC 4513 §5.1.2): servers answer it
        // with success and no identity. It proves nothing.
        guard !password.isEmpty else {
            completion(.refused(reason: "empty password"))
            return
        }
        guard !dn.isEmpty else {
            completion(.refused(reason: "no entry"))
            return
        }
        let request = Request(dn: dn, password: password, completion: completion)
        enum Start { case now(Slot), queued, full }
        let start: Start = state.withLock { state in
            if let slot = state.idle.popLast() { return .now(slot) }
            guard state.waiting.count < maxWaiting else { return .full }
            state.waiting.append(request)
            return .queued
        }
        switch start {
        case .now(let slot): run(request, on: slot)
        case .queued: break
        case .full: completion(.unavailable(reason: "too many password checks waiting"))
        }
    }

    private func run(_ request: Request, on slot: Slot) {
        slot.queue.async { [self] in
            let verdict = bind(request, on: slot)
            request.completion(verdict)
            let next: Request? = state.withLock { state in
                if state.waiting.isEmpty {
                    state.idle.append(slot)
                    return nil
                }
                return state.waiting.removeFirst()
            }
            if let next { run(next, on: slot) }
        }
    }

    /// On the slot's queue.
    private func bind(_ request: Request, on slot: Slot) -> CredentialVerdict {
        let servers = health.usable(configuration.uris)
        guard !servers.isEmpty else { return .unavailable(reason: "no directory server can be used") }
        var problems: [String] = []
        for uri in servers {
            // Twice: the first failure may be a connection the server closed while it sat idle.
            for _ in 0..<2 {
                if slot.uri != uri { close(slot) }
                if slot.handle == nil {
                    guard case .success(let handle) = LDAPBind.handle(uri: uri, configuration: configuration) else {
                        problems.append("\(uri): invalid URI")
                        break
                    }
                    slot.handle = handle
                    slot.uri = uri
                }
                let startedAt = LDAPServerHealth.now()
                let rc = request.password.withUnsafeBufferPointer { bytes in
                    bytes.withMemoryRebound(to: CChar.self) { chars in
                        mailswitch_ldap_simple_bind_s(slot.handle, request.dn, chars.baseAddress, chars.count)
                    }
                }
                switch rc {
                case LDAP_SUCCESS:
                    return .accepted
                case LDAP_INVALID_CREDENTIALS, LDAP_INAPPROPRIATE_AUTH, LDAP_UNWILLING_TO_PERFORM,
                     LDAP_INVALID_DN_SYNTAX, LDAP_NO_SUCH_OBJECT:
                    // The server answered: this password does not open this entry.
                    return .refused(reason: LDAPBind.text(rc))
                default:
                    close(slot)
                    problems.append("\(uri): \(LDAPBind.text(rc))")
                    if rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR {
                        _ = health.attemptFailed(uri, reason: LDAPBind.text(rc), serverFault: true, startedAt: startedAt)
                    }
                }
            }
        }
        return .unavailable(reason: problems.joined(separator: "; "))
    }

    private func close(_ slot: Slot) {
        if let handle = slot.handle { ldap_unbind_ext(handle, nil, nil) }
        slot.handle = nil
        slot.uri = nil
    }
}
