import ArgumentParser
import Dispatch
import Directory
import Foundation
import Logging
import Proxy
import Routing

@main
struct MailSwitch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mailswitch",
        abstract: "IMAP/POP3 proxy that routes each login to the store LDAP names for the user.",
        subcommands: [Serve.self, CheckConfig.self, Route.self])
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path to the YAML configuration.")
    var config: String = "/etc/mailswitch/mailswitch.yaml"

    func load() throws -> ServiceConfiguration {
        do {
            return try ConfigLoader(path: config).load()
        } catch {
            FileHandle.standardError.write(Data("mailswitch: configuration error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy.")

    @OptionGroup var options: ConfigOption

    @Option(help: "Event loops (default: one per core).")
    var loops: Int?

    func run() throws {
        let configuration = try options.load()
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "mailswitch")
        let directory = LDAPDirectory(configuration: configuration.directory)
        let server = ProxyServer(configuration: configuration, directory: directory, logger: logger,
                                 loopCount: loops ?? ProcessInfo.processInfo.activeProcessorCount)
        do {
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        installTerminationHandlers(server: server, logger: logger)
        logger.info("mailswitch ready")
        dispatchMain()
    }
}

/// SIGTERM/SIGINT: stop accepting and exit. Set up outside any actor: a handler closure
/// inferred @MainActor would trap on its first event (see shared/design/ground-truth.md).
private func installTerminationHandlers(server: ProxyServer, logger: Logger) {
    let queue = DispatchQueue(label: "mailswitch.signals")
    for signalNumber in [SIGTERM, SIGINT] {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
        source.setEventHandler { @Sendable in
            logger.info("signal \(signalNumber): stopping (\(server.registry.count) sessions open)")
            server.stop()
            exit(0)
        }
        source.resume()
        signalSources.append(source)
    }
}

nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config",
                                                    abstract: "Validate the configuration and exit.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let configuration = try options.load()
        print("configuration OK: \(configuration.listeners.count) listener(s), "
              + "\(configuration.routing.backends.count) backend(s), directory \(configuration.directory.uris.joined(separator: " "))")
    }
}

struct Route: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where a login would go: the LDAP entry, its attribute and the backend hosts.",
        discussion: "Exit status: 0 routed, 1 refused as unknown user, 2 temporarily unavailable.")

    @Argument(help: "The login name, as a client would send it.")
    var user: String

    @OptionGroup var options: ConfigOption

    func run() throws {
        let configuration = try options.load()
        let directory = LDAPDirectory(configuration: configuration.directory)
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        directory.lookup(user) { result in
            box.value = result
            done.signal()
        }
        done.wait()
        let result = box.value ?? .unavailable(reason: "no answer")
        let directoryConfig = configuration.directory
        print("user:      \(user)")
        print("filter:    \(LDAPFilter.expand(directoryConfig.filter, user: user))")
        switch result {
        case .found(let dn, let value):
            print("entry:     \(dn)")
            print("\(directoryConfig.backendAttribute): \(value ?? "(none)")")
        case .notFound:
            print("entry:     (none)")
        case .ambiguous(let count):
            print("entry:     \(count) entries match")
        case .unavailable(let reason):
            print("entry:     unknown: \(reason)")
        }
        var status: Int32 = 0
        for service in MailService.allCases {
            switch configuration.routing.decide(result, service: service) {
            case .backend(let backend, let hosts, let why):
                print("\(service.rawValue):      backend \(backend.name) -> \(hosts.map(\.description).joined(separator: ", ")) (\(why))")
            case .unknownUser(let why):
                print("\(service.rawValue):      refused as a failed login: \(why)")
                status = max(status, 1)
            case .unavailable(let why):
                print("\(service.rawValue):      temporarily unavailable: \(why)")
                status = 2
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}

private final class ResultBox: @unchecked Sendable {
    // Written once by the directory's queue before the semaphore is signalled, read after.
    var value: DirectoryResult?
}
