/// What both store-login machines share: they read the store line by line until the login is
/// decided, and between the store's OK to STARTTLS (STLS) and the handshake they take nothing.
protocol LineDrivenStoreLogin {
    /// The protocol's command that starts TLS, for the refusal's reason.
    static var startTLSCommand: String { get }
    var input: LineBuffer { get set }
    var isDecided: Bool { get }
    var awaitsHandshake: Bool { get }
    mutating func handle(_ line: ArraySlice<UInt8>) -> [BackendAction]
    mutating func fail(_ failure: LoginFailure, _ reason: String) -> BackendAction
}

extension LineDrivenStoreLogin {
    mutating func receiveLines<C: Collection>(_ bytes: C) -> [BackendAction] where C.Element == UInt8 {
        input.append(bytes)
        var actions: [BackendAction] = []
        while !isDecided {
            // Plaintext after the store's OK to STARTTLS, before the handshake, would be taken
            // as the store's word once TLS is up (the STARTTLS-injection class): refuse it.
            if awaitsHandshake {
                guard input.isEmpty else {
                    return actions + [fail(.temporary, "backend sent data after its \(Self.startTLSCommand) answer")]
                }
                return actions
            }
            switch input.nextLine() {
            case .incomplete:
                return actions
            case .tooLong:
                return actions + [fail(.temporary, "backend sent an over-long line")]
            case .line(let line):
                actions += handle(line)
            }
        }
        return actions
    }
}
