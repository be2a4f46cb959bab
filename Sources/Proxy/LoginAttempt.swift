import Configuration
import EventLoop
import Logging
import MailProtocol
import Routing

/// What a login under way tells its session.
protocol LoginAttemptEvents: AnyObject {
    /// The gate admitted the login to this route (and took the store slot it says it holds).
    func loginAdmitted(_ route: LoginRoute)
    func loginConnected(backend: String, host: String)
    func loginRefused(_ refusal: LoginRefusal)
    func loginAccepted(_ accepted: StoreLeg.Accepted)
    func loginNote(_ level: Logger.Level, _ message: String)
}

/// One login from the client's command to the verdict: the gate's verdicts, the route cache
/// or the directory in between, and the store leg once admitted. The session makes one per
/// login command and drops it at the verdict, either way, so a session relaying for days
/// holds none of it (and no password); an answer that comes back for a cancelled attempt (a
/// login refused while its lookup was out) finds it cancelled and is dropped.
///
/// `@unchecked Sendable`: confined to its session's loop; the route cache's answer hops there.
final class LoginAttempt: StoreLegEvents, @unchecked Sendable {
    let request: LoginRequest
    /// When the login command arrived (monotonic seconds): a failure is answered
    /// `auth_failure_delay` after it.
    let startedAt: Double
    /// The route the gate admitted.
    private(set) var route: LoginRoute?
    private let loop: EventLoop
    private let context: ServiceContext
    private let gate: LoginGate
    private let descriptor: ProtocolDescriptor
    private let client: StoreLeg.Client
    private unowned let events: any LoginAttemptEvents
    private var store: StoreLeg?
    /// The directory's answer, kept while the password is checked.
    private var answer: RouteAnswer?
    private var address = ""
    private var cancelled = false

    init(request: LoginRequest, startedAt: Double, loop: EventLoop, context: ServiceContext, service: MailService,
         client: (ClientFront, sessionID: String), events: any LoginAttemptEvents) {
        self.request = request
        self.startedAt = startedAt
        self.loop = loop
        self.context = context
        user = context.configuration.routing.loginRewrite.apply(request.credentials.mailboxUser)
        gate = LoginGate(routing: context.configuration.routing,
                         maxSessionsPerUser: context.configuration.limits.maxSessionsPerUser, service: service)
        descriptor = service.descriptor
        self.client = StoreLeg.Client(client.0, sessionID: client.sessionID,
                                      hopsLeft: LoginGate.hopsLeft(after: request.proxyTTL) ?? 0)
        self.events = events
    }

    /// The name the directory is asked about and every count, hold and kick is keyed by:
    /// the login's mailbox user after `login_rewrite`.
    let user: String

    /// What this login's failure or success counts under (`LoginGate.failureKey`).
    var failureKey: String { LoginGate.failureKey(user: user, entry: answer?.result.dn) }

    /// Asks the gate; `address` is what limits count the client as.
    func start(address: String) {
        self.address = address
        follow(gate.begin(request, user: user, address: address, now: startedAt, ledger: context))
    }

    /// Stops whatever is under way; nothing is reported after this.
    func cancel() {
        cancelled = true
        store?.cancel()
        store = nil
    }

    private func follow(_ verdict: LoginVerdict) {
        switch verdict {
        case .refuse(let refusal): events.loginRefused(refusal)
        case .lookUp:
            if request.credentials.bearer != nil, context.passwordCheck?.tokens != nil { checkToken() } else { lookUp() }
        case .checkCredentials(let dn): checkPassword(dn: dn)
        case .admit(let route): admitted(route)
        }
    }

    private func lookUp() {
        // A cached route answers here and now, on this loop; a miss comes back on any queue.
        if let answer = context.router.route(user, completion: { [weak self] answer in
            self?.resume { $0.routed(answer) }
        }) {
            routed(answer)
        }
    }

    /// An answer from another queue (the route cache, the directory, the token endpoint)
    /// carries on on this login's loop, unless the login was cancelled meanwhile.
    private func resume(_ work: @escaping @Sendable (LoginAttempt) -> Void) {
        loop.execute { if !self.cancelled { work(self) } }
    }

    /// A bearer token has no password for the directory to check: its store checks it.
    private func routed(_ answer: RouteAnswer, passwordChecked: Bool? = nil) {
        let passwordChecked = passwordChecked ?? (request.credentials.bearer != nil)
        self.answer = answer
        let verdict = gate.routed(answer, user: user, address: address, now: Router.now(), ledger: context,
                                  passwordChecked: passwordChecked)
        if case .admit(let route) = verdict, route.readOnlyMessage == nil, case .stale(let age) = answer.source {
            events.loginNote(.notice, "directory unavailable: using a cached route \(Int(age))s old")
        }
        follow(verdict)
    }

    /// `verify_credentials`: the directory checks the password before any store sees it; the
    /// same answer is then routed again, checked.
    private func checkPassword(dn: String) {
        guard let check = context.passwordCheck, let answer else {
            return events.loginRefused(LoginRefusal(.temporary, "verify_credentials is on, but no password check is set up"))
        }
        check.check(dn: dn, password: request.credentials.password) { [weak self] verdict in
            self?.resume { $0.checked(verdict, answer: answer) }
        }
    }

    /// `oauth_introspection_url`: the token is asked about before routing; an active token of
    /// the user the login names goes on to the directory lookup.
    private func checkToken() {
        guard let bearer = request.credentials.bearer, let tokens = context.passwordCheck?.tokens else { return lookUp() }
        tokens.check(token: bearer.token) { [weak self] verdict in
            self?.resume { $0.checkedToken(verdict) }
        }
    }

    private func checkedToken(_ verdict: TokenVerdict) {
        switch verdict {
        case .active(let owner):
            // The endpoint names whose token it is: it must be the user the login names, after
            // the same rewriting (a token of bob's cannot open alice's mailbox).
            let rewrite = context.configuration.routing.loginRewrite
            if let owner, rewrite.apply(owner).lowercased() != user.lowercased() {
                ProxyMetrics.tokenChecks[.mismatch].increment()
                return events.loginRefused(LoginRefusal(.authenticationFailed, "the token belongs to another user"))
            }
            ProxyMetrics.tokenChecks[.active].increment()
            lookUp()
        case .inactive:
            ProxyMetrics.tokenChecks[.inactive].increment()
            events.loginRefused(LoginRefusal(.authenticationFailed, "the token is not active (introspection)"))
        case .unavailable(let reason):
            ProxyMetrics.tokenChecks[.unavailable].increment()
            events.loginRefused(LoginRefusal(.temporary, "cannot check the token: \(reason)"))
        }
    }

    private func checked(_ verdict: CredentialVerdict, answer: RouteAnswer) {
        switch verdict {
        case .accepted:
            routed(answer, passwordChecked: true)
        case .refused(let reason):
            events.loginRefused(LoginRefusal(.authenticationFailed, "password refused by the directory (\(reason))"))
        case .unavailable(let reason):
            events.loginRefused(LoginRefusal(.temporary, "cannot check the password: \(reason)"))
        }
    }

    private func admitted(_ route: LoginRoute) {
        self.route = route
        events.loginAdmitted(route)
        guard let credentials = storeCredentials(for: route) else {
            let attribute = route.backend.loginName.attribute ?? "login name"
            return events.loginRefused(LoginRefusal(.temporary, "backend \(route.backend.name) names users by \(attribute), "
                                                    + "and the user's entry has none"))
        }
        let store = StoreLeg(loop: loop, context: context, descriptor: descriptor, route: route,
                             credentials: credentials, client: client, events: self)
        self.store = store
        store.start()
    }

    /// What the store is sent: the client's credentials with the mailbox user named as the
    /// store wants it (`login_name`), the password and a SASL authentication identity of the
    /// client's own as sent; or, to a store logged in to as a master user, the master's
    /// credentials on behalf of that name. Nil when the name comes from an attribute the
    /// entry lacks.
    private func storeCredentials(for route: LoginRoute) -> Credentials? {
        var credentials = request.credentials
        // A bearer token goes to the routed store exactly as the client sent it: the name is
        // inside the signed message, and no master login may stand in for an unchecked token.
        if credentials.bearer != nil { return credentials }
        guard let name = route.backend.loginName.name(typed: credentials.mailboxUser, rewritten: user,
                                                      attributes: route.attributes) else { return nil }
        switch route.backend.login {
        case .master(let master, let password):
            return Credentials(authorizationID: name, username: master, password: password)
        case .passthrough:
            if credentials.authorizationID.isEmpty { credentials.username = name } else { credentials.authorizationID = name }
            return credentials
        }
    }

    func storeConnected(backend: String, host: String) {
        events.loginConnected(backend: backend, host: host)
    }

    func storeAnswered(_ outcome: StoreLeg.Outcome) {
        store = nil
        switch outcome {
        case .refused(let refusal): events.loginRefused(refusal)
        case .accepted(let accepted): events.loginAccepted(accepted)
        }
    }

    func storeWarning(_ message: String) {
        events.loginNote(.warning, message)
    }
}
