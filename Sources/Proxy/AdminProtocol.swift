import Foundation

/// The admin socket's protocol: the client writes one JSON object on one line (an
/// `AdminRequest`), the service answers with one JSON object on one line (an
/// `AdminResponse`) and closes. The CLI and the server share these types; anything else that
/// speaks JSON lines (`socat`, a script) can use the socket too.
public struct AdminRequest: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable, CaseIterable {
        case sessions, kick, hold, release, holds, route, status, reload
    }

    public var command: Command
    public var user: String?
    public var backend: String?
    /// hold: the text clients are given.
    public var reason: String?
    /// kick: pace the disconnects like a batch of moves.
    public var spread: Bool?
    /// hold: read-only on the user's current store instead of a full hold.
    public var readOnly: Bool?

    enum CodingKeys: String, CodingKey {
        case command, user, backend, reason, spread
        case readOnly = "read_only"
    }

    public init(command: Command, user: String? = nil, backend: String? = nil, reason: String? = nil, spread: Bool? = nil,
                readOnly: Bool? = nil) {
        self.command = command
        self.user = user
        self.backend = backend
        self.reason = reason
        self.spread = spread
        self.readOnly = readOnly
    }
}

public struct AdminResponse: Codable, Sendable, Equatable {
    /// Why a request failed, so the CLI can exit with a status per kind.
    public enum ErrorKind: String, Codable, Sendable {
        /// No such user, session or hold.
        case notFound = "not_found"
        case badRequest = "bad_request"
        case failed
    }

    public struct Session: Codable, Sendable, Equatable {
        public var id: String
        public var user: String?
        public var client: String
        public var listener: String
        public var proto: String
        public var tls: String?
        public var backend: String?
        public var host: String?
        public var phase: String
        public var started: Double
        public var bytesIn: Int
        public var bytesOut: Int
        /// Under a read-only hold (filtered).
        public var readOnly: Bool

        enum CodingKeys: String, CodingKey {
            case id, user, client, listener, tls, backend, host, phase, started
            case readOnly = "read_only"
            case proto = "protocol"
            case bytesIn = "bytes_in"
            case bytesOut = "bytes_out"
        }
    }

    public struct Hold: Codable, Sendable, Equatable {
        public var user: String
        public var reason: String
        public var since: Double
        /// A read-only hold's store; nil for a full hold.
        public var readOnlyStore: String?

        enum CodingKeys: String, CodingKey {
            case user, reason, since
            case readOnlyStore = "read_only_store"
        }
    }

    public struct Route: Codable, Sendable, Equatable {
        public var user: String
        public var filter: String
        /// "cache", "directory" or "stale".
        public var source: String
        /// Seconds since the directory gave the answer (cache and stale only).
        public var age: Double?
        /// "found", "not_found", "ambiguous" or "unavailable".
        public var result: String
        public var dn: String?
        public var attribute: String
        public var value: String?
        /// What an IMAP and a POP3 login would do, one line each.
        public var imap: String
        public var pop3: String
        /// 0 routed, 1 refused as unknown, 2 unavailable or held (the `route` exit status).
        public var status: Int
        /// An operator's hold on the user, if any.
        public var hold: String?
    }

    public var ok: Bool
    public var error: String?
    public var kind: ErrorKind?
    public var message: String?
    public var sessions: [Session]?
    public var holds: [Hold]?
    public var route: Route?
    /// kick, hold: sessions ended.
    public var ended: Int?
    /// status: name -> value lines.
    public var status: [String: String]?

    public init(ok: Bool, error: String? = nil, kind: ErrorKind? = nil, message: String? = nil) {
        self.ok = ok
        self.error = error
        self.kind = kind
        self.message = message
    }

    public static func failure(_ kind: ErrorKind, _ error: String) -> AdminResponse {
        AdminResponse(ok: false, error: error, kind: kind)
    }
}

public enum AdminCodec {
    /// The longest request line the server reads.
    public static let maxRequestBytes = 65_536

    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8)) + [10]
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}
