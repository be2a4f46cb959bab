import Configuration
import Directory
import Introspection
import Routing
import Synchronization
import TLS

/// `verify_credentials`: the directory's bind pool, behind the cache of passwords it accepted
/// (`verify_cache_ttl`, as keyed digests), and the token introspection endpoint when one is
/// configured (`oauth_introspection_url`). One per configuration; a reload that changes the
/// directory or these settings makes a new one.
final class PasswordCheck: Sendable {
    let settings: CredentialCheck
    let directory: DirectoryConfiguration
    private let checker: any PasswordChecker
    /// Checks bearer tokens; nil leaves them to the store.
    let tokens: (any TokenChecker)?
    private let digest: KeyedDigest?
    private let accepted: Mutex<VerifiedPasswords>

    init(settings: CredentialCheck, directory: DirectoryConfiguration, checker: any PasswordChecker,
         tokens: (any TokenChecker)? = nil) {
        self.settings = settings
        self.directory = directory
        self.checker = checker
        self.tokens = tokens
        // Without a key there is no cache: every check binds.
        digest = settings.cacheTTL > 0 ? KeyedDigest() : nil
        accepted = Mutex(VerifiedPasswords(ttl: settings.cacheTTL))
    }

    /// The completion may run on any queue.
    func check(dn: String, password: [UInt8], completion: @escaping @Sendable (CredentialVerdict) -> Void) {
        let key = digest?.digest(Array(dn.lowercased().utf8), password)
        if let key, accepted.withLock({ $0.accepts(dn: dn, digest: key, now: Router.now()) }) {
            ProxyMetrics.passwordChecks[.cached].increment()
            return completion(.accepted)
        }
        checker.check(dn: dn, password: password) { [self] verdict in
            switch verdict {
            case .accepted:
                ProxyMetrics.passwordChecks[.accepted].increment()
                if let key { accepted.withLock { $0.remember(dn: dn, digest: key, now: Router.now()) } }
            case .refused:
                ProxyMetrics.passwordChecks[.refused].increment()
                // A password the directory refuses now is not taken from the cache either.
                accepted.withLock { $0.forget(dn: dn) }
            case .unavailable:
                ProxyMetrics.passwordChecks[.unavailable].increment()
            }
            completion(verdict)
        }
    }

    /// The entry changed (the change feed says so): its password may have too.
    func forget(dn: String) {
        accepted.withLock { $0.forget(dn: dn) }
    }

    /// The check for a configuration: the current one when nothing it depends on changed.
    static func make(for configuration: ServiceConfiguration, reusing current: PasswordCheck?) -> PasswordCheck? {
        let settings = configuration.routing.credentialCheck
        guard settings.isOn else { return nil }
        if let current, current.settings == settings, current.directory == configuration.directory { return current }
        let tokens = settings.introspectionURL.map { url in
            TokenIntrospection(url: url, clientID: settings.introspectionClientID, clientSecret: settings.introspectionClientSecret,
                               timeoutSeconds: configuration.directory.timeoutSeconds, connections: settings.connections)
        }
        return PasswordCheck(settings: settings, directory: configuration.directory,
                             checker: LDAPBindPool(configuration: configuration.directory, connections: settings.connections),
                             tokens: tokens)
    }
}
