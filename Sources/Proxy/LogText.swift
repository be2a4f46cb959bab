enum LogText {
    /// User-supplied text for a log line: control characters (a CR/LF in a literal user name
    /// could forge log lines) become `\u{..}` escapes.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return text }
        return String(text.unicodeScalars.map { scalar in
            scalar.properties.generalCategory == .control ? scalar.escaped(asASCII: true) : String(scalar)
        }.joined())
    }
}
