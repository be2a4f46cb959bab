/// The admin socket that the CLI (`sessions`, `kick`, `hold`, …) talks to.
public struct AdminConfiguration: Sendable, Equatable {
    public var socketPath: String
    /// Holds set from the CLI, kept across reloads and restarts.
    public var stateFile: String

    public init(socketPath: String = "/run/mailswitch/admin.sock", stateFile: String? = nil) {
        self.socketPath = socketPath
        self.stateFile = stateFile ?? AdminConfiguration.defaultStateFile(socketPath: socketPath)
    }

    /// Next to the socket, as `holds.json`.
    public static func defaultStateFile(socketPath: String) -> String {
        guard let slash = socketPath.lastIndex(of: "/") else { return "holds.json" }
        return String(socketPath[...slash]) + "holds.json"
    }
}
