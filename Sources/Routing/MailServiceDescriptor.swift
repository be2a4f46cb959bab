import MailProtocol

extension MailService {
    /// The one place where a configured protocol meets what speaks it; everything else asks
    /// the descriptor.
    public var descriptor: ProtocolDescriptor {
        switch self {
        case .imap: return .imap
        case .pop3: return .pop3
        }
    }
}
