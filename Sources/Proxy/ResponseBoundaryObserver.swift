import EventLoop
import MailProtocol

/// A relay observer that can tell whether the client has been sent whole responses only.
protocol ResponseBoundaryTracking: RelayStreamObserver {
    var isAtBoundary: Bool { get }
}

/// Lets the relay show a store's responses to the protocol's response framing on their way to
/// the client, and lets literal bodies pass unseen (through the pipe, on plain legs). Generic
/// so that the framing is stored inline: an existential of its size would be a second
/// allocation for every idle session. Confined to the session's loop, like the relay.
final class ResponseBoundaryObserver<Framing: ResponseFraming>: ResponseBoundaryTracking {
    private var framing: Framing

    init(_ framing: Framing) { self.framing = framing }

    func observe(_ bytes: UnsafeRawBufferPointer) { framing.consume(bytes) }
    var unseenAllowance: Int { framing.literalRemaining }
    func passedUnseen(_ count: Int) { framing.skipLiteral(count) }

    /// The client has been sent whole responses only: a goodbye may follow.
    var isAtBoundary: Bool { framing.isAtResponseBoundary }
}

/// Opens the descriptor's existential once, at login (`framing` may be passed as `any`).
func responseBoundaryObserver<Framing: ResponseFraming>(_ framing: Framing) -> any ResponseBoundaryTracking {
    ResponseBoundaryObserver(framing)
}
