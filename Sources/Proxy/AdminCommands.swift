import Configuration
import Dispatch
import Foundation
import Directory
import EventLoop
import MailProtocol
import Routing
import Synchronization

/// What each admin request does. Answers may come from any queue; the admin server hops
/// back to its loop to send them.
extension ProxyServer {
    func handle(_ request: AdminRequest, reply: @escaping @Sendable (AdminResponse) -> Void) {
        // The CLI names a user the way a login does: `kick ALICE@example.org` is alice's.
        var request = request
        request.user = request.user.map(configuration.routing.loginRewrite.apply)
        switch request.command {
        case .sessions: listSessions(request, reply: reply)
        case .kick: kick(request, reply: reply)
        case .hold: hold(request, reply: reply)
        case .release: release(request, reply: reply)
        case .holds: listHolds(reply: reply)
        case .route: route(request, reply: reply)
        case .status: status(reply: reply)
        case .reload: DispatchQueue.global().async { [self] in reply(reloadFromAdmin()) }
        }
    }

    /// Sessions of a user (under any login name of its directory entry), of a backend, of
    /// both, or all of them. A user's entry comes from the route cache or the directory; when
    /// neither can tell, the name alone selects.
    private func select(user: String?, backend: String?,
                        _ completion: @escaping @Sendable ([SessionRegistry.Session]) -> Void) {
        let registry = self.registry
        guard let user else {
            return completion(backend.map { registry.sessions(onBackend: $0) } ?? registry.snapshot())
        }
        let found: @Sendable (Router.Answer) -> Void = { answer in
            completion(registry.sessions(ofUser: user, orEntry: answer.result.dn).filter { backend == nil || $0.entry.backend == backend })
        }
        if let cached = router.route(user, completion: found) { found(cached) }
    }

    private func listSessions(_ request: AdminRequest, reply: @escaping @Sendable (AdminResponse) -> Void) {
        select(user: request.user, backend: request.backend) { sessions in
            self.answer(sessions.sorted { $0.entry.startedAt < $1.entry.startedAt }, reply: reply)
        }
    }

    private func answer(_ sessions: [SessionRegistry.Session], reply: @escaping @Sendable (AdminResponse) -> Void) {
        // Byte counts live with each session on its loop: ask them all, answer when all did.
        let collected = Mutex([String: (Int, Int)]())
        let group = DispatchGroup()
        for session in sessions {
            group.enter()
            session.control.traffic { toStore, toClient in
                collected.withLock { $0[session.entry.id] = (toStore, toClient) }
                group.leave()
            }
        }
        group.notify(queue: .global()) {
            let traffic = collected.withLock { $0 }
            var response = AdminResponse(ok: true)
            response.sessions = sessions.map { session in
                let entry = session.entry
                let bytes = traffic[entry.id] ?? (0, 0)
                return AdminResponse.Session(id: entry.id, user: entry.user, client: entry.client, listener: entry.listener,
                                             proto: entry.service, tls: entry.tls, backend: entry.backend,
                                             host: entry.backendHost, phase: entry.phase.rawValue, started: entry.startedAt,
                                             bytesIn: bytes.0, bytesOut: bytes.1,
                                             readOnly: { if case .readOnly = entry.target { return true }; return false }())
            }
            reply(response)
        }
    }

    private func kick(_ request: AdminRequest, reply: @escaping @Sendable (AdminResponse) -> Void) {
        guard request.user != nil || request.backend != nil else {
            return reply(.failure(.badRequest, "kick needs a user, a backend, or both"))
        }
        select(user: request.user, backend: request.backend) { [watcher] selected in
            let sessions = selected.filter { $0.entry.phase != .preLogin }
            guard !sessions.isEmpty else {
                let whose = [request.user.map { "user \($0)" }, request.backend.map { "backend \($0)" }].compactMap { $0 }
                return reply(.failure(.notFound, "no open sessions for \(whose.joined(separator: " on "))"))
            }
            watcher.end(sessions.map { ($0, SessionEndReason.kick, request.reason) }, paced: request.spread ?? false)
            var response = AdminResponse(ok: true, message: "ending \(sessions.count) session(s)\(request.spread == true ? ", spread" : "")")
            response.ended = sessions.count
            reply(response)
        }
    }

    private func hold(_ request: AdminRequest, reply: @escaping @Sendable (AdminResponse) -> Void) {
        guard let user = request.user, !user.isEmpty else { return reply(.failure(.badRequest, "hold needs a user")) }
        let configuration = self.configuration
        let fallback = request.readOnly == true ? configuration.routing.readOnlyMessage : RoutingTable.defaultHoldMessage
        let reason = request.reason.map { LoginFailure.lineText($0) }.flatMap { $0.isEmpty ? nil : $0 } ?? fallback
        // The directory names the user's entry, so that the hold covers every login name that
        // reaches it; a full hold goes on the name alone when the directory cannot tell.
        router.routeFresh(user) { [self] answer in
            guard request.readOnly == true else { return place(user: user, reason: reason, store: nil, dn: answer.result.dn, reply: reply) }
            // A read-only hold keeps the user on the store the directory names now: never a guess.
            switch configuration.routing.decide(answer.result, service: .imap) {
            case .backend(let backend, _, _), .readOnly(let backend, _, _, _):
                place(user: user, reason: reason, store: backend.name, dn: answer.result.dn, reply: reply)
            case .held(_, let why), .unavailable(let why), .unknownUser(let why):
                reply(.failure(.failed, "cannot tell which store \(user)'s mailbox is on (\(why)): no read-only hold set"))
            }
        }
    }

    private func place(user: String, reason: String, store: String?, dn: String?,
                       reply: @escaping @Sendable (AdminResponse) -> Void) {
        do throws(HoldBook.Failure) {
            _ = try holds.add(user: user, reason: reason, readOnlyStore: store, dn: dn)
        } catch {
            return reply(.failure(.failed, error.description))
        }
        // Open sessions end at once: the final copy pass must not race them, and a read-only
        // session must start afresh, filtered (an open one may have a mailbox selected read-write).
        let sessions = registry.sessions(ofUser: user, orEntry: dn).filter { $0.entry.phase != .preLogin }
        watcher.end(sessions.map { ($0, SessionEndReason.hold, reason) }, paced: false)
        let kind = store.map { "read-only on \($0)" } ?? "held"
        logger.notice("hold on \(LogText.escaped(user)) (\(kind)): \(sessions.count) session(s) ended")
        var response = AdminResponse(ok: true, message: "\(user) \(kind); \(sessions.count) session(s) ended")
        response.ended = sessions.count
        reply(response)
    }

    private func release(_ request: AdminRequest, reply: @escaping @Sendable (AdminResponse) -> Void) {
        guard let user = request.user, !user.isEmpty else { return reply(.failure(.badRequest, "release needs a user")) }
        let dn = holds.hold(for: user)?.dn
        do throws(HoldBook.Failure) {
            guard try holds.remove(user: user) else { return reply(.failure(.notFound, "\(user) is not held")) }
        } catch {
            return reply(.failure(.failed, error.description))
        }
        // Sessions under a read-only hold end like any route change, under whatever name they
        // logged in with; the next login is unfiltered.
        watcher.recheck(user: user)
        for key in dn.map(registry.userKeys(ofEntry:)) ?? [] where key != UserKey.of(user) { watcher.recheck(user: key) }
        logger.notice("hold on \(LogText.escaped(user)) released")
        reply(AdminResponse(ok: true, message: "\(user) released"))
    }

    private func listHolds(reply: @escaping @Sendable (AdminResponse) -> Void) {
        var response = AdminResponse(ok: true)
        response.holds = holds.all.map { AdminResponse.Hold(user: $0.user, reason: $0.reason, since: $0.since, readOnlyStore: $0.readOnlyStore) }
        reply(response)
    }

    private func route(_ request: AdminRequest, reply: @escaping @Sendable (AdminResponse) -> Void) {
        guard let user = request.user, !user.isEmpty else { return reply(.failure(.badRequest, "route needs a user")) }
        let configuration = self.configuration
        let holds = self.holds
        let answer: @Sendable (Router.Answer) -> Void = { answer in
            var response = AdminResponse(ok: true)
            let hold = holds.hold(for: user, entry: answer.result.dn)
            response.route = RouteReport.make(user: user, answer: answer, configuration: configuration, hold: hold?.operatorHold)
            reply(response)
        }
        if let cached = router.route(user, completion: answer) { answer(cached) }
    }

    private func status(reply: @escaping @Sendable (AdminResponse) -> Void) {
        let configuration = self.configuration
        let uptime = Int(Router.now() - startedAt)
        let sessions = registry.snapshot()
        let cache = router.statistics
        let holdCount = holds.all.count
        let bound = boundAddresses
        let file = loadedConfiguration
        let hostsDown = backendHosts.downAddresses
        watcher.state { feed, changes in
            var byBackend: [String: Int] = [:]
            for session in sessions where session.entry.phase == .relaying { byBackend[session.entry.backend ?? "?", default: 0] += 1 }
            var response = AdminResponse(ok: true)
            response.status = [
                "version": MailSwitchVersion.withCommit,
                "configuration": "\(file.path), loaded \(Int(Date().timeIntervalSince1970 - file.at))s ago",
                "uptime": "\(uptime)s",
                "sessions": "\(sessions.count)",
                "sessions by backend": byBackend.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
                "listeners": bound.joined(separator: " "),
                "directory": LDAPServerHealth.shared.statuses(of: configuration.directory.uris).map(\.description)
                    .joined(separator: "; "),
                "change feed": "\(feed); \(changes) changes seen",
                "route cache": "\(cache.entries) entries; \(cache.hits) hits, \(cache.misses) misses, \(cache.stale) stale",
                "holds": "\(holdCount)",
                "backend hosts down": hostsDown.isEmpty ? "none" : hostsDown.joined(separator: " "),
                "event loops": EventLoopStatistics.snapshot.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    .joined(separator: " "),
            ]
            reply(response)
        }
    }
}

/// `mailswitch route`'s answer, the same whether the service or the CLI itself asked LDAP.
public enum RouteReport {
    public static func make(user: String, answer: Router.Answer, configuration: ServiceConfiguration,
                            hold: OperatorHold?) -> AdminResponse.Route {
        let directory = configuration.directory
        var report = AdminResponse.Route(user: user, filter: LDAPFilter.expand(directory.filter, user: user),
                                         source: "directory", age: nil, result: "", dn: nil,
                                         attribute: directory.backendAttribute, value: nil, imap: "", pop3: "",
                                         status: 0, hold: hold.map(describe))
        switch answer.source {
        case .directory: break
        case .cache(let age): report.source = "cache"; report.age = age
        case .stale(let age): report.source = "stale"; report.age = age
        }
        switch answer.result {
        case .found(let dn, let value, _): report.result = "found"; report.dn = dn; report.value = value
        case .notFound: report.result = "not_found"
        case .ambiguous(let count): report.result = "ambiguous (\(count) entries)"
        case .unavailable(let reason): report.result = "unavailable: \(reason)"
        }
        var status = 0
        func line(_ service: MailService) -> String {
            switch configuration.routing.decide(answer.result, service: service, hold: hold) {
            case .backend(let backend, let hosts, let why):
                return "backend \(backend.name) -> \(hosts.map(\.description).joined(separator: ", ")) (\(why))"
            case .unknownUser(let why):
                status = max(status, 1)
                return "refused as a failed login: \(why)"
            case .unavailable(let why):
                status = 2
                return "temporarily unavailable: \(why)"
            case .held(let message, let why):
                status = 2
                return "held: \(why) (\"\(message)\")"
            case .readOnly(let backend, let hosts, _, let why):
                return "backend \(backend.name) -> \(hosts.map(\.description).joined(separator: ", ")), read-only (\(why))"
            }
        }
        report.imap = line(.imap)
        report.pop3 = line(.pop3)
        report.status = status
        return report
    }

    private static func describe(_ hold: OperatorHold) -> String {
        guard let store = hold.readOnlyStore else { return hold.message }
        return "read-only on \(store): \(hold.message)"
    }
}

/// The version `mailswitch status` and `--version` report. `current` is the one place the
/// release is numbered: scripts/package takes the Debian package's version from it.
public enum MailSwitchVersion {
    public static let current = "0.5.0"
    /// The release and the commit it was built from, e.g. "0.5.0 (a34266c)".
    public static let withCommit = "\(current) (\(BuildCommit.id))"
}
