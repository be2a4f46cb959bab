/// Every bound the pre-login parsers enforce, in one place. The defaults follow the
/// established servers: 8 KiB lines (swift-nio-imap, nginx's page-sized buffer), RFC 2971's
/// 30 ID pairs, and Dovecot's ten invalid commands before disconnecting.
public struct ProtocolLimits: Sendable, Equatable {
    public var lineLength = 8_192
    /// A literal before login carries a user name or a password: 8 KiB is generous.
    public var literalSize = 8_192
    /// One whole command, its literals included.
    public var commandSize = 32_768
    public var idPairs = 30
    public var invalidCommands = 10
    /// Commands of any kind before a login succeeds (a failed login counts): with the login
    /// timeout, it bounds what a client that never logs in can make the proxy do.
    public var commandsBeforeLogin = 50
    /// A backend's pre-login response lines (capabilities can be long).
    public var backendLineLength = 65_536
    /// A command line of a filtered (read-only) session after login: UID sets and SEARCH
    /// criteria make them longer than anything before login.
    public var filteredLineLength = 65_536

    public init() {}
}

/// Which pre-login limit made a machine end the session (for the metric and the log).
public enum ProtocolLimit: String, Sendable, CaseIterable {
    case lineLength = "max_line_length"
    case literalSize = "max_literal_size"
    case invalidCommands = "invalid_commands"
    case commandsBeforeLogin = "max_commands_before_login"
}
