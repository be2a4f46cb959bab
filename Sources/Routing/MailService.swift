/// The two protocols a listener or a backend host can speak.
public enum MailService: String, Sendable, CaseIterable {
    case imap, pop3

    public var standardPort: Int { descriptor.standardPort }
    /// RFC 8314: IMAP and POP3 over implicit TLS.
    public var implicitTLSPort: Int { descriptor.implicitTLSPort }
}
