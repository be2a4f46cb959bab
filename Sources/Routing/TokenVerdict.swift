/// What an authorization server said about an OAuth access token (RFC 7662 introspection,
/// `oauth_introspection_url`). Here rather than beside the HTTP client so that the login path
/// can decide on it without importing libcurl.
public enum TokenVerdict: Sendable, Equatable {
    /// The server vouches for the token; `username` is whom it was issued to, when it says.
    case active(username: String?)
    /// Expired, revoked, unknown or never valid: a failed login.
    case inactive
    /// The server could not be asked or gave no usable answer: a temporary failure, never a
    /// refusal. The reason never contains the token.
    case unavailable(reason: String)
}
