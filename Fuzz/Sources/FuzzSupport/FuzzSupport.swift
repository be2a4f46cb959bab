// What every fuzzer shares: the libFuzzer entry point, the layout of an input (header, seed,
// body), the seeded choices that split the input into chunks, and the invariant checks.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

@_extern(c, "LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: FuzzTarget) -> CInt

/// The fuzzer's `main`: hands the command line to libFuzzer.
///
/// SwiftPM links every executable with its entry point renamed (`--defsym main=<Module>_main`,
/// for testable executables), so a fuzzer cannot simply leave `main` to libFuzzer as `swiftc
/// -parse-as-library` alone would: the module has an `@main` that calls this instead. It does
/// what libFuzzer's own `main` does, through libFuzzer's public LLVMFuzzerRunDriver.
public func runLibFuzzer(_ target: FuzzTarget) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
}

/// An invariant: a violation is a crash, so that libFuzzer keeps the input.
public func require(_ condition: Bool, _ message: @autoclosure () -> String,
                    file: StaticString = #fileID, line: UInt = #line) {
    if !condition { fatalError(message(), file: file, line: line) }
}

/// Whole CRLF lines: not empty, ends in CRLF, no bare CR or LF inside.
public func requireLines(_ bytes: [UInt8], _ what: String, file: StaticString = #fileID, line: UInt = #line) {
    require(bytes.count >= 2 && bytes[bytes.count - 2] == 13 && bytes[bytes.count - 1] == 10,
            "\(what) does not end in CRLF: \(bytes)", file: file, line: line)
    for index in bytes.indices {
        if bytes[index] == 10 { require(index > 0 && bytes[index - 1] == 13, "\(what) has a bare LF: \(bytes)", file: file, line: line) }
        if bytes[index] == 13 { require(index + 1 < bytes.count && bytes[index + 1] == 10, "\(what) has a bare CR: \(bytes)", file: file, line: line) }
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
public func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty else { return true }
    guard needle.count <= haystack.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
        if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
    }
    return false
}

/// ASCII upper case, as the protocols compare command names.
public func upper<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    String(decoding: bytes.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
}

/// An input as the fuzzers lay it out: `headerCount` bytes that set the scene (a configuration,
/// a split), two bytes that seed the `Choices`, then the bytes under test. Keeping the seed in the
/// input lets libFuzzer mutate how the bytes are fed along with the bytes themselves.
public struct FuzzInput {
    public let header: [UInt8]
    public let choices: Choices
    public let body: [UInt8]

    /// nil when the input is too short to hold the header and the seed.
    public init?(_ start: UnsafePointer<UInt8>, _ count: Int, headerCount: Int) {
        let data = UnsafeBufferPointer(start: start, count: count)
        guard data.count >= headerCount + 2 else { return nil }
        header = Array(data[..<headerCount])
        choices = Choices(data[headerCount], data[headerCount + 1])
        body = Array(data[(headerCount + 2)...])
    }
}

/// Choices drawn from a seed that is part of the input, so that libFuzzer explores the ways the
/// bytes are split (and interleaved, and skipped) along with the bytes themselves.
public struct Choices {
    private var state: UInt64
    private let maxChunk: Int

    /// The seed's low three bits pick the largest chunk: 1, 2, 3, 7, 16, 64, 512 bytes, or all.
    public init(_ seed: UInt16) {
        state = (UInt64(seed) &+ 1) &* 0x9E37_79B9_7F4A_7C15   // never zero
        maxChunk = [1, 2, 3, 7, 16, 64, 512, Int.max][Int(seed & 7)]
    }

    /// The seed from two input bytes.
    public init(_ high: UInt8, _ low: UInt8) {
        self.init(UInt16(high) << 8 | UInt16(low))
    }

    public mutating func next() -> UInt64 {    // xorshift64*
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }

    /// 0..<bound (0 when bound <= 1).
    public mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(bound, 1))) }

    /// The next chunk's size, 1...remaining (remaining > 0).
    public mutating func chunk(_ remaining: Int) -> Int {
        maxChunk == .max ? remaining : min(remaining, 1 + below(maxChunk))
    }

    /// The next chunk of `input` from `offset` (before its end), which it moves past the chunk.
    public mutating func chunk(of input: [UInt8], from offset: inout Int) -> ArraySlice<UInt8> {
        let size = chunk(input.count - offset)
        defer { offset += size }
        return input[offset..<(offset + size)]
    }
}
