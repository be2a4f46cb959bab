#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CMailSwitchShims
import Dispatch
import EventLoop
import Routing

/// Looks users up in LDAP with libldap's asynchronous API: searches are sent without waiting,
/// the connection's descriptor sits in a DispatchSource, and results are collected with a
/// zero-timeout `ldap_result` when it becomes readable. Nothing here runs on the event loops.
///
/// `@unchecked Sendable`: every member is touched only on `queue` (asserted), which is also
/// the only queue that ever calls into the libldap handle.
public final class LDAPDirectory: Directory, @unchecked Sendable {
    private struct Pending {
        let completion: @Sendable (DirectoryResult) -> Void
        let timer: OneShotTimer
        var sentAt = DispatchTime.now()
    }

    private let configuration: DirectoryConfiguration
    private let queue = DispatchQueue(label: "mailswitch.ldap")
    private var handle: OpaquePointer?
    private var source: (any DispatchSourceRead)?
    private var pending: [Int32: Pending] = [:]
    private var waiting: [(user: String, completion: @Sendable (DirectoryResult) -> Void)] = []
    /// After a failed connect, lookups fail fast until this time instead of each waiting
    /// out a connect timeout.
    private var retryAfter: DispatchTime = .now()
    private var lastConnectError = ""
    /// The URI of the open connection (the errors metric's label).
    private var server = ""

    public init(configuration: DirectoryConfiguration) {
        self.configuration = configuration
    }

    public func lookup(_ user: String, completion: @escaping @Sendable (DirectoryResult) -> Void) {
        queue.async { [self] in
            if pending.count >= configuration.maxInFlight {
                // slapd defers and then drops a connection flooded with requests: queue, bounded.
                guard waiting.count < configuration.maxInFlight * 10 else {
                    completion(.unavailable(reason: "too many directory requests waiting"))
                    return
                }
                waiting.append((user, completion))
                return
            }
            search(user, completion)
        }
    }

    // MARK: - Connection

    private func connect() -> Bool {
        dispatchPrecondition(condition: .onQueue(queue))
        if handle != nil { return true }
        guard DispatchTime.now() >= retryAfter else { return false }
        for uri in configuration.uris {
            let ld: OpaquePointer
            switch LDAPBind.open(uri: uri, configuration: configuration) {
            case .failure(let error):
                lastConnectError = error.description
                DirectoryMetrics.error(server: uri)
                continue
            case .success(let handle):
                ld = handle
            }
            let fd = mailswitch_ldap_get_fd(ld)
            guard fd >= 0 else {
                lastConnectError = "\(uri): no descriptor after bind"
                DirectoryMetrics.error(server: uri)
                ldap_unbind_ext(ld, nil, nil)
                continue
            }
            handle = ld
            server = uri
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            source.setEventHandler { [weak self] in self?.collectResults() }
            source.resume()
            self.source = source
            return true
        }
        retryAfter = .now() + min(configuration.timeoutSeconds, 1)
        return false
    }

    /// Drops the connection and fails everything outstanding on it.
    private func disconnect(_ reason: String) {
        // Dispatch forbids closing a descriptor under a live source: libldap closes it in
        // ldap_unbind_ext, so that runs in the cancel handler (or now, when there is no source).
        if let handle {
            let unbind = UnboundHandle(handle)
            if let source {
                source.setCancelHandler { unbind.release() }
                source.cancel()
            } else {
                unbind.release()
            }
        }
        source = nil
        handle = nil
        let outstanding = pending
        pending = [:]
        for (_, request) in outstanding {
            request.timer.cancel()
            request.completion(.unavailable(reason: reason))
        }
    }

    // MARK: - Searching

    private func search(_ user: String, retrying: Bool = false, _ completion: @escaping @Sendable (DirectoryResult) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard connect(), let handle else {
            completion(.unavailable(reason: lastConnectError.isEmpty ? "no directory server reachable" : lastConnectError))
            return
        }
        let filter = LDAPFilter.expand(configuration.filter, user: user)
        var timeout = timeval(tv_sec: Int(configuration.timeoutSeconds),
                              tv_usec: Int((configuration.timeoutSeconds - Double(Int(configuration.timeoutSeconds))) * 1_000_000))
        var messageID: Int32 = 0
        let attribute = strdup(configuration.backendAttribute)
        defer { free(attribute) }
        var attributes: [UnsafeMutablePointer<CChar>?] = [attribute, nil]
        // Size limit 2: one entry is an answer, a second one proves the filter is ambiguous.
        let rc = ldap_search_ext(handle, configuration.base, LDAP_SCOPE_SUBTREE, filter, &attributes, 0,
                                 nil, nil, &timeout, 2, &messageID)
        if rc == LDAP_SERVER_DOWN && !retrying {
            // The server restarted since the last search: a fresh connection answers at once.
            DirectoryMetrics.error(server: server)
            disconnect("directory connection lost")
            return search(user, retrying: true, completion)
        }
        guard rc == LDAP_SUCCESS else {
            let reason = "search failed: \(String(cString: ldap_err2string(rc)))"
            DirectoryMetrics.error(server: server)
            completion(.unavailable(reason: reason))
            disconnect(reason)
            return
        }
        let id = messageID
        let timer = OneShotTimer(queue: queue, after: configuration.timeoutSeconds) { [weak self] in self?.timedOut(id) }
        pending[id] = Pending(completion: completion, timer: timer)
    }

    private func timedOut(_ id: Int32) {
        guard let request = pending.removeValue(forKey: id) else { return }
        DirectoryMetrics.error(server: server)
        if let handle { ldap_abandon_ext(handle, id, nil, nil) }
        request.completion(.unavailable(reason: "directory timed out after \(configuration.timeoutSeconds)s"))
        startWaiting()
    }

    private func startWaiting() {
        while pending.count < configuration.maxInFlight, !waiting.isEmpty {
            let next = waiting.removeFirst()
            search(next.user, next.completion)
        }
    }

    private func collectResults() {
        dispatchPrecondition(condition: .onQueue(queue))
        // libldap buffers messages internally: keep asking until it has none left.
        while let handle {
            var zero = timeval(tv_sec: 0, tv_usec: 0)
            var message: OpaquePointer?
            let rc = ldap_result(handle, LDAP_RES_ANY, LDAP_MSG_ALL, &zero, &message)
            if rc == 0 { break }
            guard rc > 0, let message else {
                DirectoryMetrics.error(server: server)
                disconnect("directory connection lost")
                break
            }
            let id = ldap_msgid(message)
            let result = interpret(message, handle: handle)
            ldap_msgfree(message)
            if let request = pending.removeValue(forKey: id) {
                request.timer.cancel()
                DirectoryMetrics.lookupAnswered(sentAt: request.sentAt)
                if case .unavailable = result { DirectoryMetrics.error(server: server) }
                request.completion(result)
            }
        }
        startWaiting()
    }

    private func interpret(_ chain: OpaquePointer, handle: OpaquePointer) -> DirectoryResult {
        var entries: [(dn: String, value: String?)] = []
        var code: Int32 = LDAP_OTHER
        var message: OpaquePointer? = ldap_first_message(handle, chain)
        while let current = message {
            let type = ber_tag_t(ldap_msgtype(current))
            if type == LDAP_RES_SEARCH_ENTRY {
                let dn = LDAPBind.dn(handle, current)
                let value = LDAPBind.values(handle, current, configuration.backendAttribute).first
                entries.append((dn, value))
            } else if type == LDAP_RES_SEARCH_RESULT {
                var resultCode: Int32 = 0
                if ldap_parse_result(handle, current, &resultCode, nil, nil, nil, nil, 0) == LDAP_SUCCESS {
                    code = resultCode
                }
            }
            message = ldap_next_message(handle, current)
        }
        if entries.count > 1 { return .ambiguous(count: entries.count) }
        switch code {
        case LDAP_SUCCESS, LDAP_SIZELIMIT_EXCEEDED:
            guard let entry = entries.first else { return .notFound }
            return .found(dn: entry.dn, backendValue: entry.value)
        case LDAP_NO_SUCH_OBJECT:
            return .unavailable(reason: "search base \(configuration.base) does not exist")
        default:
            return .unavailable(reason: "search failed: \(String(cString: ldap_err2string(code)))")
        }
    }
}

/// An LDAP handle on its way out, released on the directory queue once its read source is gone.
/// `@unchecked Sendable`: it is touched once, by the cancel handler on the directory queue.
private final class UnboundHandle: @unchecked Sendable {
    private let handle: OpaquePointer
    init(_ handle: OpaquePointer) { self.handle = handle }
    func release() { ldap_unbind_ext(handle, nil, nil) }
}
