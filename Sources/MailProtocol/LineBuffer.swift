/// Accumulates bytes and hands out CRLF-terminated lines (a bare LF is accepted too: some
/// clients and scripts send it, and being lenient here costs nothing).
///
/// Every line has a hard limit; a line that grows past it is reported as `.tooLong` as soon as
/// the limit is crossed, without waiting for its end, so a peer can never make us buffer more
/// than `limit` bytes.
public struct LineBuffer: Sendable {
    public enum Next: Equatable, Sendable {
        case line(ArraySlice<UInt8>)
        case incomplete
        case tooLong
    }

    public let limit: Int
    private var bytes: [UInt8] = []
    private var start = 0

    public init(limit: Int) { self.limit = limit }

    public var bufferedCount: Int { bytes.count - start }
    public var isEmpty: Bool { bufferedCount == 0 }

    public mutating func append<C: Collection>(_ data: C) where C.Element == UInt8 {
        compact()
        bytes.append(contentsOf: data)
    }

    /// Next line without its terminator.
    public mutating func nextLine() -> Next {
        guard let lf = bytes[start...].firstIndex(of: .lf) else {
            return bufferedCount > limit ? .tooLong : .incomplete
        }
        var end = lf
        if end > start, bytes[end - 1] == .cr { end -= 1 }
        guard end - start <= limit else { return .tooLong }
        let line = bytes[start..<end]
        start = lf + 1
        return .line(line)
    }

    /// Takes exactly `count` bytes if they are all there (IMAP literal payloads).
    public mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
        guard bufferedCount >= count else { return nil }
        let chunk = bytes[start..<(start + count)]
        start += count
        return chunk
    }

    /// Everything not consumed yet; leaves the buffer empty.
    public mutating func takeAll() -> [UInt8] {
        let rest = Array(bytes[start...])
        bytes = []
        start = 0
        return rest
    }

    public mutating func removeAll() {
        bytes = []
        start = 0
    }

    private mutating func compact() {
        if start == bytes.count {
            bytes.removeAll(keepingCapacity: bytes.capacity <= 4096)
            start = 0
        } else if start > 4096 && start * 2 > bytes.count {
            bytes.removeFirst(start)
            start = 0
        }
    }
}
