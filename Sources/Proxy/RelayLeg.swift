import Configuration
import EventLoop
import MailProtocol
import Routing

/// The session after login: the relay between the client and the store, the store's response
/// framing when the protocol can say goodbye between two responses, and a read-only hold's
/// filter. A value inside its session, so an idle relayed session pays no allocation for it;
/// confined to the session's loop, like the relay.
struct RelayLeg {
    let relay: Relay
    private let responses: (any ResponseBoundaryTracking)?

    init(client: Connection, store: Connection, descriptor: ProtocolDescriptor, readOnlyMessage: String?, limits: Limits,
         ended: @escaping (Relay.End, Relay.Totals) -> Void) {
        responses = descriptor.makeResponseFraming.map { responseBoundaryObserver($0()) }
        let filter: (any RelayFilter)? = readOnlyMessage.map { message in
            ReadOnlyRelayFilter(descriptor.makeReadOnlyFilter(message, limits.protocolLimits))
        }
        relay = Relay(client: client, backend: store, bufferBytes: limits.relayBufferBytes, observingBackend: responses,
                      filter: filter, onEnd: ended)
    }

    /// Starts relaying once the client has taken the replies queued before (the relay's bytes
    /// must come after them); `started` runs then. Until then the session's login timer stays
    /// armed, so a client that never reads is dropped.
    func start(client: Connection, toBackend: [UInt8], toClient: [UInt8], started: @escaping () -> Void) {
        guard client.outboxCount > 0 else {
            relay.start(toBackend: toBackend, toClient: toClient)
            return started()
        }
        client.onOutboxDrained = { [relay, unowned client] in
            client.onOutboxDrained = nil
            started()
            relay.start(toBackend: toBackend, toClient: toClient)
        }
    }

    /// Ends it the way `SessionEnding` says (`.goodbyeAndClose` or `.close`); returns whether
    /// the goodbye was written.
    @discardableResult
    func end(_ ending: SessionEnding) -> Bool {
        guard case .goodbyeAndClose(let goodbye) = ending else {
            relay.stop()
            return false
        }
        return relay.stop(sayingToClient: goodbye)
    }

    var atResponseBoundary: Bool { responses?.isAtBoundary ?? false }
    var clientCaughtUp: Bool { relay.clientCaughtUp }
}
