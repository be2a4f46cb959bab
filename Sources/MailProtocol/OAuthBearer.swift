/// An OAuth 2.0 bearer-token login as a client sent it: OAUTHBEARER (RFC 7628) or Google's
/// XOAUTH2. The proxy checks no token: it routes on the user the message names and forwards
/// the message, byte for byte, to a store that checks the token itself.
///
/// The message holds the token: it is never part of a description, a mirror or a log text.
public struct BearerLogin: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    public enum Mechanism: String, Sendable, CaseIterable {
        case oauthBearer = "OAUTHBEARER"
        case xoauth2 = "XOAUTH2"

        /// The server's error challenge when the login fails (RFC 7628 §3.2.2): the client
        /// answers it with a dummy response and only then gets the final NO / -ERR. Kept
        /// minimal: the proxy knows no scope nor discovery document of the token's issuer.
        public var errorChallenge: [UInt8] {
            switch self {
            case .oauthBearer: return Array(#"{"status":"invalid_token"}"#.utf8)
            // Google's form (its status is an HTTP code, its scheme in lower case).
            case .xoauth2: return Array(#"{"status":"401","schemes":"bearer"}"#.utf8)
            }
        }
    }

    /// The response a client gives to the error challenge (RFC 7628 §3.2.3: a single %x01),
    /// as the store-facing machines send it; its base64 is `AQ==`.
    public static let dummyResponse: [UInt8] = [0x01]

    public let mechanism: Mechanism
    /// Whose mailbox: OAUTHBEARER's GS2 authorization identity, XOAUTH2's `user`.
    public let user: String
    /// The decoded SASL message exactly as received, the token in it: what the store is sent.
    public let message: [UInt8]

    /// Parses a decoded SASL message strictly; nil when it is malformed or cannot be routed.
    public init?(mechanism: Mechanism, message: [UInt8]) {
        let user: String?
        switch mechanism {
        case .oauthBearer: user = Self.parseOAuthBearer(message)
        case .xoauth2: user = Self.parseXOAuth2(message)
        }
        guard let user else { return nil }
        self.mechanism = mechanism
        self.user = user
        self.message = message
    }

    public var description: String { "\(mechanism.rawValue) user=\(user)" }

    /// The access token itself, for an introspection endpoint (RFC 7662): the `auth` value
    /// after its scheme. The parser has checked there is exactly one.
    public var token: [UInt8] {
        let pair = message.split(separator: Self.kvsep).first { $0.starts(with: "auth=".utf8) } ?? []
        return Array(pair.dropFirst(5 + 6).drop { $0 == .space })
    }

    /// `dump()` and debuggers read the mirror, not the description: the message stays out.
    public var customMirror: Mirror {
        Mirror(self, children: ["mechanism": mechanism, "user": user], displayStyle: .struct)
    }

    private static let kvsep: UInt8 = 0x01

    /// RFC 7628 §3.1: `gs2-header kvsep *kvpair kvsep`, where `kvpair = key "=" value kvsep`.
    private static func parseOAuthBearer(_ message: [UInt8]) -> String? {
        // Split at every %x01: a well-formed message gives the header, the pairs, and two
        // empty pieces (the kvsep that ends the last pair and the final one).
        let pieces = message.split(separator: kvsep, omittingEmptySubsequences: false)
        guard pieces.count >= 3, pieces[pieces.count - 1].isEmpty, pieces[pieces.count - 2].isEmpty else { return nil }
        guard let user = parseGS2Header(pieces[0]) else { return nil }
        guard let auth = authValue(pieces[1..<(pieces.count - 2)]), isBearerCredentials(auth) else { return nil }
        return user
    }

    /// Google's format, which has no grammar beyond its one example:
    /// `user=U %x01 auth=Bearer T %x01 %x01`, in that order and nothing else.
    private static func parseXOAuth2(_ message: [UInt8]) -> String? {
        let pieces = message.split(separator: kvsep, omittingEmptySubsequences: false)
        guard pieces.count == 4, pieces[2].isEmpty, pieces[3].isEmpty,
              pieces[0].starts(with: "user=".utf8), pieces[1].starts(with: "auth=".utf8),
              isBearerCredentials(pieces[1].dropFirst(5)) else { return nil }
        return userName(pieces[0].dropFirst(5))
    }

    /// RFC 5801 §4: `gs2-cb-flag "," [gs2-authzid] ","`; the user is the authzid, its `=2C`
    /// and `=3D` decoded.
    ///
    /// Refused: `p=` (the client requires channel binding to the TLS connection it has with
    /// us, which a proxy cannot carry over to its own connection to the store); the `F`
    /// flag (no GSS-API mechanism is involved); and a header without `a=`: the token is opaque
    /// to the proxy, so without an authzid there is no user to route. The clients that use
    /// OAUTHBEARER with mail (Thunderbird, Apple Mail) send `a=`.
    private static func parseGS2Header(_ header: ArraySlice<UInt8>) -> String? {
        guard header.count >= 2, header.first == UInt8(ascii: "n") || header.first == UInt8(ascii: "y"),
              header[header.startIndex + 1] == UInt8(ascii: ",") else { return nil }
        let authzid = header.dropFirst(2)
        guard authzid.starts(with: "a=".utf8), authzid.last == UInt8(ascii: ",") else { return nil }
        let name = authzid.dropFirst(2).dropLast()
        // A second comma would mean more header than the grammar has.
        guard !name.isEmpty, !name.contains(UInt8(ascii: ",")) else { return nil }
        var decoded: [UInt8] = []
        var index = name.startIndex
        while index < name.endIndex {
            let byte = name[index]
            if byte == UInt8(ascii: "=") {
                let escape = name[index...].prefix(3)
                if escape.elementsEqual("=2C".utf8) {
                    decoded.append(UInt8(ascii: ","))
                } else if escape.elementsEqual("=3D".utf8) {
                    decoded.append(UInt8(ascii: "="))
                } else {
                    return nil
                }
                index += 3
            } else {
                decoded.append(byte)
                index += 1
            }
        }
        return userName(decoded[...])
    }

    /// `kvpair = key "=" value`, `key = 1*ALPHA`, `value = *(VCHAR / SP / HTAB / CR / LF)`;
    /// returns the value of `auth`. Keys other than auth, host and port are allowed (the
    /// store may know them; it gets the message unchanged), but no key twice: the proxy and the
    /// store must not be able to read two different tokens out of one message.
    private static func authValue(_ pairs: ArraySlice<ArraySlice<UInt8>>) -> ArraySlice<UInt8>? {
        var seen = Set<[UInt8]>()
        var auth: ArraySlice<UInt8>?
        for pair in pairs {
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else { return nil }
            let key = pair[pair.startIndex..<equals]
            let value = pair[(equals + 1)...]
            guard !key.isEmpty, key.allSatisfy(isAlpha), value.allSatisfy(isValueByte) else { return nil }
            // Case folded for the duplicate check only: a store that compares keys without
            // regard to case must not find a second `auth` either.
            guard seen.insert(key.map(\.asciiUppercased)).inserted else { return nil }
            if key.elementsEqual("auth".utf8) { auth = value }
        }
        return auth
    }

    /// RFC 6750 §2.1: `"Bearer" 1*SP b64token`, the scheme without regard to case (RFC 7235),
    /// `b64token = 1*(ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/") *"="`.
    private static func isBearerCredentials(_ value: ArraySlice<UInt8>) -> Bool {
        guard value.count > 6, asciiEqualsIgnoringCase(value.prefix(6), "Bearer".utf8) else { return false }
        let afterScheme = value.dropFirst(6)
        let token = afterScheme.drop { $0 == .space }
        guard token.count < afterScheme.count, !token.isEmpty else { return false }
        let body = token.prefix { $0 != UInt8(ascii: "=") }
        let padding = token[body.endIndex...]
        return !body.isEmpty && body.allSatisfy(isTokenByte) && padding.allSatisfy { $0 == UInt8(ascii: "=") }
    }

    /// The user as a string: valid UTF-8 (routing and the store must mean the same name, so no
    /// byte may be replaced in decoding) without NUL.
    private static func userName(_ bytes: ArraySlice<UInt8>) -> String? {
        guard !bytes.isEmpty, !bytes.contains(0) else { return nil }
        let name = string(bytes)
        guard name.utf8.elementsEqual(bytes) else { return nil }
        return name
    }

    private static func isAlpha(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }

    private static func isValueByte(_ byte: UInt8) -> Bool {
        (byte >= 0x20 && byte <= 0x7E) || byte == 0x09 || byte == .cr || byte == .lf
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        isAlpha(byte) || (byte >= 0x30 && byte <= 0x39) || "-._~+/".utf8.contains(byte)
    }
}

extension BearerLogin {
    /// A store's error challenge, for the log reason of the refusal: its JSON when it decodes,
    /// on one line and short. It comes from the store and holds no token of the client's.
    static func challengeText(_ body: ArraySlice<UInt8>) -> String {
        let decoded = Base64.decode(body) ?? Array(body)
        return LoginFailure.lineText(string(decoded.prefix(200)))
    }
}
