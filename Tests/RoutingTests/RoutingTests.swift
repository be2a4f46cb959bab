import Routing
import XCTest

final class LDAPFilterTests: XCTestCase {
    func testEscapingPerRFC4515() {
        XCTAssertEqual(LDAPFilter.escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a")
        XCTAssertEqual(LDAPFilter.escape("a\\b\0c"), "a\\5cb\\00c")
        XCTAssertEqual(LDAPFilter.escape("jürgen"), "jürgen")
    }

    func testTemplateExpansion() {
        let template = "(&(objectClass=inetOrgPerson)(uid=%u))"
        XCTAssertEqual(LDAPFilter.expand(template, user: "*)(uid=*"), "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))")
        XCTAssertEqual(LDAPFilter.expand("(&(uid=%n)(dc=%d)(x=%%))", user: "bob@example.org"), "(&(uid=bob)(dc=example.org)(x=%))")
        XCTAssertNil(LDAPFilter.validateTemplate(template))
        XCTAssertNotNil(LDAPFilter.validateTemplate("(uid=%x)"))
        XCTAssertNotNil(LDAPFilter.validateTemplate("(uid=alice)"))
        XCTAssertNotNil(LDAPFilter.validateTemplate("uid=%u"))
    }
}

final class HostPortTests: XCTestCase {
    func testParsing() {
        XCTAssertEqual(HostPort.parse("127.0.0.1:10143", defaultPort: nil), HostPort(host: "127.0.0.1", port: 10143))
        XCTAssertEqual(HostPort.parse("store.example.org", defaultPort: 143), HostPort(host: "store.example.org", port: 143))
        XCTAssertEqual(HostPort.parse("[::1]:993", defaultPort: nil), HostPort(host: "::1", port: 993))
        XCTAssertEqual(HostPort.parse("::1", defaultPort: 110), HostPort(host: "::1", port: 110))
        XCTAssertNil(HostPort.parse("host:0", defaultPort: nil))
        XCTAssertNil(HostPort.parse("host:99999", defaultPort: nil))
        XCTAssertNil(HostPort.parse("host", defaultPort: nil))
        XCTAssertNil(HostPort.parse("bad host:1", defaultPort: nil))
    }
}

final class RoutingTableTests: XCTestCase {
    let legacy = Backend(name: "legacy", imapHosts: [HostPort(host: "127.0.0.1", port: 10143)],
                         pop3Hosts: [HostPort(host: "127.0.0.1", port: 10110)])
    let imapOnly = Backend(name: "imaponly", imapHosts: [HostPort(host: "127.0.0.1", port: 30143)], pop3Hosts: [])

    func table(default name: String?) -> RoutingTable {
        RoutingTable(backends: ["legacy": legacy, "imaponly": imapOnly], defaultBackend: name)
    }

    func testNamedBackendPerProtocol() {
        let result = DirectoryResult.found(dn: "uid=a", backendValue: "legacy")
        guard case .backend(let backend, let hosts, _) = table(default: nil).decide(result, service: .pop3) else {
            return XCTFail("expected a backend")
        }
        XCTAssertEqual(backend.name, "legacy")
        XCTAssertEqual(hosts, [HostPort(host: "127.0.0.1", port: 10110)])
        guard case .unavailable = table(default: nil).decide(.found(dn: "uid=a", backendValue: "imaponly"), service: .pop3) else {
            return XCTFail("a backend without hosts for the protocol is a temporary failure")
        }
    }

    func testMissingEntryOrAttributeUsesDefaultOrRefuses() {
        for result in [DirectoryResult.notFound, .found(dn: "uid=a", backendValue: nil)] {
            guard case .backend(let backend, _, _) = table(default: "legacy").decide(result, service: .imap) else {
                return XCTFail("expected the default backend")
            }
            XCTAssertEqual(backend.name, "legacy")
            guard case .unknownUser = table(default: nil).decide(result, service: .imap) else {
                return XCTFail("without a default, refuse like a bad password")
            }
        }
        guard case .unknownUser = table(default: "legacy").decide(.ambiguous(count: 2), service: .imap) else {
            return XCTFail("ambiguous entries are refused")
        }
    }

    func testLiteralHostsAndUnknownNames() {
        guard case .backend(_, let hosts, _) = table(default: nil).decide(.found(dn: "x", backendValue: "store1.example.org"), service: .imap) else {
            return XCTFail("a dotted value is a literal host")
        }
        XCTAssertEqual(hosts, [HostPort(host: "store1.example.org", port: 143)])
        guard case .backend(_, let withPort, _) = table(default: nil).decide(.found(dn: "x", backendValue: "10.1.2.3:1110"), service: .pop3) else {
            return XCTFail("host:port is a literal host")
        }
        XCTAssertEqual(withPort, [HostPort(host: "10.1.2.3", port: 1110)])
        guard case .unavailable = table(default: "legacy").decide(.found(dn: "x", backendValue: "nowhere"), service: .imap) else {
            return XCTFail("an unknown backend name is a data error: temporary, not the default")
        }
    }

    func testDirectoryUnavailableIsTemporary() {
        guard case .unavailable = table(default: "legacy").decide(.unavailable(reason: "down"), service: .imap) else {
            return XCTFail("never fall back to the default when the directory is down")
        }
    }
}
