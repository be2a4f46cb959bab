import Routing

/// Where a user's mailbox lives, asked asynchronously. The LDAP implementation is the real
/// one; a static map stands in where no directory is wanted (benchmarks, small sites).
public protocol Directory: Sendable {
    /// The completion may run on any queue; callers hop back to their own loop.
    func lookup(_ user: String, completion: @escaping @Sendable (DirectoryResult) -> Void)
}

/// Checks a password against a user's directory entry (`verify_credentials`).
public protocol PasswordChecker: Sendable {
    /// The completion may run on any queue; callers hop back to their own loop.
    func check(dn: String, password: [UInt8], completion: @escaping @Sendable (CredentialVerdict) -> Void)
}

/// A fixed user → backend-value map.
public struct StaticDirectory: Directory {
    public let entries: [String: String]

    public init(entries: [String: String]) { self.entries = entries }

    public func lookup(_ user: String, completion: @escaping @Sendable (DirectoryResult) -> Void) {
        if let value = entries[user] {
            completion(.found(dn: "static:\(user)", backendValue: value))
        } else {
            completion(.notFound)
        }
    }
}
