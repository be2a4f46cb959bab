/// SASL PLAIN (RFC 4616) and the LOGIN mechanism's two prompts, as both IMAP and POP3 use them,
/// and the bearer-token mechanisms (`BearerLogin`).
public enum SASL {
    public enum Mechanism: String, Sendable, CaseIterable {
        case plain = "PLAIN"
        case login = "LOGIN"
        /// Offered only on listeners with `oauth: true` (`PreLoginConfiguration.oauth`).
        case oauthBearer = "OAUTHBEARER"
        case xoauth2 = "XOAUTH2"

        /// The bearer-token mechanism this is, if it is one.
        public var bearer: BearerLogin.Mechanism? {
            switch self {
            case .plain, .login: return nil
            case .oauthBearer: return .oauthBearer
            case .xoauth2: return .xoauth2
            }
        }

        public init?<C: Collection>(name: C) where C.Element == UInt8 {
            guard let match = Mechanism.allCases.first(where: { asciiEqualsIgnoringCase(Array($0.rawValue.utf8), name) })
            else { return nil }
            self = match
        }
    }

    public static let usernamePrompt = Array("Username:".utf8)
    public static let passwordPrompt = Array("Password:".utf8)

    /// `authzid NUL authcid NUL passwd`. Returns nil when the message is malformed
    /// (not exactly two NULs, or an empty authentication identity).
    public static func decodePlain(_ message: [UInt8]) -> Credentials? {
        let parts = message.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty, !parts[2].contains(0) else { return nil }
        return Credentials(authorizationID: string(parts[0]), username: string(parts[1]), password: Array(parts[2]))
    }

    public static func encodePlain(_ credentials: Credentials) -> [UInt8] {
        var message = Array(credentials.authorizationID.utf8)
        message.append(0)
        message.append(contentsOf: credentials.username.utf8)
        message.append(0)
        message.append(contentsOf: credentials.password)
        return Base64.encode(message)
    }

    /// A client's response line during an exchange.
    public enum Response: Equatable, Sendable {
        case data([UInt8])
        case cancelled
        case invalid
    }

    /// `*` cancels; otherwise the line must be strict base64 (an empty line is empty data).
    public static func parseResponse(_ line: ArraySlice<UInt8>) -> Response {
        if line.count == 1 && line.first == UInt8(ascii: "*") { return .cancelled }
        guard let data = Base64.decode(line) else { return .invalid }
        return .data(data)
    }

    /// An initial response (RFC 4959 / RFC 5034): `=` stands for an empty one.
    public static func parseInitialResponse(_ token: ArraySlice<UInt8>) -> Response {
        if token.count == 1 && token.first == UInt8(ascii: "=") { return .data([]) }
        guard let data = Base64.decode(token) else { return .invalid }
        return .data(data)
    }
}

/// An in-progress SASL exchange, shared by the IMAP AUTHENTICATE and POP3 AUTH drivers.
/// Each step consumes a client response and either asks again or finishes.
struct SASLExchange: Sendable, Equatable {
    enum Step: Equatable {
        case challenge([UInt8])      // send `+ base64(challenge)`
        case done(Credentials)
        case failed                  // malformed message
    }

    let mechanism: SASL.Mechanism
    private var username: String?

    init(mechanism: SASL.Mechanism) { self.mechanism = mechanism }

    /// The first step, with or without an initial response.
    mutating func start(initialResponse: [UInt8]?) -> Step {
        guard let initialResponse else {
            // Only LOGIN prompts; the others take their whole message after an empty challenge.
            return .challenge(mechanism == .login ? SASL.usernamePrompt : [])
        }
        return respond(initialResponse)
    }

    mutating func respond(_ data: [UInt8]) -> Step {
        switch mechanism {
        case .oauthBearer, .xoauth2:
            guard let bearer = mechanism.bearer, let login = BearerLogin(mechanism: bearer, message: data) else { return .failed }
            return .done(Credentials(bearer: login))
        case .plain:
            guard let credentials = SASL.decodePlain(data) else { return .failed }
            return .done(credentials)
        case .login:
            guard let username else {
                guard !data.isEmpty, !data.contains(0) else { return .failed }
                self.username = string(data)
                return .challenge(SASL.passwordPrompt)
            }
            guard !data.contains(0) else { return .failed }
            return .done(Credentials(username: username, password: data))
        }
    }
}
