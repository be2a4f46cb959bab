#if canImport(Glibc)
import Glibc
#endif
import COpenSSL

/// A TLS setting that cannot be used, with the configuration key and the file concerned.
public struct TLSConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

enum OpenSSLErrors {
    /// Drains OpenSSL's thread-local error queue into one line (the innermost reason last).
    static func drain() -> String {
        var reasons: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [UInt8](repeating: 0, count: 256)
            buffer.withUnsafeMutableBufferPointer { raw in
                raw.withMemoryRebound(to: CChar.self) { ERR_error_string_n(code, $0.baseAddress, $0.count) }
            }
            let text = String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
            // "error:0A00018F:SSL routines::ee key too small" -> "ee key too small"
            let reason = text.split(separator: ":", omittingEmptySubsequences: false).last.map(String.init) ?? text
            if !reasons.contains(reason) { reasons.append(reason) }
        }
        return reasons.isEmpty ? "unknown OpenSSL error" : reasons.joined(separator: "; ")
    }

    /// A readable-file check before OpenSSL sees the path: "No such file or directory" says
    /// more than OpenSSL's "system library" wrapping of the same errno.
    static func checkReadable(_ path: String, origin: String, what: String) throws(TLSConfigurationError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw TLSConfigurationError("\(origin): \(what) \(path): \(String(cString: strerror(errno)))")
        }
        close(fd)
    }
}
