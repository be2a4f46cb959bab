// IMAPPreLogin, fed a client's bytes in chunks: the input layout, the run and the invariants are
// PreLoginHarness's. Logins are rejected and accepted in turn, the failure kind rotating and the
// success with and without capabilities and text.
import FuzzSupport
import MailProtocol
import PreLoginHarness

/// libFuzzer's `main` (SwiftPM renames ours, see Fuzz/README.md).
@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let setup = PreLoginSetup(start, count) else { return 0 }
    runPreLogin(IMAPPreLogin(configuration: setup.configuration, secure: setup.secure), setup) { login in
        if login % 2 == 1 { return .reject(failures[(login / 2) % failures.count]) }
        return .accept(BackendLoginSuccess(capabilities: login % 4 == 0 ? nil : ["IMAP4rev1", "IDLE", "MOVE"],
                                           text: login % 3 == 0 ? "" : "Logged in"))
    }
    return 0
}

/// One with a line break in its text, which must not reach the client as a response of its own.
let failures: [LoginFailure] = [
    .authenticationFailed, .temporary, .unavailable(text: "Mailbox is being moved\r\n* OK injected"),
    .backendRefused(code: "IN-USE", text: "Mailbox in use."), .backendRefused(code: "EXPIRED", text: ""),
]
