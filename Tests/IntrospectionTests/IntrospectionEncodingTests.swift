@testable import Introspection
import Routing
import XCTest

/// The request body and the answer's parsing, without a server.
final class IntrospectionEncodingTests: XCTestCase {
    func testTheBodyFormEncodesEveryByteButTheUnreservedOnes() {
        let body = FormEncoding.introspectionBody(token: Array("aZ09-._~ +&=%/é".utf8) + [0, 0xFF])
        XCTAssertEqual(String(decoding: body, as: UTF8.self),
                       "token=aZ09-._~+%2B%26%3D%25%2F%C3%A9%00%FF&token_type_hint=access_token")
        XCTAssertEqual(FormEncoding.encode("mail:switch"), "mail%3Aswitch")
    }

    func testAnAnswerIsActiveOnlyWithTheBooleanTrue() {
        func verdict(_ json: String) -> TokenVerdict { IntrospectionResponse.verdict(body: Array(json.utf8)) }
        XCTAssertEqual(verdict(#"{"active": true, "username": "alice", "exp": 1, "scope": "imap"}"#),
                       .active(username: "alice"))
        XCTAssertEqual(verdict(#"{"active": true}"#), .active(username: nil))
        XCTAssertEqual(verdict(#"{"active": true, "username": ""}"#), .active(username: nil))
        XCTAssertEqual(verdict(#"{"active": false, "username": "alice"}"#), .inactive)
        for bad in [#"{"active": 1}"#, #"{"active": "true"}"#, #"{"username": "alice"}"#,
                    #"{"active": true, "username": 7}"#, "[true]", "", "active=true"] {
            guard case .unavailable = verdict(bad) else { return XCTFail("\(bad) gave \(verdict(bad))") }
        }
    }
}
