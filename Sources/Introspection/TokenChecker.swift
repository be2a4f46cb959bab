import Routing

/// Checks an OAuth access token before routing (`verify_credentials` with
/// `oauth_introspection_url`). A protocol so that the login path can be tested with a fake.
public protocol TokenChecker: Sendable {
    /// The completion may run on any queue; callers hop back to their own loop.
    func check(token: [UInt8], completion: @escaping @Sendable (TokenVerdict) -> Void)
}
