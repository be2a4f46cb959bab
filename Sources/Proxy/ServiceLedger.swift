import Configuration
import Routing

/// The login gate's view of what every session shares: the failed-login counters and store
/// budgets (`Admission`), the user's sessions (the registry) and the operators' holds.
extension ServiceContext: LoginLedger {
    func failedLoginRefusal(address: String, user: String, now: Double) -> AuthFailureTracker.Refusal? {
        admission.checkLogin(address: address, user: user, settings: configuration.limits.authFailures, now: now)
    }

    func sessionCount(ofUser user: String, entry dn: String?) -> Int {
        registry.count(ofUser: user, orEntry: dn)
    }

    func takeStoreSlot(_ backend: Backend, now: Double) -> BackendBudget.Refusal? {
        admission.admitBackend(backend, now: now)
    }

    func operatorHold(for user: String, entry dn: String?) -> OperatorHold? {
        holds.hold(for: user, entry: dn)?.operatorHold
    }
}
