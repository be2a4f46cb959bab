import EventLoop
import MailProtocol

/// The relay's side of a read-only hold: the sans-I/O filters of MailProtocol, held by
/// reference for the relay. Confined to the session's loop, like the relay that calls them.
final class IMAPReadOnlyRelayFilter: RelayFilter {
    private var filter: IMAPReadOnlyFilter

    init(_ filter: IMAPReadOnlyFilter) { self.filter = filter }

    func fromClient(_ bytes: UnsafeRawBufferPointer) -> (toStore: [UInt8], toClient: [UInt8]) {
        let output = filter.fromClient(bytes)
        return (output.toStore, output.toClient)
    }

    func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8]) {
        let output = filter.fromStore(bytes)
        return (output.toClient, output.toStore)
    }
}

final class POP3ReadOnlyRelayFilter: RelayFilter {
    private var filter: POP3ReadOnlyFilter

    init(_ filter: POP3ReadOnlyFilter) { self.filter = filter }

    func fromClient(_ bytes: UnsafeRawBufferPointer) -> (toStore: [UInt8], toClient: [UInt8]) { filter.fromClient(bytes) }
    /// POP3 has no literals: nothing is ever held for the store.
    func fromStore(_ bytes: UnsafeRawBufferPointer) -> (toClient: [UInt8], toStore: [UInt8]) { (filter.fromStore(bytes), []) }
}
