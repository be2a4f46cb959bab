import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The PROXY protocol both ways against the real lab: a load balancer at 127.0.0.2 (the
/// example's trusted_proxies) in front of a `proxy_protocol: true` listener, and a store that
/// takes a v2 header from mailswitch (the lab's Dovecot listens with `haproxy = yes` on its
/// IMAP port + 1) and logs the original client. Listener offsets 10700 and 10800.
extension ProxyIntegrationTests {
    /// A PROXY v2 header for TCP over IPv4.
    private func proxyV2(source: String, sourcePort: UInt16, destination: String, destinationPort: UInt16) -> [UInt8] {
        func ipv4(_ text: String) -> [UInt8] { text.split(separator: ".").map { UInt8($0)! } }
        return [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C]
            + ipv4(source) + ipv4(destination)
            + [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF)]
    }

    func testProxyProtocolFromATrustedBalancerReachesTheStoreAsTheOriginalClient() throws {
        let offset = 10700
        let imap = 1143 + offset
        let instance = try MailSwitchInstance(name: "proxy-protocol", labDirectory: Self.labDirectory, edits: [
            ("proxy_protocol: false", "proxy_protocol: true"),
            ("hosts: [\"127.0.0.1:10143\"]", "hosts: [\"127.0.0.1:10144\"]"),
            ("forward_client: auto", "forward_client: proxy_v2"),
        ] + MailSwitchInstance.movedListeners(by: offset))
        defer { instance.stop() }
        XCTAssertTrue(Harness.waitForPort(imap), instance.log)

        // v2 from the trusted balancer, with the client's first command in the same write: the
        // header is taken off exactly, the command is answered after the greeting.
        let trusted = try RawClient(port: imap, source: "127.0.0.2")
        trusted.sendBytes(proxyV2(source: "192.0.2.55", sourcePort: 40055, destination: "198.51.100.1", destinationPort: 143)
                          + Array("a1 CAPABILITY\r\n".utf8))
        XCTAssertEqual(trusted.line()?.hasPrefix("* OK [CAPABILITY"), true, "the greeting")
        XCTAssertEqual(trusted.lines(until: "a1 ").last?.hasPrefix("a1 OK"), true, "the command after the header")
        trusted.send("a2 LOGIN alice alice-secret\r\n")
        XCTAssertEqual(trusted.lines(until: "a2 ").last?.hasPrefix("a2 OK"), true, instance.log)
        trusted.send("a3 LOGOUT\r\n")
        trusted.close()
        // The legacy store logs the original client address.
        let storeLog = try waitForLine(in: "\(Self.labDirectory)/legacy/dovecot.log", containing: "rip=192.0.2.55")
        XCTAssertTrue(storeLog.contains("user=<alice>"), storeLog)
        try instance.waitForLogLine("client=192.0.2.55:40055")   // mailswitch logs the client too

        // v1 works as well.
        let v1 = try RawClient(port: imap, source: "127.0.0.2")
        v1.send("PROXY TCP4 203.0.113.77 198.51.100.1 50077 143\r\n")
        XCTAssertEqual(v1.line()?.hasPrefix("* OK [CAPABILITY"), true)
        v1.send("b1 LOGIN alice alice-secret\r\n")
        XCTAssertEqual(v1.lines(until: "b1 ").last?.hasPrefix("b1 OK"), true, instance.log)
        v1.close()
        try waitForLine(in: "\(Self.labDirectory)/legacy/dovecot.log", containing: "rip=203.0.113.77")

        // Anyone else is closed without a word (waitForPort above was such a peer too).
        let untrustedSeries = "mailswitch_limit_refusals_total{limit=\"untrusted_proxy\"}"
        let before = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))[untrustedSeries]
        let untrusted = try RawClient(port: imap, source: "127.0.0.1", timeout: 5)
        untrusted.sendBytes(proxyV2(source: "192.0.2.66", sourcePort: 1, destination: "198.51.100.1", destinationPort: 143))
        XCTAssertNil(untrusted.line(), "no greeting for an untrusted peer")
        untrusted.close()
        XCTAssertTrue(instance.log.contains("connection from 127.0.0.1 closed: not in trusted_proxies"), instance.log)
        // A trusted peer that sends no header is closed too, at its first byte.
        let headerless = try RawClient(port: imap, source: "127.0.0.2", timeout: 5)
        headerless.send("a1 LOGIN alice alice-secret\r\n")
        XCTAssertNil(headerless.line())
        XCTAssertTrue(headerless.isClosedByPeer())
        headerless.close()
        XCTAssertTrue(instance.log.contains("invalid PROXY header from 127.0.0.2"), instance.log)

        // On a listener without the flag a header is a bad command, and the session goes on.
        let pop3 = try RawClient(port: 1110 + offset, source: "127.0.0.2")
        XCTAssertEqual(pop3.line()?.hasPrefix("+OK"), true)
        pop3.send("PROXY TCP4 192.0.2.1 198.51.100.1 1 110\r\nCAPA\r\n")
        XCTAssertEqual(pop3.line(), "-ERR Unknown command.")
        XCTAssertEqual(pop3.line(), "+OK Capability list follows")
        pop3.close()

        let scrape = try scrape(port: MailSwitchInstance.metricsPort(offset: offset))
        XCTAssertEqual(scrape[untrustedSeries] - before, 1, scrape.text)
    }

    func testABackendPointingBackAtAProxyEndsInARefusalNotALoop() throws {
        // A's legacy store is B, and B's is A: every IMAP login for a legacy user goes round.
        let (offsetA, offsetB) = (10800, 11400)
        let (imapA, imapB) = (1143 + offsetA, 1143 + offsetB)
        let a = try MailSwitchInstance(name: "proxy-loop-a", labDirectory: Self.labDirectory, edits: [
            ("hosts: [\"127.0.0.1:10143\"]", "hosts: [\"127.0.0.1:\(imapB)\"]"),
            ("pop3_hosts: [\"127.0.0.1:10110\"]", "pop3_hosts: [\"127.0.0.1:\(1110 + offsetA)\"]"),
        ] + MailSwitchInstance.movedListeners(by: offsetA))
        defer { a.stop() }
        let b = try MailSwitchInstance(name: "proxy-loop-b", labDirectory: Self.labDirectory, edits: [
            ("hosts: [\"127.0.0.1:10143\"]", "hosts: [\"127.0.0.1:\(imapA)\"]"),
        ] + MailSwitchInstance.movedListeners(by: offsetB))
        defer { b.stop() }
        XCTAssertTrue(Harness.waitForPort(imapA) && Harness.waitForPort(imapB), a.log + b.log)
        let result = try imapLogin("alice", "alice-secret", port: "\(imapA)")
        XCTAssertEqual(result["ok"] as? Bool, false, "\(result)")
        XCTAssertTrue("\(result)".contains("UNAVAILABLE"), "a temporary failure: \(result)")
        // A sends 4, B 3, A 2, B 1; the fifth hop (A) has none left.
        let logs = a.log + b.log
        XCTAssertEqual(logs.components(separatedBy: "proxy loop: x-proxy-ttl 1").count - 1, 1, logs)
        XCTAssertEqual(logs.components(separatedBy: "login refused").count - 1, 5, "five hops and no more: \(logs)")
        assertLands(try imapLogin("bob", "bob-secret", port: "\(imapA)"), on: "new", "other stores are not affected")

        // A's POP3 legacy store is A's own POP3 listener: refused at once, no hop at all.
        let pop3 = try RawClient.pop3Login(port: 1110 + offsetA, user: "alice", password: "alice-secret")
        XCTAssertEqual(pop3.greeting?.hasPrefix("+OK"), true)
        XCTAssertEqual(pop3.answer, "-ERR [SYS/TEMP] Account is temporarily unavailable.")
        XCTAssertTrue(a.log.contains("is this proxy's own listener (a routing loop)"), a.log)
    }

    /// The first line of `path` containing `text`, waiting up to `timeout` for it to appear.
    @discardableResult
    func waitForLine(in path: String, containing text: String, timeout: Double = 10) throws -> String {
        try Harness.waitFor("a line with \(text) in \(path)", timeout: timeout) {
            let content = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            return content.split(separator: "\n").first { $0.contains(text) }.map(String.init)
        }
    }
}
