import MailProtocol

/// The counters and holds every session shares, as the login gate reads and takes them. The
/// proxy keeps them under locks (`Admission`, the session registry, the hold book); a test
/// keeps them in a plain value.
public protocol LoginLedger: Sendable {
    /// Whether recent failed logins from this address or of this user refuse the attempt.
    func failedLoginRefusal(address: String, user: String, now: Double) -> AuthFailureTracker.Refusal?
    /// Sessions of this user, logging in or relayed, the asking one included: by the login
    /// name, and by the directory entry when there is one (a user who logs in under two names
    /// that are one entry is one user).
    func sessionCount(ofUser user: String, entry dn: String?) -> Int
    /// Takes a session slot and a login token of a store with limits, or says which limit refused.
    func takeStoreSlot(_ backend: Backend, now: Double) -> BackendBudget.Refusal?
    /// A hold an operator put on the user (`mailswitch hold`): on the login name, or, once the
    /// directory answered, on its entry.
    func operatorHold(for user: String, entry dn: String?) -> OperatorHold?
}

/// Why a login is refused, with everything the session does about it.
public struct LoginRefusal: Sendable, Equatable {
    /// How the metrics count the attempt.
    public enum Outcome: Sendable, Equatable {
        /// As the failure says (`auth_failed`, `temp_failed`, `refused`, `limited`).
        case failure
        /// A limit of the proxy's (counted as `limited`).
        case limited
        /// A hold (counted as `held`).
        case held
        /// A deadline ran out (counted as `timeout`).
        case timeout
    }

    /// What the client is told, through its protocol's machine.
    public var failure: LoginFailure
    /// For the log; never a credential.
    public var reason: String
    public var outcome: Outcome
    /// The limit that refused, for its own counter.
    public var limit: LoginLimit?
    /// Answered `auth_failure_delay` after the login command arrived, not at once.
    public var delayed: Bool

    /// By default only an authentication failure waits: a wrong password and an unknown user
    /// take the same time, and a guesser gets fewer tries.
    public init(_ failure: LoginFailure, _ reason: String, outcome: Outcome = .failure, limit: LoginLimit? = nil,
                delayed: Bool? = nil) {
        self.failure = failure
        self.reason = reason
        self.outcome = outcome
        self.limit = limit
        self.delayed = delayed ?? (failure == .authenticationFailed)
    }

    /// Only a refused password counts towards the failed-login limits (the proxy's own
    /// refusals and the store's troubles try no password).
    public var countsAsFailedLogin: Bool { failure == .authenticationFailed }

    /// Seconds to wait before answering, or nil to answer now: a delayed refusal is answered
    /// `authFailureDelay` after the login began, so a slow store is not waited for twice.
    public func answerDelay(loginStartedAt: Double, now: Double, authFailureDelay: Double) -> Double? {
        guard delayed else { return nil }
        let wait = loginStartedAt + authFailureDelay - now
        return wait > 0.001 ? wait : nil
    }
}

extension LoginRefusal {
    /// Recent failed logins from the address or of the user: answered after the failure
    /// delay like a wrong password, though no password was tried.
    public static func lockedOut(_ blocked: AuthFailureTracker.Refusal) -> LoginRefusal {
        LoginRefusal(.unavailable(text: "Too many failed logins, try again later."), "\(blocked.rawValue) reached",
                     outcome: .limited, limit: .failedLogins(blocked), delayed: true)
    }
}

/// A limit of the proxy's that refused a login.
public enum LoginLimit: Sendable, Equatable {
    case failedLogins(AuthFailureTracker.Refusal)
    case sessionsPerUser
    case store(BackendBudget.Refusal)
}

/// Where an admitted login goes.
public struct LoginRoute: Sendable, Equatable {
    public var backend: Backend
    public var hosts: [HostPort]
    /// Set for a read-only hold: the session is filtered, and refused commands say this.
    public var readOnlyMessage: String?
    /// Why this route, for the log.
    public var why: String
    /// The login took a session slot of the store, to be given back when the session ends.
    public var holdsStoreSlot: Bool
    /// Where the session goes, to compare with where its user's route points later.
    public var target: RouteTarget?
    /// The directory entry it came from.
    public var dn: String?
    /// The entry's further attributes (`DirectoryResult.attributes`): what a store's
    /// `login_name: { attribute: … }` names the user by.
    public var attributes: [String: String] = [:]
}

/// The gate's answer at each step of a login.
public enum LoginVerdict: Sendable, Equatable {
    case refuse(LoginRefusal)
    /// Ask the route cache or the directory, then call `routed`.
    case lookUp
    /// `verify_credentials`: check the password against this entry, then call `routed` again
    /// with the same answer and `passwordChecked`.
    case checkCredentials(dn: String)
    case admit(LoginRoute)
}

/// Every rule that decides whether a login goes to a store, and which, before any store is
/// contacted: the proxy hop count, failed-login limits, holds, the directory's answer, the
/// user's sessions and the store's slots. Pure, with time passed in; the shared counters come
/// through the ledger.
public struct LoginGate: Sendable {
    public var routing: RoutingTable
    public var maxSessionsPerUser: Int
    public var service: MailService

    public init(routing: RoutingTable, maxSessionsPerUser: Int, service: MailService) {
        self.routing = routing
        self.maxSessionsPerUser = maxSessionsPerUser
        self.service = service
    }

    /// Hops left to send on to the store after this one (`x-proxy-ttl`, XCLIENT `TTL`), or nil
    /// when none is left: a proxy in front (or we ourselves, through a store that points back
    /// at us) has run the count down, and the login is a routing loop.
    public static func hopsLeft(after incoming: Int?) -> Int? {
        let hops = min(incoming ?? ClientEndpoint.defaultTTL, ClientEndpoint.defaultTTL)
        return hops > 1 ? hops - 1 : nil
    }

    /// The login command arrived: refuse, look the user up, or (held by an operator) decide
    /// without the directory. `user`: the login name after `login_rewrite`.
    public func begin(_ request: LoginRequest, user: String, address: String, now: Double,
                      ledger: some LoginLedger) -> LoginVerdict {
        guard Self.hopsLeft(after: request.proxyTTL) != nil else {
            return .refuse(LoginRefusal(.temporary, "proxy loop: x-proxy-ttl \(request.proxyTTL ?? 0) from the client, "
                                        + "no hop left (does a backend point back at a proxy?)"))
        }
        if let blocked = ledger.failedLoginRefusal(address: address, user: user, now: now) {
            return .refuse(.lockedOut(blocked))
        }
        // An operator's hold decides without the directory; but a read-only one lets the login
        // through to a store, and with `verify_credentials` its password is checked first.
        if let hold = ledger.operatorHold(for: user, entry: nil), hold.readOnlyStore == nil || !routing.credentialCheck.isOn {
            return routed(RouteAnswer(result: .notFound, source: .directory), user: user, now: now, ledger: ledger)
        }
        return .lookUp
    }

    /// What failed logins of a user are counted under: the directory entry once it is known
    /// (a guesser alternating `alice` and `alice@example.org` guesses at one account), the
    /// login name after `login_rewrite` otherwise.
    public static func failureKey(user: String, entry dn: String?) -> String {
        dn.map { "entry:" + $0.lowercased() } ?? user
    }

    /// The route cache or the directory answered. `address`: what limits count the client as
    /// (the entry's failed logins are checked now that it is known). `passwordChecked`: the directory accepted
    /// the password (after `.checkCredentials`), or the login has none for it to check (a
    /// bearer token, which only its store can).
    public func routed(_ answer: RouteAnswer, user: String, address: String = "", now: Double, ledger: some LoginLedger,
                       passwordChecked: Bool = false) -> LoginVerdict {
        let dn = answer.result.dn
        if let dn, !passwordChecked,
           let blocked = ledger.failedLoginRefusal(address: address, user: Self.failureKey(user: user, entry: dn), now: now) {
            return .refuse(.lockedOut(blocked))
        }
        let decision = routing.decide(answer.result, service: service, hold: ledger.operatorHold(for: user, entry: dn))
        // The password before anything else about the entry: a hold's message and the user's
        // session count are for someone who knows it.
        if routing.credentialCheck.isOn && !passwordChecked {
            switch (answer.result, decision) {
            case (.found(let dn, _, _), _):
                return .checkCredentials(dn: dn)
            case (.notFound, .held):
                break   // an operator's hold on the name: no store is contacted
            case (.notFound, _):
                return .refuse(LoginRefusal(.authenticationFailed, "no directory entry to check the password against"))
            default:
                break   // unavailable or ambiguous: refused below without a check
            }
        }
        switch decision {
        case .unknownUser(let why):
            return .refuse(LoginRefusal(.authenticationFailed, "no route: \(why)"))
        case .unavailable(let why):
            return .refuse(LoginRefusal(.temporary, why))
        case .held(let message, let why):
            return .refuse(LoginRefusal(.unavailable(text: message), why, outcome: .held))
        case .backend(let backend, let hosts, let why):
            return admit(LoginRoute(backend: backend, hosts: hosts, readOnlyMessage: nil, why: why, holdsStoreSlot: false,
                                    target: decision.target, dn: dn, attributes: answer.result.attributes), user: user, now: now, ledger: ledger)
        case .readOnly(let backend, let hosts, let message, let why):
            return admit(LoginRoute(backend: backend, hosts: hosts, readOnlyMessage: message, why: why, holdsStoreSlot: false,
                                    target: decision.target, dn: dn, attributes: answer.result.attributes), user: user, now: now, ledger: ledger)
        }
    }

    /// The user's session count and the store's limits, checked before the store is
    /// contacted: a refused login never reaches it.
    private func admit(_ route: LoginRoute, user: String, now: Double, ledger: some LoginLedger) -> LoginVerdict {
        guard ledger.sessionCount(ofUser: user, entry: route.dn) <= maxSessionsPerUser else {
            return .refuse(LoginRefusal(.limit(text: "Too many sessions for this user."),
                                        "max_sessions_per_user (\(maxSessionsPerUser)) reached",
                                        outcome: .limited, limit: .sessionsPerUser))
        }
        if let refusal = ledger.takeStoreSlot(route.backend, now: now) {
            return .refuse(LoginRefusal(.temporary, "backend \(route.backend.name): \(refusal.rawValue) reached",
                                        outcome: .limited, limit: .store(refusal)))
        }
        var route = route
        // Only a store with limits has slots to give back.
        route.holdsStoreSlot = route.backend.hasLimits
        return .admit(route)
    }
}

/// A route for a login name, and where it came from (the directory, or the route cache).
public struct RouteAnswer: Sendable, Equatable {
    public var result: DirectoryResult
    public var source: RouteSource

    public init(result: DirectoryResult, source: RouteSource) {
        self.result = result
        self.source = source
    }
}
