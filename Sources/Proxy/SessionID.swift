enum SessionID {
    private static let alphabet = Array("abcdefghijkmnpqrstuvwxyz23456789")

    /// 15 random characters (75 bits): unique enough to grep logs across store and proxy, and
    /// short enough for a Swift string to hold inline (16 would cost an allocation per session).
    /// Each of the 32 characters takes 5 bits of two 64-bit draws: every draw from the system
    /// generator is a getrandom(2) call, and one per character was 15 system calls per login.
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        var first = generator.next(), second = generator.next()
        return String((0..<15).map { index in
            let value: UInt64
            if index < 12 { value = first & 31; first >>= 5 } else { value = second & 31; second >>= 5 }
            return alphabet[Int(value)]
        })
    }
}
