#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

/// A kernel pipe used as the splice(2) buffer between two sockets.
final class Pipe {
    let readFD: Int32
    let writeFD: Int32
    let capacity: Int

    init(readFD: Int32, writeFD: Int32, capacity: Int) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.capacity = capacity
    }

    deinit {
        close(readFD)
        close(writeFD)
    }
}

/// Pipes are taken only while data is in flight and handed back empty, so an idle session
/// holds none (HAProxy's `src/pipe.c` does the same): 80,000 idle IMAP sessions would
/// otherwise pin 320,000 descriptors. Confined to its loop's queue.
final class PipePool {
    static let pipeBytes: Int32 = 262_144
    private var idle: [Pipe] = []
    private let maxIdle = 64

    /// nil when no pipe can be made (EMFILE/ENFILE): the caller copies instead.
    func take() -> Pipe? {
        if let pipe = idle.popLast() { return pipe }
        var fds: [Int32] = [-1, -1]
        guard mailswitch_pipe2(&fds) == 0 else { return nil }
        let size = mailswitch_set_pipe_size(fds[1], Self.pipeBytes)
        return Pipe(readFD: fds[0], writeFD: fds[1], capacity: size > 0 ? Int(size) : 65_536)
    }

    /// Only empty pipes come back; a pipe with data left in it is dropped.
    func give(_ pipe: Pipe) {
        if idle.count < maxIdle { idle.append(pipe) }
    }
}
