// POP3BackendLogin, fed a store's bytes in chunks: the input layout and the invariants are
// BackendLoginHarness's.
import BackendLoginHarness
import FuzzSupport
import MailProtocol

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    fuzzBackendLogin(start, count, localPort: 110) { credentials, client, startTLS, limits in
        POP3BackendLogin(credentials: credentials, client: client, tls: startTLS ? .startTLS : .none, limits: limits)
    }
}
