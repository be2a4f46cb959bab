/// How many sessions end at once after a batch of route changes, and over how long the rest
/// are spread.
public struct DisconnectPolicy: Sendable, Equatable {
    public var burst: Int
    public var maxDelaySeconds: Double

    public init(burst: Int = 100, maxDelaySeconds: Double = 10) {
        self.burst = burst
        self.maxDelaySeconds = maxDelaySeconds
    }
}
