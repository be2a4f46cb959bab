import ArgumentParser
import Foundation
import Proxy

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List open sessions (from the running service).")

    @Option(help: "Only this user's sessions.") var user: String?
    @Option(help: "Only sessions on this backend.") var backend: String?
    @OptionGroup var options: AdminOptions

    func run() throws {
        let response = try options.ask(AdminRequest(command: .sessions, user: user, backend: backend))
        guard !options.json else { return }
        let sessions = response.sessions ?? []
        let rows = sessions.map { s in
            [s.id, s.user ?? "-", s.client, s.listener, s.proto, s.tls ?? "plain",
             (s.backend ?? "-") + (s.readOnly ? " (read-only)" : ""), s.host ?? "-", s.phase,
             Self.time(s.started), "\(s.bytesIn)", "\(s.bytesOut)"]
        }
        printTable(["ID", "USER", "CLIENT", "LISTENER", "PROTO", "TLS", "BACKEND", "HOST", "PHASE", "STARTED", "IN", "OUT"], rows)
        print("\(sessions.count) session(s)")
    }

    static func time(_ epoch: Double) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: epoch))
    }
}

struct Kick: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "End a user's sessions, or every session on a backend.",
        discussion: "IMAP clients at a response boundary get * BYE [UNAVAILABLE]; others are closed. Exit 1 when nothing matched.")

    @Argument(help: "The user whose sessions end.") var user: String?
    @Option(help: "Only (or all) sessions on this backend.") var backend: String?
    @Flag(help: "Pace the disconnects like a batch of moves (routing.disconnect_burst, max_disconnect_delay).") var spread = false
    @OptionGroup var options: AdminOptions

    func validate() throws {
        if user == nil && backend == nil { throw ValidationError("name a user, --backend NAME, or both") }
    }

    func run() throws {
        let response = try options.ask(AdminRequest(command: .kick, user: user, backend: backend, spread: spread))
        if !options.json { print(response.message ?? "ok") }
    }
}

struct Hold: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold a user: logins are refused with the reason, open sessions end. Kept across reloads and restarts of this instance.",
        discussion: """
            With --read-only the user keeps logging in to the store the directory names now, but the session is \
            filtered: SELECT becomes EXAMINE, and nothing that would change the mailbox reaches the store.
            """)

    @Argument(help: "The user to hold.") var user: String
    @Option(help: "What the user's mail client is told.") var reason: String?
    @Flag(help: "A read-only hold on the user's current store instead of a full hold.") var readOnly = false
    @OptionGroup var options: AdminOptions

    func run() throws {
        let response = try options.ask(AdminRequest(command: .hold, user: user, reason: reason, readOnly: readOnly ? true : nil))
        if !options.json { print(response.message ?? "ok") }
    }
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Release a hold set with `mailswitch hold` (exit 1 if the user was not held).")

    @Argument(help: "The held user.") var user: String
    @OptionGroup var options: AdminOptions

    func run() throws {
        let response = try options.ask(AdminRequest(command: .release, user: user))
        if !options.json { print(response.message ?? "ok") }
    }
}

struct Holds: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the holds set with `mailswitch hold` on this instance.")

    @OptionGroup var options: AdminOptions

    func run() throws {
        let response = try options.ask(AdminRequest(command: .holds))
        guard !options.json else { return }
        let holds = response.holds ?? []
        printTable(["USER", "SINCE", "KIND", "REASON"],
                   holds.map { [$0.user, Sessions.time($0.since), $0.readOnlyStore.map { "read-only on \($0)" } ?? "full", $0.reason] })
        print("\(holds.count) hold(s)")
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The running service's state.")

    @OptionGroup var options: AdminOptions

    func run() throws {
        let response = try options.ask(AdminRequest(command: .status))
        guard !options.json else { return }
        for (key, value) in (response.status ?? [:]).sorted(by: { $0.key < $1.key }) { print("\(key): \(value)") }
    }
}

/// Columns padded to their widest cell.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    for row in all {
        print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
    }
}
