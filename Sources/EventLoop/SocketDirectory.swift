#if canImport(Glibc)
import Glibc
#endif

/// The directory a Unix socket is made in. systemd's `RuntimeDirectory=` makes it for a
/// service it starts; a daemon run by hand, or under a unit without that line, makes it itself
/// the way `systemd/mailswitch.service` has systemd make it: mode 0750 (the socket's group may
/// reach it, nobody else), owned by whoever runs the daemon (the service's user and group).
public enum SocketDirectory {
    public static let mode: mode_t = 0o750

    /// Makes the socket's directory and any missing parents; nothing when it exists.
    public static func make(for socketPath: String) throws(SystemError) {
        let directory = parent(of: socketPath)
        guard !isDirectory(directory) else { return }
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            guard !isDirectory(prefix) else { continue }
            // The umask must not narrow what systemd would have made.
            let previous = umask(0o027)
            let made = mkdir(prefix, mode)
            umask(previous)
            if made != 0, errno != EEXIST { throw SystemError("mkdir \(prefix)", errno: errno) }
        }
    }

    /// Why the socket's directory is missing and could not be made by this user, or nil when
    /// it exists or could be made. Changes nothing (for `check-config`).
    public static func problem(for socketPath: String) -> String? {
        let directory = parent(of: socketPath)
        if isDirectory(directory) { return nil }
        var ancestor = directory
        while !exists(ancestor) {
            ancestor = parent(of: ancestor)
        }
        guard isDirectory(ancestor) else { return "\(ancestor) is not a directory" }
        guard access(ancestor, W_OK | X_OK) == 0 else {
            return "\(directory) does not exist and this user cannot make it (\(ancestor) is not writable)"
        }
        return nil
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    private static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }
}
