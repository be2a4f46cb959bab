import EventLoop
import MailProtocol

/// The relay's side of a read-only hold: the protocol's sans-I/O command filter, held by
/// reference for the relay. Confined to the session's loop, like the relay that calls it.
final class ReadOnlyRelayFilter: RelayFilter {
    private var filter: any ReadOnlySessionFilter

    init(_ filter: any ReadOnlySessionFilter) { self.filter = filter }

    func fromClient(_ bytes: UnsafeRawBufferPointer) -> (toStore: [UInt8], toClient: [UInt8]) { filter.fromClient(bytes) }
    func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8]) { filter.fromStore(bytes) }
}
