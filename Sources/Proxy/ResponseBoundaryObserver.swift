import EventLoop
import MailProtocol

/// Lets the relay show an IMAP store's responses to `IMAPResponseFraming` on their way to the
/// client, and lets literal bodies pass unseen (through the pipe, on plain legs).
/// Confined to the session's loop, like the relay that calls it.
final class ResponseBoundaryObserver: RelayStreamObserver {
    private var framing = IMAPResponseFraming()

    func observe(_ bytes: UnsafeRawBufferPointer) { framing.consume(bytes) }
    var unseenAllowance: Int { framing.literalRemaining }
    func passedUnseen(_ count: Int) { framing.skipLiteral(count) }

    /// The client has been sent whole responses only: an untagged BYE may follow.
    var isAtBoundary: Bool { framing.isAtResponseBoundary }
}
