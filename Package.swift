// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "mailswitch",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mailswitch", targets: ["mailswitch"]),
        .library(name: "MailProtocol", targets: ["MailProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // System libraries. OpenSSL is declared now so the TLS layer can slot in under the
        // connection layer; libldap (built against GnuTLS on Debian) backs the Directory.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLDAP", pkgConfig: "ldap",
                       providers: [.apt(["libldap2-dev"])]),
        // libcurl (the OpenSSL flavour, the TLS library mailswitch already links) backs token
        // introspection: a maintained HTTP client, not one of our own.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        // The only C we write: thin prefixed wrappers for what Swift cannot import, one target
        // per system library so that each Swift target sees only the library it uses (the event
        // loop neither libldap nor OpenSSL nor libcurl).
        .target(name: "CSystemShims"),
        .target(name: "CLDAPShims", dependencies: ["CLDAP"]),
        .target(name: "COpenSSLShims", dependencies: ["COpenSSL"]),
        .target(name: "CCurlShims", dependencies: ["CCurl"]),

        // Pure protocol code: no networking, no Foundation, no clocks.
        .target(name: "MailProtocol", swiftSettings: strict),
        .target(name: "Routing", dependencies: ["MailProtocol"], swiftSettings: strict),
        // The service's settings and the YAML file they are read from, testable without the
        // executable. No socket code: an address is checked as the listeners will parse it.
        .target(name: "Configuration",
                dependencies: ["MailProtocol", "Routing", .product(name: "Yams", package: "Yams")],
                swiftSettings: strict),

        // All socket I/O lives here.
        .target(name: "EventLoop", dependencies: ["CSystemShims"], swiftSettings: strict),
        .target(name: "TLS", dependencies: ["COpenSSL", "COpenSSLShims", "EventLoop", "Routing", "Configuration"],
                swiftSettings: strict),
        .target(name: "Directory",
                dependencies: ["CLDAP", "CLDAPShims", "Routing", "Configuration", "EventLoop",
                               .product(name: "Metrics", package: "swift-metrics")], swiftSettings: strict),
        // RFC 7662 token introspection over libcurl, on queues of its own, off the event loops.
        .target(name: "Introspection", dependencies: ["CCurl", "CCurlShims", "Routing"], swiftSettings: strict),
        .target(name: "Proxy",
                dependencies: ["MailProtocol", "Routing", "Configuration", "EventLoop", "TLS", "Directory", "Introspection",
                               .product(name: "Logging", package: "swift-log"),
                               .product(name: "Metrics", package: "swift-metrics"),
                               .product(name: "Prometheus", package: "swift-prometheus")],
                swiftSettings: strict),
        .executableTarget(name: "mailswitch",
                          dependencies: ["Proxy", "Routing", "Configuration", "Directory", "EventLoop", "TLS",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")],
                          swiftSettings: strict),

        .testTarget(name: "MailProtocolTests", dependencies: ["MailProtocol"], swiftSettings: strict),
        .testTarget(name: "RoutingTests", dependencies: ["MailProtocol", "Routing"], swiftSettings: strict),
        .testTarget(name: "ConfigurationTests", dependencies: ["Configuration", "Routing", "MailProtocol"],
                    swiftSettings: strict),
        .testTarget(name: "EventLoopTests", dependencies: ["EventLoop"], swiftSettings: strict),
        // A python3 HTTP server on loopback plays the authorization server.
        .testTarget(name: "IntrospectionTests", dependencies: ["Introspection", "Routing"], swiftSettings: strict),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "Configuration", "Routing", "MailProtocol", "EventLoop", "Directory"],
                    swiftSettings: strict),
        // The executable is a dependency so that it is built before the tests run it.
        .testTarget(name: "ProxyIntegrationTests",
                    dependencies: ["mailswitch", .product(name: "Yams", package: "Yams")], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
