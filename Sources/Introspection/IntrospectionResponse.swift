#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Routing

/// The body of a successful introspection answer (RFC 7662 §2.2): `active` is required and a
/// JSON boolean; of the optional members only `username` matters to routing.
///
/// `JSONDecoder` rather than `JSONSerialization`: on Linux the latter hands `1` back as
/// something that casts to `true`, and a number is not the boolean the RFC requires.
struct IntrospectionResponse: Decodable {
    let active: Bool
    let username: String?

    /// The verdict for a 200 answer's body. A body that is not such an object says nothing
    /// about the token: unavailable, and the reason never quotes the body (it may echo the token).
    static func verdict(body: [UInt8]) -> TokenVerdict {
        guard let response = try? JSONDecoder().decode(IntrospectionResponse.self, from: Data(body)) else {
            return .unavailable(
                reason: "introspection answer is not RFC 7662 JSON (a boolean \"active\", a string \"username\")")
        }
        guard response.active else { return .inactive }
        // An empty name names no one.
        return .active(username: response.username.flatMap { $0.isEmpty ? nil : $0 })
    }
}
