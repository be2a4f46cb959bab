// swift-tools-version:6.0
// libFuzzer harnesses for the pure protocol code (the MailProtocol target), in a package of their
// own so that nothing in the main package needs the fuzzing runtime. Build and run them with
// `scripts/fuzz`; see README.md.
import PackageDescription

let fuzzers = [
    "FuzzIMAPPreLogin",
    "FuzzPOP3PreLogin",
    "FuzzIMAPBackendLogin",
    "FuzzPOP3BackendLogin",
    "FuzzSASL",
    "FuzzOAuth",
    "FuzzIMAPResponseFraming",
    "FuzzIMAPReadOnlyFilter",
    "FuzzPOP3ReadOnlyFilter",
    "FuzzProxyHeader",
]

// A path dependency is known by the name of its folder, not by the name in its manifest, and a
// checkout may sit in a folder of any name.
let parent = Context.packageDirectory.split(separator: "/").dropLast().last.map(String.init) ?? "mailswitch"

let package = Package(
    name: "mailswitch-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
    ],
    targets: [
        // libFuzzer's driver entry point and the helpers the fuzzers share.
        .target(name: "FuzzSupport", swiftSettings: [.enableExperimentalFeature("Extern")]),
        // The IMAP and POP3 backend-login fuzzers share one run and one set of invariants.
        .target(name: "BackendLoginHarness",
                dependencies: ["FuzzSupport", .product(name: "MailProtocol", package: parent)]),
        // The IMAP and POP3 pre-login fuzzers and FuzzOAuth share another, FuzzOAuth adding its
        // bearer-token checks through PreLoginChecks.
        .target(name: "PreLoginHarness",
                dependencies: ["FuzzSupport", .product(name: "MailProtocol", package: parent)]),
    ] + fuzzers.map { name in
        // One file each, with `@_cdecl("LLVMFuzzerTestOneInput")`.
        .executableTarget(name: name,
                          dependencies: ["FuzzSupport", "BackendLoginHarness", "PreLoginHarness",
                                         .product(name: "MailProtocol", package: parent)],
                          path: "Sources/\(name)")
    },
    swiftLanguageModes: [.v6]
)
