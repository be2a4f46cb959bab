import ArgumentParser
import Configuration
import Dispatch
import Synchronization
import Directory
import EventLoop
import Foundation
import Logging
import Proxy
import Routing
import TLS

@main
struct MailSwitch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mailswitch",
        abstract: "IMAP/POP3 proxy that routes each login to the store LDAP names for the user.",
        version: MailSwitchVersion.withCommit,
        subcommands: [Serve.self, CheckConfig.self, Route.self, Reload.self, Sessions.self, Kick.self, Hold.self,
                      Release.self, Holds.self, Status.self])
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

    /// The configuration and every TLS context it names: certificate, key and CA files are
    /// read here, so a bad one is reported with its key and path before anything listens.
    func loadWithTLS() throws -> (ServiceConfiguration, TLSContexts) {
        let configuration = try load()
        do {
            return (configuration, try TLSContexts(configuration))
        } catch {
            FileHandle.standardError.write(Data("mailswitch: configuration error: \(config): \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy.")

    @OptionGroup var options: ConfigOption

    @Option(help: "Event loops (default: one per core).")
    var loops: Int?

    @Option(help: ArgumentHelp("How accepted connections reach the loops: handover (one listening socket, one loop accepts for all) or per-loop (a socket per loop, SO_REUSEPORT).",
                               valueName: "handover|per-loop"))
    var accept: AcceptDistribution = .defaultChoice

    @Option(help: "Write the process id here (for `mailswitch reload --pid-file`).")
    var pidFile: String?

    func run() throws {
        let (configuration, tls) = try options.loadWithTLS()
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        // With TZ unset, glibc stats /etc/localtime for every log line's timestamp (two system
        // calls per login at the info level). Naming the same file fixes the zone at start-up;
        // a TZ given by the operator stays. Set before any thread exists: setenv is not
        // thread-safe.
        setenv("TZ", ":/etc/localtime", 0)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "mailswitch")
        if configuration.metricsAddress != nil { ProxyMetrics.bootstrap(configuration) }   // before anything records
        let files = DescriptorLimit.raiseToHard()
        if files < UInt64(configuration.limits.maxConnections) * 2 + 100 {
            logger.warning("open files limit \(files) is below two per connection for limits.max_connections \(configuration.limits.maxConnections): accepts will fail first (raise LimitNOFILE)")
        }
        // The directory's servers going down, coming back and taking over, in the log.
        LDAPServerHealth.shared.observe { event in
            if event.isProblem { logger.warning("\(event)") } else { logger.notice("\(event)") }
        }
        let directory = makeDirectory(configuration.directory)
        tls.warnings.forEach { logger.warning("\($0)") }
        let server: ProxyServer
        do {
            server = try ProxyServer(configuration: configuration, tls: tls, directory: directory, logger: logger,
                                     loopCount: loops ?? ProcessInfo.processInfo.activeProcessorCount, acceptDistribution: accept)
            server.adoptSockets(SocketActivation.inherited(environment: ProcessInfo.processInfo.environment))
            try server.start()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        if let pidFile {
            do {
                try "\(getpid())\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            } catch {
                logger.critical("cannot write \(pidFile): \(error)")
                throw ExitCode(1)
            }
        }
        server.noteConfiguration(path: options.config, loadedAt: Date().timeIntervalSince1970)
        let notifier = ServiceNotifier()
        installTerminationHandlers(server: server, grace: configuration.shutdownGraceSeconds, notifier: notifier, logger: logger)
        installReloadHandler(server: server, configPath: options.config, notifier: notifier, logger: logger)
        startServiceManagerUpdates(server: server, notifier: notifier, logger: logger)
        dispatchMain()
    }
}

/// SIGHUP: read the configuration again and build new TLS contexts. New connections get the
/// new certificates; open sessions, TLS or not, carry on with what they started with. A
/// configuration that does not load changes nothing.
private func installReloadHandler(server: ProxyServer, configPath: String, notifier: ServiceNotifier, logger: Logger) {
    // SIGHUP and the admin socket's `reload` go through one queue, one at a time.
    let queue = DispatchQueue(label: "mailswitch.reload")
    let reload: @Sendable () -> AdminResponse = {
        queue.sync { reloadService(server: server, configPath: configPath, notifier: notifier, logger: logger) }
    }
    server.setReloadHandler(reload)
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "mailswitch.sighup"))
    source.setEventHandler { @Sendable in _ = reload() }
    source.resume()
    signalSources.append(source)
}

/// Reads the file again; a configuration (or certificate) that does not load changes nothing,
/// and the reason is logged and returned.
private func reloadService(server: ProxyServer, configPath: String, notifier: ServiceNotifier, logger: Logger) -> AdminResponse {
    notifier.reloading()
    defer { notifier.ready(status: "\(server.registry.count) sessions") }
    let configuration: ServiceConfiguration
    let tls: TLSContexts
    do {
        configuration = try ConfigLoader(path: configPath).load()
        tls = try TLSContexts(configuration)
    } catch {
        logger.error("reload failed, keeping the running configuration: \(error)")
        return .failure(.failed, "reload refused, the running configuration stays: \(error)")
    }
    tls.warnings.forEach { logger.warning("\($0)") }
    let directory = configuration.directory == server.configuration.directory ? nil : makeDirectory(configuration.directory)
    let notes = server.reload(configuration: configuration, tls: tls, directory: directory)
    server.noteConfiguration(path: configPath, loadedAt: Date().timeIntervalSince1970)
    notes.forEach { logger.warning("reload: \($0)") }
    let summary = "reloaded \(configPath): new connections use it (\(server.registry.count) sessions open carry on)"
    logger.notice("\(summary)")
    return AdminResponse(ok: true, message: ([summary] + notes).joined(separator: "\n"))
}

/// SIGTERM/SIGINT: stop accepting at once (the listeners close, so a load balancer's probe
/// fails over), let open sessions finish for `shutdown_grace`, end the rest, exit 0. A second
/// signal exits at once. Set up outside any actor: a handler closure inferred @MainActor would
/// trap on its first event (see shared/design/ground-truth.md).
private func installTerminationHandlers(server: ProxyServer, grace: Double, notifier: ServiceNotifier, logger: Logger) {
    let queue = DispatchQueue(label: "mailswitch.signals")
    let stopping = ManagedAtomicFlag()
    for signalNumber in [SIGTERM, SIGINT] {
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
        source.setEventHandler { @Sendable in
            guard stopping.setOnce() else {
                logger.notice("signal \(signalNumber) again: exiting now (\(server.registry.count) sessions open)")
                server.closeAdmin()
                exit(0)
            }
            let open = server.registry.count
            logger.notice("signal \(signalNumber): stopped accepting; \(open) session(s) may finish within \(grace)s")
            notifier.stopping(status: "draining \(open) sessions")
            server.drain(grace: grace) { ended in
                logger.notice("stopped (\(ended) session(s) ended by the shutdown)")
                server.closeAdmin()
                exit(0)
            }
        }
        source.resume()
        signalSources.append(source)
    }
}

/// READY=1 once the listeners are open and the directory answered (or is known down), a
/// STATUS line every 10 s, and watchdog pings while every event loop still turns.
private func startServiceManagerUpdates(server: ProxyServer, notifier: ServiceNotifier, logger: Logger) {
    server.probeDirectory { directory in
        logger.info("mailswitch ready (\(directory))")
        notifier.ready(status: "\(server.registry.count) sessions; \(directory)")
    }
    let queue = DispatchQueue(label: "mailswitch.notify")
    let status = DispatchSource.makeTimerSource(queue: queue)
    status.schedule(deadline: .now() + 10, repeating: 10)
    status.setEventHandler { @Sendable in notifier.status("\(server.registry.count) sessions") }
    status.resume()
    timerSources.append(status)
    guard let interval = notifier.watchdogInterval else { return }
    let watchdog = DispatchSource.makeTimerSource(queue: queue)
    watchdog.schedule(deadline: .now() + interval, repeating: interval)
    watchdog.setEventHandler { @Sendable in
        server.loopsRespond(within: interval) { alive in
            if alive {
                notifier.notify("WATCHDOG=1")
            } else {
                logger.critical("an event loop did not answer within \(interval)s: no watchdog ping")
            }
        }
    }
    watchdog.resume()
    timerSources.append(watchdog)
}

/// True the first time only (the second termination signal exits at once).
private final class ManagedAtomicFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func setOnce() -> Bool { !flag.exchange(true, ordering: .relaxed) }
}

nonisolated(unsafe) private var timerSources: [any DispatchSourceTimer] = []
nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config",
                                                    abstract: "Validate the configuration and exit.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let (configuration, tls) = try options.loadWithTLS()
        tls.warnings.forEach { print("warning: \($0)") }
        if let problem = SocketDirectory.problem(for: configuration.admin.socketPath) {
            print("warning: admin.socket \(configuration.admin.socketPath): \(problem): mailswitch will start without the admin socket")
        }
        // The effective settings, defaults applied: what each listener will really do.
        for listener in configuration.listeners {
            print("listener \(listener.service.rawValue) \(listener.address) tls=\(listener.tls.rawValue)"
                  + (listener.tls == .starttls ? " require_tls=\(listener.requireTLS)" : ""))
        }
        if let server = configuration.tls {
            print("tls: \(server.certificates.count) certificate(s), min_version \(server.minVersion.rawValue)")
        }
        let check = configuration.routing.credentialCheck
        if check.isOn {
            print("passwords: checked by an LDAP bind as the user's entry (\(check.connections) connection(s), "
                  + (check.cacheTTL > 0 ? "accepted ones kept \(Int(check.cacheTTL))s)" : "no cache)"))
        }
        for backend in configuration.routing.backends.values.sorted(by: { $0.name < $1.name })
        where backend.loginName != .asTyped || backend.login != .passthrough {
            let name = switch backend.loginName {
            case .asTyped: "as typed"
            case .template(let template): "\"\(template)\""
            case .attribute(let attribute): "the entry's \(attribute)"
            }
            print("backend \(backend.name): login \(backend.login), users named \(name)")
        }
        print("configuration OK: \(configuration.listeners.count) listener(s), "
              + "\(configuration.routing.backends.count) backend(s), directory \(configuration.directory.uris.joined(separator: " "))")
    }
}

struct Route: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where a login would go: the LDAP entry, its attribute, the backend hosts, and whether the answer came from the route cache.",
        discussion: """
            Asks the running service (its route cache, then LDAP); without one, asks LDAP directly. \
            Exit status: 0 routed, 1 refused as unknown user, 2 temporarily unavailable or held.
            """)

    @Argument(help: "The login name, as a client would send it.")
    var user: String

    @OptionGroup var options: ConfigOption

    @Flag(help: "Print the answer as JSON.")
    var json = false

    func run() throws {
        var report: AdminResponse.Route
        do {
            let client = AdminClient(socketPath: try ConfigLoader(path: options.config).adminSocketPath())
            let response = try client.send(AdminRequest(command: .route, user: user))
            guard response.ok, let route = response.route else { fail(.refused, response.error ?? "no answer") }
            report = route
        } catch let failure as AdminClient.Failure where failure.status == .noDaemon {
            report = try askDirectly()
            report.source = "directory (no running service answered)"
        } catch let failure as AdminClient.Failure {
            fail(failure.status, failure.message)
        } catch {
            fail(.refused, "\(error)")
        }
        if json {
            print(String(decoding: AdminCodec.encode(report).dropLast(), as: UTF8.self))
        } else {
            print("user:      \(report.user)")
            print("filter:    \(report.filter)")
            print("source:    \(report.source)\(report.age.map { " (age \(Int($0.rounded()))s)" } ?? "")")
            switch report.result {
            case "found":
                print("entry:     \(report.dn ?? "")")
                print("\(report.attribute): \(report.value ?? "(none)")")
            case "not_found":
                print("entry:     (none)")
            default:
                print("entry:     \(report.result)")
            }
            if let hold = report.hold { print("hold:      \(hold)") }
            print("imap:      \(report.imap)")
            print("pop3:      \(report.pop3)")
        }
        if report.status != 0 { throw ExitCode(Int32(report.status)) }
    }

    private func askDirectly() throws -> AdminResponse.Route {
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
        return RouteReport.make(user: user, answer: Router.Answer(result: result, source: .directory),
                                configuration: configuration, hold: nil)
    }
}

private final class ResultBox: @unchecked Sendable {
    // Written once by the directory's queue before the semaphore is signalled, read after.
    var value: DirectoryResult?
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the configuration, then ask the running service to load it.",
        discussion: """
            Asks through the admin socket and prints the service's answer (listeners opened or closed, \
            a new directory connection, or why it refused); without the socket, sends SIGHUP to --pid / --pid-file. \
            New connections get the new certificates and settings; open sessions carry on. \
            A configuration that does not pass check-config is not sent: the service keeps running as it is.
            """)

    @OptionGroup var options: ConfigOption

    @Option(help: "The running service's process id.")
    var pid: Int32?

    @Option(help: "A file holding the running service's process id (see `serve --pid-file`).")
    var pidFile: String = "/run/mailswitch/mailswitch.pid"

    func run() throws {
        _ = try options.loadWithTLS()
        // Through the admin socket the service answers: what it applied, or why it refused.
        do {
            let client = AdminClient(socketPath: try ConfigLoader(path: options.config).adminSocketPath())
            let response = try client.send(AdminRequest(command: .reload))
            guard response.ok else { fail(.refused, response.error ?? "reload refused") }
            print(response.message ?? "reloaded")
            return
        } catch let failure as AdminClient.Failure where failure.status == .noDaemon {
            // No socket (an older service, or one started with another admin.socket): signal it.
        } catch let failure as AdminClient.Failure {
            fail(failure.status, failure.message)
        }
        let target: Int32
        if let pid {
            target = pid
        } else {
            guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                  let value = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                FileHandle.standardError.write(Data("mailswitch: cannot read a process id from \(pidFile) (use --pid)\n".utf8))
                throw ExitCode(1)
            }
            target = value
        }
        guard kill(target, SIGHUP) == 0 else {
            FileHandle.standardError.write(Data("mailswitch: cannot signal process \(target): \(String(cString: strerror(errno)))\n".utf8))
            throw ExitCode(1)
        }
        print("configuration OK; reload requested from process \(target)")
    }
}

/// The service's directory: LDAP, answered from an in-memory replica kept by the change feed
/// when `directory.replica` is set (LDAP answers until the replica is built).
func makeDirectory(_ configuration: DirectoryConfiguration) -> any Directory {
    let ldap = LDAPDirectory(configuration: configuration)
    guard configuration.replica, case .success(let filter) = ReplicaFilter.parse(configuration.filter) else { return ldap }
    return ReplicaDirectory(fallback: ldap, filter: filter)
}

extension AcceptDistribution: ExpressibleByArgument {}
