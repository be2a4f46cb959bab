#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CLDAPShims
import Configuration
import Dispatch
import Routing
import Synchronization

/// One entry that changed in the directory.
public struct DirectoryChange: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case added, modified, deleted
    }

    public var kind: Kind
    public var dn: String
    /// The entry's values of the filter's login attributes (`uid` for `(uid=%u)`): the login
    /// names that may reach it. Empty for a deletion, which names the entry by DN only.
    public var loginValues: [String]

    public init(kind: Kind, dn: String, loginValues: [String]) {
        self.kind = kind
        self.dn = dn
        self.loginValues = loginValues
    }
}

public enum ChangeFeedEvent: Sendable, Equatable {
    /// Connected and caught up. `resumed`: the feed continued from where it had stopped, and
    /// the refresh carried what changed meanwhile, but an entry deleted meanwhile may not be
    /// named (servers without a session log send only what is still present): recheck.
    case synchronized(server: String, resumed: Bool)
    case changed(DirectoryChange)
    case disconnected(reason: String)
    /// The server does not offer RFC 4533 content synchronization.
    case unsupported(reason: String)
}

/// Follows the directory with one RFC 4533 refreshAndPersist search (OpenLDAP's syncprov)
/// through libldap's `ldap_sync_*` client, on a thread of its own: libldap's sync client
/// blocks while it refreshes, so it never runs on an event loop or the lookup queue, and a
/// slow feed never delays a login. It reconnects with back-off and resumes from its cookie,
/// trying `directory.uris` in order and passing over those the lookup connection or the feed
/// itself found down (`LDAPServerHealth`). It stays on the server it follows until that
/// connection ends; then the most preferred one is tried first again.
///
/// `@unchecked Sendable`: the libldap state is touched only by the feed's own queue; `stopped`
/// is atomic.
public final class SyncReplFeed: @unchecked Sendable {
    private let configuration: DirectoryConfiguration
    private let loginAttributes: [String]
    private let onEvent: @Sendable (ChangeFeedEvent) -> Void
    private let queue = DispatchQueue(label: "mailswitch.changefeed")
    private let stopped = Atomic<Bool>(false)
    /// Feed queue only: entries of a first (cookie-less) refresh are the whole directory, not
    /// changes, and are not reported.
    private var reportEntries = false
    private var searchEnded = false
    /// After the first synchronization, every later one follows an interruption.
    private var everSynchronized = false
    /// Feed queue only: the servers last reported as passed over (`reportSkipped`).
    private var reportedSkipped: [String] = []
    /// Feed queue only: why the last server that refused the sync search refused it.
    private var unsupportedReason = ""
    private let health: LDAPServerHealth
    /// Fed with every entry when logins are answered from a replica (`directory.replica`).
    private let replica: ReplicaDirectory?

    public init(configuration: DirectoryConfiguration, loginAttributes: [String], health: LDAPServerHealth = .shared,
                replica: ReplicaDirectory? = nil, onEvent: @escaping @Sendable (ChangeFeedEvent) -> Void) {
        self.configuration = configuration
        self.health = health
        self.replica = replica
        self.loginAttributes = loginAttributes
        self.onEvent = onEvent
    }

    public func start() {
        queue.async { [self] in run() }
    }

    /// Stops within a second (the poll interval).
    public func stop() {
        stopped.store(true, ordering: .relaxed)
    }

    private var isStopped: Bool { stopped.load(ordering: .relaxed) }

    // MARK: - The feed's thread

    private func run() {
        guard let sync = ldap_sync_initialize(nil) else {
            onEvent(.disconnected(reason: "cannot allocate the sync state"))
            return
        }
        // These live as long as the process: the feed is never torn down while it runs.
        sync.pointee.ls_base = strdup(configuration.base)
        sync.pointee.ls_scope = LDAP_SCOPE_SUBTREE
        sync.pointee.ls_filter = strdup("(objectClass=*)")
        // The replica also matches the filter's fixed equalities itself: their attributes too.
        // And those a store's login_name names the user by.
        var wanted = [configuration.backendAttribute]
        for name in loginAttributes + (replica?.filterAttributes ?? []) + configuration.entryAttributes
        where !wanted.contains(where: { $0.lowercased() == name.lowercased() }) {
            wanted.append(name)
        }
        let attributes = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: wanted.count + 1)
        for (index, name) in wanted.enumerated() { attributes[index] = strdup(name) }
        attributes[wanted.count] = nil
        sync.pointee.ls_attrs = attributes
        sync.pointee.ls_timeout = 1   // seconds per poll, so `stop` is noticed
        sync.pointee.ls_private = Unmanaged.passUnretained(self).toOpaque()
        sync.pointee.ls_search_entry = { sync, message, uuid, phase in
            guard let sync, let message, let context = sync.pointee.ls_private else { return LDAP_SUCCESS }
            let key = uuid.map { berval in
                UnsafeRawBufferPointer(start: berval.pointee.bv_val, count: Int(berval.pointee.bv_len))
                    .map { String($0, radix: 16) }.joined(separator: ".")
            }
            Unmanaged<SyncReplFeed>.fromOpaque(context).takeUnretainedValue().entry(sync, message, key, phase)
            return LDAP_SUCCESS
        }
        sync.pointee.ls_search_result = { sync, _, _ in
            guard let sync, let context = sync.pointee.ls_private else { return LDAP_SUCCESS }
            Unmanaged<SyncReplFeed>.fromOpaque(context).takeUnretainedValue().searchEnded = true
            return LDAP_SUCCESS
        }

        var backoff = 0.25
        var lastProblem = ""
        while !isStopped {
            let problem = connectAndFollow(sync, resetBackoff: {
                backoff = 0.25
                lastProblem = ""
            })
            if problem == "unsupported" || isStopped { return }
            if problem != lastProblem {
                onEvent(.disconnected(reason: problem))
                lastProblem = problem
            }
            pause(backoff)
            backoff = min(backoff * 2, 5)
        }
    }

    /// Tries the servers in configuration order, skipping those the health table says are
    /// down (the lookup connection may have found them so), and follows the first that binds
    /// until that connection ends. Returns why it ended or why no server could be used.
    private func connectAndFollow(_ sync: UnsafeMutablePointer<ldap_sync_t>, resetBackoff: () -> Void) -> String {
        var passed: [(uri: String, why: String)] = []
        let usable = Set(health.usable(configuration.uris))
        for uri in configuration.uris where !isStopped {
            guard usable.contains(uri) else {
                let status = health.statuses(of: [uri]).first
                passed.append((uri, "down: \(status?.lastError ?? "failed")"))
                continue
            }
            let startedAt = LDAPServerHealth.now()
            switch LDAPBind.open(uri: uri, configuration: configuration) {
            case .failure(let failure):
                health.attemptFailed(uri, reason: failure.description, serverFault: failure.serverFault, startedAt: startedAt)
                DirectoryMetrics.error(server: uri)
                passed.append((uri, failure.description))
            case .success(let handle):
                health.attemptSucceeded(uri, startedAt: startedAt)
                let skipped = passed
                let problem = follow(sync, handle: handle, uri: uri, whenSynchronized: {
                    reportSkipped(skipped.map(\.uri), why: skipped.map { "\($0.uri) skipped (\($0.why))" }.joined(separator: "; "))
                    resetBackoff()
                })
                if problem != "stopped" && problem != "unsupported" { DirectoryMetrics.error(server: uri) }
                ldap_unbind_ext(handle, nil, nil)
                sync.pointee.ls_ld = nil
                if problem == "unsupported" {
                    if everSynchronized {
                        // Another server offered the feed, so the directory has one: this one
                        // (a replica without syncprov, say) is passed over like a dead one
                        // until that server is back, and the feed resumes from its cookie.
                        passed.append((uri, "no RFC 4533 sync: \(unsupportedReason)"))
                        continue
                    }
                    onEvent(.unsupported(reason: "\(uri): \(unsupportedReason)"))
                }
                // Whatever ended it, start again from the most preferred server.
                return problem
            }
        }
        if isStopped { return "stopped" }
        return passed.map { "\($0.uri): \($0.why)" }.joined(separator: "; ")
    }

    /// Says which servers were passed over on the way to the one now followed, once per set
    /// of servers: the log shows a failover without a line on every reconnect.
    private func reportSkipped(_ uris: [String], why: String) {
        guard uris != reportedSkipped else { return }
        reportedSkipped = uris
        guard !uris.isEmpty else { return }
        onEvent(.disconnected(reason: why))
    }

    /// Sleeps in slices, so that `stop` is noticed within a tenth of a second.
    private func pause(_ seconds: Double) {
        var left = seconds
        while left > 0 && !isStopped {
            let slice = min(left, 0.1)
            usleep(UInt32(slice * 1_000_000))
            left -= slice
        }
    }

    /// Runs the sync search on one bound handle until it fails; returns why.
    private func follow(_ sync: UnsafeMutablePointer<ldap_sync_t>, handle: OpaquePointer, uri: String,
                        whenSynchronized: () -> Void) -> String {
        sync.pointee.ls_ld = handle
        if let replica {
            // A replica is rebuilt from a full refresh at every connect: a resumed refresh
            // does not name every entry deleted meanwhile (servers without a session log).
            ber_memfree(sync.pointee.ls_cookie.bv_val)
            sync.pointee.ls_cookie = berval(bv_len: 0, bv_val: nil)
            replica.refreshBegan()
        }
        reportEntries = sync.pointee.ls_cookie.bv_val != nil
        searchEnded = false
        var rc = ldap_sync_init(sync, LDAP_SYNC_REFRESH_AND_PERSIST)
        if rc == LDAP_SYNC_REFRESH_REQUIRED {
            // The cookie is too old for the server: start over with a full refresh.
            ber_memfree(sync.pointee.ls_cookie.bv_val)
            sync.pointee.ls_cookie = berval(bv_len: 0, bv_val: nil)
            return "\(uri): the server asked for a full refresh"
        }
        if rc == LDAP_UNAVAILABLE_CRITICAL_EXTENSION || rc == LDAP_UNWILLING_TO_PERFORM {
            unsupportedReason = String(cString: ldap_err2string(rc))
            return "unsupported"
        }
        if rc == LDAP_SIZELIMIT_EXCEEDED || rc == LDAP_TIMELIMIT_EXCEEDED || rc == LDAP_ADMINLIMIT_EXCEEDED {
            // Not transient: the first refresh reads the whole subtree, as any RFC 4533
            // consumer does, and the server holds the bind DN to a limit. Retrying cannot help.
            unsupportedReason = "\(String(cString: ldap_err2string(rc))) on the sync search of \(configuration.base): "
                + "give \(configuration.bindDN ?? "the bind DN") unlimited size and time limits "
                + "(OpenLDAP: limits dn.exact=\"\(configuration.bindDN ?? "…")\" size=unlimited time=unlimited)"
            return "unsupported"
        }
        guard rc == LDAP_SUCCESS else { return "\(uri): sync search failed: \(String(cString: ldap_err2string(rc)))" }
        replica?.refreshCompleted()
        reportEntries = true
        whenSynchronized()
        onEvent(.synchronized(server: uri, resumed: everSynchronized))
        everSynchronized = true
        while !isStopped {
            rc = ldap_sync_poll(sync)
            if rc < 0 { return "\(uri): connection lost" }
            if searchEnded { return "\(uri): the server ended the sync search" }
            if rc != LDAP_SUCCESS { return "\(uri): \(String(cString: ldap_err2string(rc)))" }
        }
        return "stopped"
    }

    /// `key`: the entry's entryUUID (as text), which a rename keeps.
    private func entry(_ sync: UnsafeMutablePointer<ldap_sync_t>, _ message: OpaquePointer, _ key: String?,
                       _ phase: ldap_sync_refresh_t) {
        guard let handle = sync.pointee.ls_ld else { return }
        if let replica {
            let dn = LDAPBind.dn(handle, message)
            // A server that sends no entryUUID leaves the DN to name the entry.
            let key = key ?? dn.lowercased()
            switch phase {
            case LDAP_SYNC_CAPI_DELETE:
                replica.remove(key: key)
            case LDAP_SYNC_CAPI_ADD, LDAP_SYNC_CAPI_MODIFY, LDAP_SYNC_CAPI_PRESENT:
                let attributes = Dictionary(replica.filterAttributes.map { ($0, LDAPBind.values(handle, message, $0)) },
                                            uniquingKeysWith: { first, _ in first })
                replica.upsert(key: key, dn: dn, attributes: attributes,
                               backendValue: LDAPBind.values(handle, message, configuration.backendAttribute).first,
                               entryAttributes: LDAPBind.firstValues(handle, message, configuration.entryAttributes))
            default:
                break
            }
        }
        guard reportEntries else { return }
        let kind: DirectoryChange.Kind
        switch phase {
        case LDAP_SYNC_CAPI_ADD: kind = .added
        case LDAP_SYNC_CAPI_MODIFY: kind = .modified
        case LDAP_SYNC_CAPI_DELETE: kind = .deleted
        default: return   // "present": unchanged
        }
        let dn = LDAPBind.dn(handle, message)
        let values = kind == .deleted ? [] : loginAttributes.flatMap { LDAPBind.values(handle, message, $0) }
        onEvent(.changed(DirectoryChange(kind: kind, dn: dn, loginValues: values)))
    }
}
