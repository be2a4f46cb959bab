#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CMailSwitchShims
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
/// slow feed never delays a login. It reconnects with back-off and resumes from its cookie.
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

    public init(configuration: DirectoryConfiguration, loginAttributes: [String],
                onEvent: @escaping @Sendable (ChangeFeedEvent) -> Void) {
        self.configuration = configuration
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
        let attributes = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: loginAttributes.count + 2)
        for (index, name) in ([configuration.backendAttribute] + loginAttributes).enumerated() { attributes[index] = strdup(name) }
        attributes[loginAttributes.count + 1] = nil
        sync.pointee.ls_attrs = attributes
        sync.pointee.ls_timeout = 1   // seconds per poll, so `stop` is noticed
        sync.pointee.ls_private = Unmanaged.passUnretained(self).toOpaque()
        sync.pointee.ls_search_entry = { sync, message, _, phase in
            guard let sync, let message, let context = sync.pointee.ls_private else { return LDAP_SUCCESS }
            Unmanaged<SyncReplFeed>.fromOpaque(context).takeUnretainedValue().entry(sync, message, phase)
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
            var problem = ""
            for uri in configuration.uris where !isStopped {
                switch LDAPBind.open(uri: uri, configuration: configuration) {
                case .failure(let failure):
                    problem = failure.description
                    DirectoryMetrics.error(server: uri)
                case .success(let handle):
                    problem = follow(sync, handle: handle, uri: uri, resetBackoff: { backoff = 0.25 })
                    if problem != "stopped" && problem != "unsupported" { DirectoryMetrics.error(server: uri) }
                    ldap_unbind_ext(handle, nil, nil)
                    sync.pointee.ls_ld = nil
                }
                if problem == "unsupported" { return }
            }
            if isStopped { return }
            if problem != lastProblem {
                onEvent(.disconnected(reason: problem))
                lastProblem = problem
            }
            usleep(UInt32(backoff * 1_000_000))
            backoff = min(backoff * 2, 5)
        }
    }

    /// Runs the sync search on one bound handle until it fails; returns why.
    private func follow(_ sync: UnsafeMutablePointer<ldap_sync_t>, handle: OpaquePointer, uri: String,
                        resetBackoff: () -> Void) -> String {
        sync.pointee.ls_ld = handle
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
            onEvent(.unsupported(reason: "\(uri): \(String(cString: ldap_err2string(rc)))"))
            return "unsupported"
        }
        if rc == LDAP_SIZELIMIT_EXCEEDED || rc == LDAP_TIMELIMIT_EXCEEDED || rc == LDAP_ADMINLIMIT_EXCEEDED {
            // Not transient: the first refresh reads the whole subtree, as any RFC 4533
            // consumer does, and the server holds the bind DN to a limit. Retrying cannot help.
            onEvent(.unsupported(reason: "\(uri): \(String(cString: ldap_err2string(rc))) on the sync search of \(configuration.base): "
                                 + "give \(configuration.bindDN ?? "the bind DN") unlimited size and time limits "
                                 + "(OpenLDAP: limits dn.exact=\"\(configuration.bindDN ?? "…")\" size=unlimited time=unlimited)"))
            return "unsupported"
        }
        guard rc == LDAP_SUCCESS else { return "\(uri): sync search failed: \(String(cString: ldap_err2string(rc)))" }
        reportEntries = true
        resetBackoff()
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

    private func entry(_ sync: UnsafeMutablePointer<ldap_sync_t>, _ message: OpaquePointer, _ phase: ldap_sync_refresh_t) {
        guard reportEntries, let handle = sync.pointee.ls_ld else { return }
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
