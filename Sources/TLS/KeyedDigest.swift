import COpenSSL

/// HMAC-SHA-256 under a key made at start-up, from OpenSSL: what the password-check cache
/// keeps instead of a password (`verify_cache_ttl`). Without the key, which never leaves the
/// process, a digest cannot be tested against guesses; a restart forgets them all.
public struct KeyedDigest: Sendable {
    private let key: [UInt8]

    /// A fresh random key; nil only if OpenSSL's generator cannot be seeded.
    public init?() {
        var key = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&key, Int32(key.count)) == 1 else { return nil }
        self.key = key
    }

    public func digest(_ parts: [UInt8]...) -> [UInt8] {
        // Each part's length first, so that ("ab", "c") and ("a", "bc") differ.
        var message: [UInt8] = []
        for part in parts {
            withUnsafeBytes(of: UInt32(part.count).bigEndian) { message.append(contentsOf: $0) }
            message.append(contentsOf: part)
        }
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        _ = HMAC(EVP_sha256(), key, Int32(key.count), message, message.count, &output, &length)
        return Array(output.prefix(Int(length)))
    }
}
