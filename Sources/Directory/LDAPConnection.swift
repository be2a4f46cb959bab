#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CLDAPShims
import Configuration
import Dispatch
import EventLoop
import Routing

/// A lookup from the moment it is asked to its answer.
struct LDAPLookup: Sendable {
    let user: String
    let completion: @Sendable (DirectoryResult) -> Void
    /// Sent once already, on a connection that went away before answering: another loss
    /// answers it as unavailable instead of sending it a third time.
    var resent = false
}

/// One libldap handle to one directory server, from the connect to the unbind: it connects,
/// binds, then carries searches until it is closed or the server goes away.
///
/// Connecting is the one step libldap does only blocking — name resolution, the TCP connect
/// and, for ldaps://, the TLS handshake, bounded by the network timeout — so it runs on a
/// queue of its own, never the directory's. The bind is sent without waiting
/// (`ldap_sasl_bind`), and its answer, like every search's, is collected with a zero-timeout
/// `ldap_result` when the descriptor becomes readable. One deadline (`timeout`) covers the
/// connect and the bind together.
///
/// `@unchecked Sendable`: every member is touched only on the directory's `queue` (asserted).
/// The connect queue reads only constants and hands the new handle over through `queue`.
final class LDAPConnection: @unchecked Sendable {
    enum Phase: Equatable {
        case connecting
        case binding(messageID: Int32)
        case ready
        case closed
    }

    enum Event {
        case bound
        /// Connecting or binding failed, and the connection is closed. `serverFault` is false
        /// when the server answered and refused the credentials.
        case failed(reason: String, serverFault: Bool)
        /// A bound connection went away — closed by the server, or `hung`: silent for a whole
        /// search timeout. It is closed; the lookups that were on it come back to be sent again.
        case lost(reason: String, hung: Bool, outstanding: [LDAPLookup])
        /// A search was answered or given up: a slot is free.
        case searchEnded
    }

    enum SendOutcome {
        case sent
        /// The handle is unusable (the server went away since its last answer); nothing was
        /// answered: the caller closes the connection and sends the lookup elsewhere.
        case connectionDown(reason: String)
    }

    private struct Search {
        let lookup: LDAPLookup
        let timer: OneShotTimer
        let sentAt: DispatchTime
    }

    let uri: String
    /// Monotonic seconds (`LDAPServerHealth.now`), for the attempt's report to the health table.
    let startedAt: Double
    private(set) var phase = Phase.connecting
    /// Replaced by a more preferred server: it takes no new searches and closes once its last
    /// one is answered.
    var retiring = false
    private let configuration: DirectoryConfiguration
    private let queue: DispatchQueue
    private let onEvent: (LDAPConnection, Event) -> Void
    private var handle: LDAPHandle?
    private var source: (any DispatchSourceRead)?
    private var deadline: OneShotTimer?
    private var searches: [Int32: Search] = [:]
    /// When the server last sent anything. A search that times out with nothing heard since
    /// it was sent means the server hangs (stopped, or the network dropped it).
    private var lastHeard = DispatchTime.now()

    var inFlight: Int { searches.count }
    var isReady: Bool { phase == .ready }

    /// `onEvent` runs on `queue`.
    init(uri: String, startedAt: Double, configuration: DirectoryConfiguration, queue: DispatchQueue,
         onEvent: @escaping (LDAPConnection, Event) -> Void) {
        self.uri = uri
        self.startedAt = startedAt
        self.configuration = configuration
        self.queue = queue
        self.onEvent = onEvent
    }

    deinit {
        // Normally closed already; a connection dropped with its directory goes quietly.
        deadline?.cancel()
        for search in searches.values { search.timer.cancel() }
        if let source { source.cancel() } else { handle?.release() }
    }

    // MARK: - Connecting and binding

    func open() {
        dispatchPrecondition(condition: .onQueue(queue))
        let timeout = configuration.timeoutSeconds
        deadline = OneShotTimer(queue: queue, after: timeout) { [weak self] in
            guard let self else { return }
            let waitingFor = self.phase == .connecting ? "could not connect" : "no answer to the bind"
            self.fail("\(waitingFor) within \(LDAPServerHealth.seconds(timeout))s", serverFault: true)
        }
        // A queue per attempt: one server's slow name lookup never holds up another's connect.
        DispatchQueue(label: "mailswitch.ldap.connect").async { [self] in
            let outcome = LDAPBind.sendBind(uri: uri, configuration: configuration)
            queue.async { [self] in bindSent(outcome) }
        }
    }

    private func bindSent(_ outcome: Result<LDAPBind.SentBind, LDAPBind.Failure>) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .connecting else {
            // Given up (deadline, or closed by the directory) while the connect ran.
            if case .success(let sent) = outcome { sent.handle.release() }
            return
        }
        switch outcome {
        case .failure(let failure):
            fail(failure.description, serverFault: failure.serverFault)
        case .success(let sent):
            let fd = mailswitch_ldap_get_fd(sent.handle.pointer)
            guard fd >= 0 else {
                sent.handle.release()
                fail("no descriptor after connecting", serverFault: true)
                return
            }
            handle = sent.handle
            phase = .binding(messageID: sent.messageID)
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            source.setEventHandler { [weak self] in self?.collect() }
            // Dispatch forbids closing a descriptor under a live source: libldap closes it in
            // ldap_unbind_ext, so that runs once the source is cancelled.
            source.setCancelHandler { [handle = sent.handle] in handle.release() }
            source.resume()
            self.source = source
        }
    }

    private func bindAnswered(_ message: OpaquePointer, handle: OpaquePointer) {
        var code: Int32 = LDAP_OTHER
        var diagnostic: UnsafeMutablePointer<CChar>?
        if ldap_parse_result(handle, message, &code, nil, &diagnostic, nil, nil, 0) != LDAP_SUCCESS { code = LDAP_OTHER }
        var reason = "bind refused: \(LDAPBind.text(code))"
        if let diagnostic {
            let text = String(cString: diagnostic)
            if !text.isEmpty { reason += " (\(text))" }
            ldap_memfree(diagnostic)
        }
        guard code == LDAP_SUCCESS else {
            fail(reason, serverFault: !LDAPBind.isCredentialProblem(code))
            return
        }
        phase = .ready
        deadline?.cancel()
        deadline = nil
        onEvent(self, .bound)
    }

    /// Connecting or binding failed: closes and tells the directory.
    private func fail(_ reason: String, serverFault: Bool) {
        guard phase != .ready && phase != .closed else { return }
        close()
        onEvent(self, .failed(reason: reason, serverFault: serverFault))
    }

    // MARK: - Searching

    func search(_ lookup: LDAPLookup) -> SendOutcome {
        dispatchPrecondition(condition: .onQueue(queue))
        guard phase == .ready, let handle = handle?.pointer else { return .connectionDown(reason: "not connected") }
        let filter = LDAPFilter.expand(configuration.filter, user: lookup.user)
        let seconds = configuration.timeoutSeconds
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        var messageID: Int32 = 0
        // The backend attribute, and those a store's login_name names the user by.
        var attributes: [UnsafeMutablePointer<CChar>?] = ([configuration.backendAttribute] + configuration.entryAttributes)
            .map { strdup($0) } + [nil]
        defer { attributes.forEach { free($0) } }
        // Size limit 2: one entry is an answer, a second one proves the filter is ambiguous.
        let rc = ldap_search_ext(handle, configuration.base, LDAP_SCOPE_SUBTREE, filter, &attributes, 0,
                                 nil, nil, &timeout, 2, &messageID)
        guard rc == LDAP_SUCCESS else { return .connectionDown(reason: "search not sent: \(LDAPBind.text(rc))") }
        let id = messageID
        let timer = OneShotTimer(queue: queue, after: seconds) { [weak self] in self?.timedOut(id) }
        searches[id] = Search(lookup: lookup, timer: timer, sentAt: .now())
        return .sent
    }

    private func timedOut(_ id: Int32) {
        guard let search = searches.removeValue(forKey: id) else { return }
        DirectoryMetrics.error(server: uri)
        if let handle = handle?.pointer { ldap_abandon_ext(handle, id, nil, nil) }
        let seconds = LDAPServerHealth.seconds(configuration.timeoutSeconds)
        search.lookup.completion(.unavailable(reason: "directory timed out after \(seconds)s"))
        if lastHeard.uptimeNanoseconds < search.sentAt.uptimeNanoseconds {
            // Not a slow search: the server has said nothing at all since. Another server may answer.
            let outstanding = close()
            onEvent(self, .lost(reason: "no answer for \(seconds)s", hung: true, outstanding: outstanding))
        } else {
            onEvent(self, .searchEnded)
        }
    }

    private func collect() {
        dispatchPrecondition(condition: .onQueue(queue))
        // libldap buffers messages internally: keep asking until it has none left. An event
        // handled below may close this connection: `handle` is checked on every round.
        while let handle = handle?.pointer {
            var zero = timeval(tv_sec: 0, tv_usec: 0)
            var message: OpaquePointer?
            let rc = ldap_result(handle, LDAP_RES_ANY, LDAP_MSG_ALL, &zero, &message)
            if rc == 0 { break }
            guard rc > 0, let message else {
                if phase == .ready {
                    let outstanding = close()
                    onEvent(self, .lost(reason: "connection lost", hung: false, outstanding: outstanding))
                } else {
                    fail("connection closed during the bind", serverFault: true)
                }
                return
            }
            lastHeard = .now()
            let id = ldap_msgid(message)
            if case .binding(let bindID) = phase, id == bindID {
                bindAnswered(message, handle: handle)
                ldap_msgfree(message)
                continue
            }
            let result = interpret(message, handle: handle)
            ldap_msgfree(message)
            if let search = searches.removeValue(forKey: id) {
                search.timer.cancel()
                DirectoryMetrics.lookupAnswered(sentAt: search.sentAt)
                if case .unavailable = result { DirectoryMetrics.error(server: uri) }
                search.lookup.completion(result)
                onEvent(self, .searchEnded)
            }
        }
    }

    private func interpret(_ chain: OpaquePointer, handle: OpaquePointer) -> DirectoryResult {
        var entries: [(dn: String, value: String?, attributes: [String: String])] = []
        var code: Int32 = LDAP_OTHER
        var message: OpaquePointer? = ldap_first_message(handle, chain)
        while let current = message {
            let type = ber_tag_t(ldap_msgtype(current))
            if type == LDAP_RES_SEARCH_ENTRY {
                let dn = LDAPBind.dn(handle, current)
                let value = LDAPBind.values(handle, current, configuration.backendAttribute).first
                entries.append((dn, value, LDAPBind.firstValues(handle, current, configuration.entryAttributes)))
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
            return .found(dn: entry.dn, backendValue: entry.value, attributes: entry.attributes)
        case LDAP_NO_SUCH_OBJECT:
            return .unavailable(reason: "search base \(configuration.base) does not exist")
        default:
            return .unavailable(reason: "search failed: \(LDAPBind.text(code))")
        }
    }

    // MARK: - Closing

    /// Closes now (unbinding once the read source is gone) and returns the lookups that were
    /// waiting for an answer on it, unanswered.
    @discardableResult
    func close() -> [LDAPLookup] {
        dispatchPrecondition(condition: .onQueue(queue))
        phase = .closed
        deadline?.cancel()
        deadline = nil
        let outstanding = searches.values.sorted { $0.sentAt < $1.sentAt }.map { search in
            search.timer.cancel()
            return search.lookup
        }
        searches = [:]
        if let source {
            source.cancel()
        } else {
            handle?.release()
        }
        source = nil
        handle = nil
        return outstanding
    }
}
