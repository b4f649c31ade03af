import ArgumentParser
import BerthAMQP
import BerthCatalog
import BerthCompute
import BerthConfig
import BerthCore
import BerthJSON
import BerthLibvirt
import BerthRPC
import BerthWire
import BerthWorker
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

@main
struct Berth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "A message-queue driven compute worker that speaks oslo.messaging's RabbitMQ protocol.",
        discussion: """
            Commands that print records take -f/--format table|json|yaml|value and -c/--column FIELD: a table on a \
            terminal, one JSON object per line otherwise. Errors are one line on stderr: \
            berth: error: <Class>: <what happened and what to do>.

            \(ExitStatus.summary)
            """,
        version: BerthVersion.string,
        subcommands: [Worker.self, Call.self, Boot.self, Snapshot.self, Status.self, Images.self, Volumes.self, Notify.self, Monitor.self, Deploy.self, Hosts.self, DeadLetters.self, Completion.self])

    /// ArgumentParser's own main, except for errors from `run`: those are runtime failures, reported in one
    /// line with their class and exit status (`CommandFailure`), never followed by the usage. A usage error
    /// while parsing has the same prefix and shows the usage; `--help` and `berth --version` stay ArgumentParser's.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            CommandFailure.exitForUsage(error, arguments: arguments)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            CommandFailure(reporting: error)?.exit()
            exit(withError: error)
        }
    }
}

/// `berth completion bash|zsh|fish`: the shell completion script ArgumentParser generates, under a name a user
/// finds in `berth --help` (the generator's own flag is hidden).
struct Completion: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a shell completion script.",
        discussion: """
            Examples:
              berth completion bash > /etc/bash_completion.d/berth
              berth completion zsh > "${fpath[1]}/_berth"
              berth completion fish > ~/.config/fish/completions/berth.fish
            """)

    enum Shell: String, ExpressibleByArgument, CaseIterable { case bash, zsh, fish }

    @Argument(help: "bash, zsh or fish.") var shell: Shell

    func run() {
        print(Berth.completionScript(for: CompletionShell(rawValue: shell.rawValue)!))
    }
}

/// Broker options shared by every command that talks to RabbitMQ. Unset flags fall back to the `BERTH_*`
/// environment variables and then to the defaults of `WorkerOption`; the worker also reads its files. Commands
/// that send no RPC (`notify`, `monitor`, `hosts`, `dead-letters`) take these alone, so they show no RPC topic.
struct BrokerOptions: ParsableArguments {
    @Option(name: .customLong("transport-url"), help: ArgumentHelp(.transportURL, valueName: "url"))
    var transportURL: String?

    @Option(help: ArgumentHelp(.transportURLFile, valueName: "path"))
    var transportURLFile: String?

    @Option(help: ArgumentHelp(.controlExchange, valueName: "name"))
    var controlExchange: String?

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.amqpDurableQueues))
    var amqpDurableQueues: Bool?

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.rabbitQuorumQueue))
    var rabbitQuorumQueue: Bool?

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.rabbitTransientQuorumQueue))
    var rabbitTransientQuorumQueue: Bool?

    @Option(help: ArgumentHelp(.transientQueuesTTL, valueName: "seconds"))
    var transientQueuesTTL: String?

    @Option(help: ArgumentHelp(.quorumDeliveryLimit, valueName: "count"))
    var quorumDeliveryLimit: String?

    @Option(help: ArgumentHelp(.heartbeatTimeoutThreshold, valueName: "seconds"))
    var heartbeatTimeoutThreshold: String?

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.ssl))
    var ssl: Bool?

    @Option(help: ArgumentHelp(.sslCAFile, valueName: "path"))
    var sslCAFile: String?

    @Option(help: ArgumentHelp(.sslCertFile, valueName: "path"))
    var sslCertFile: String?

    @Option(help: ArgumentHelp(.sslKeyFile, valueName: "path"))
    var sslKeyFile: String?

    @Option(help: ArgumentHelp(.logLevel, valueName: "level"))
    var logLevel: String?

    @Option(help: ArgumentHelp(.logFormat, valueName: "format"))
    var logFormat: String?

    /// The options given on the command line, as a configuration layer.
    var commandLine: [WorkerOption: WorkerConfiguration.CommandLineValue] {
        var given: [WorkerOption: WorkerConfiguration.CommandLineValue] = [:]
        given[.transportURL] = transportURL.map { .text($0) }
        given[.transportURLFile] = transportURLFile.map { .text($0) }
        given[.controlExchange] = controlExchange.map { .text($0) }
        given[.amqpDurableQueues] = amqpDurableQueues.map { .boolean($0) }
        given[.rabbitQuorumQueue] = rabbitQuorumQueue.map { .boolean($0) }
        given[.rabbitTransientQuorumQueue] = rabbitTransientQuorumQueue.map { .boolean($0) }
        given[.transientQueuesTTL] = transientQueuesTTL.map { .text($0) }
        given[.quorumDeliveryLimit] = quorumDeliveryLimit.map { .text($0) }
        given[.heartbeatTimeoutThreshold] = heartbeatTimeoutThreshold.map { .text($0) }
        given[.ssl] = ssl.map { .boolean($0) }
        given[.sslCAFile] = sslCAFile.map { .text($0) }
        given[.sslCertFile] = sslCertFile.map { .text($0) }
        given[.sslKeyFile] = sslKeyFile.map { .text($0) }
        given[.logLevel] = logLevel.map { .text($0) }
        given[.logFormat] = logFormat.map { .text($0) }
        return given
    }

    /// The bus settings of a command other than the worker: flags, then the environment variables of these
    /// options (and only these: a worker's BERTH_CONCURRENCY is no business of `berth call`), then defaults.
    func settings(
        adding extra: [WorkerOption: WorkerConfiguration.CommandLineValue] = [:], options: [WorkerOption] = options
    ) throws -> WorkerConfiguration {
        let given = commandLine.merging(extra) { _, new in new }
        let environment = ProcessInfo.processInfo.environment
        let names = Set(options.map(\.environmentVariable))
        do {
            return try WorkerConfiguration(
                environment: environment.filter { names.contains($0.key) }, commandLine: given)
        } catch {
            throw ValidationError(error.message)
        }
    }

    static let options: [WorkerOption] = [
        .transportURL, .transportURLFile, .controlExchange, .amqpDurableQueues, .rabbitQuorumQueue,
        .rabbitTransientQuorumQueue, .transientQueuesTTL, .quorumDeliveryLimit, .heartbeatTimeoutThreshold, .ssl,
        .sslCAFile, .sslCertFile, .sslKeyFile, .logLevel, .logFormat,
    ]

    func urls() throws -> [AMQPURL] { try Self.urls(settings()) }

    func rabbitOptions() throws -> RabbitOptions { try Self.rabbitOptions(settings()) }

    /// The transport URL's brokers, with `[oslo_messaging_rabbit]`'s heartbeat and TLS options for what the
    /// URL does not say.
    static func urls(_ settings: WorkerConfiguration) throws -> [AMQPURL] {
        let text: String
        switch settings.transportURLSource {
        case .text(let url): text = url
        case .file(let path): text = try readSecretFile(path)
        }
        let defaults = AMQPURL.Defaults(
            heartbeat: settings.integer(.heartbeatTimeoutThreshold), tls: settings.boolean(.ssl),
            caCertificatePath: settings.string(.sslCAFile), clientCertificatePath: settings.string(.sslCertFile),
            clientKeyPath: settings.string(.sslKeyFile))
        do {
            // Shuffled once per process, as oslo.messaging does with a URL's hosts: a pool given the same URL
            // spreads over the brokers instead of piling onto the first. On a failure the next one is tried.
            return try AMQPURL.parseList(text.trimmingCharacters(in: .whitespacesAndNewlines), defaults: defaults)
                .shuffled()
        } catch {
            throw ValidationError(error.message)
        }
    }

    static func rabbitOptions(_ settings: WorkerConfiguration) throws -> RabbitOptions {
        var options = RabbitOptions()
        options.controlExchange = settings.string(.controlExchange) ?? options.controlExchange
        options.amqpDurableQueues = settings.boolean(.amqpDurableQueues)
        options.rabbitQuorumQueue = settings.boolean(.rabbitQuorumQueue)
        options.rabbitTransientQuorumQueue = settings.boolean(.rabbitTransientQuorumQueue)
        options.transientQueuesTTL = settings.integer(.transientQueuesTTL)
        options.quorumDeliveryLimit = settings.integer(.quorumDeliveryLimit)
        do {
            try options.validate()
        } catch {
            throw ValidationError(error.message)
        }
        return options
    }

    /// The log handler (bootstrapped once) and a logger at the configured level. A command that uses the bus and
    /// reports its own failure in one line is quieter unless asked (`quiet`): errors only when no level was given
    /// anywhere, since a warning per connection retry would bury that line.
    static func logger(_ label: String, _ settings: WorkerConfiguration, quiet: Bool = false) -> Logger {
        let format = BerthLogHandler.Format(rawValue: settings.string(.logFormat) ?? "") ?? .text
        Bootstrap.logging(format: format)
        var logger = Logger(label: label)
        let level = Logger.Level(rawValue: settings.string(.logLevel) ?? "") ?? .info
        logger.logLevel = quiet && settings[.logLevel]?.source == .defaultValue ? .error : level
        return logger
    }

    /// Reads a credentials file, refusing one that others can read: a password there is as good as public.
    static func readSecretFile(_ path: String) throws -> String {
        do {
            return try TransportURLFile.read(path)
        } catch {
            throw ValidationError(error.message)
        }
    }
}

/// The broker options and the RPC topic, for commands that send or serve RPCs.
@dynamicMemberLookup
struct BusOptions: ParsableArguments {
    @OptionGroup var broker: BrokerOptions

    @Option(help: ArgumentHelp(.topic, valueName: "topic"))
    var topic: String?

    subscript<T>(dynamicMember path: KeyPath<BrokerOptions, T>) -> T { broker[keyPath: path] }

    var commandLine: [WorkerOption: WorkerConfiguration.CommandLineValue] {
        var given = broker.commandLine
        given[.topic] = topic.map { .text($0) }
        return given
    }

    func settings() throws -> WorkerConfiguration {
        try broker.settings(adding: commandLine, options: BrokerOptions.options + [.topic])
    }

    func urls() throws -> [AMQPURL] { try broker.urls() }

    func rabbitOptions() throws -> RabbitOptions { try broker.rabbitOptions() }

    /// Runs `body` with a started RPC client, stopping it afterwards. The broker is retried until
    /// `connectBy`, then the command fails with one line (status 3). Failures of `body` become
    /// `CommandFailure`s with the statuses of `ExitStatus`: 1 remote failure, 2 timeout, 3 not delivered.
    func withRPCClient(
        _ label: String, connectBy deadline: ContinuousClock.Instant = .now + .seconds(30),
        _ body: (OsloRPCClient) async throws(RPCCallError) -> Void
    ) async throws {
        let settings = try settings()
        let logger = BrokerOptions.logger(label, settings, quiet: true)
        let client = OsloRPCClient(
            urls: try BrokerOptions.urls(settings), options: try BrokerOptions.rabbitOptions(settings),
            topic: settings.string(.topic) ?? "compute", logger: logger)
        do {
            try await client.start(connectTimeout: max(deadline - .now, .zero))
        } catch {
            await client.stop()
            throw CommandFailure.brokerUnreachable(error)
        }
        do {
            try await client.serving { () async throws(RPCCallError) in try await body(client) }
        } catch {
            throw CommandFailure(error)
        }
    }

}

enum Bootstrap {
    /// The log handler every command writes through (swift-log bootstraps once), in `format`.
    static func logging(format: BerthLogHandler.Format = .text) {
        LogSettings.shared.format = format
        once.withLock { done in
            guard !done else { return }
            done = true
            let journal = BerthLogHandler.stderrIsJournal()
            LoggingSystem.bootstrap { label in BerthLogHandler(label: label, journal: journal) }
        }
    }

    private static let once = Mutex(false)
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume compute RPCs and run them.",
        discussion: """
            Consumes <topic> (shared by the pool), <topic>.<host> and the fanout queue on the control exchange, \
            declared exactly as oslo.messaging declares them for the same options. Stops on SIGTERM after \
            finishing (or handing back) the requests in hand; SIGHUP reads the configuration files and the \
            Glance token file again.

            Every option can also be set in an oslo.config-style file (--config-file, --config-dir; each \
            option's help names its section and name) and in a BERTH_* environment variable. Precedence: \
            command line, environment, files (a later one wins), default. --print-config shows the result and \
            where each value came from.

            Examples:
              berth worker --config-file /etc/berth/berth.conf --host compute-1
              BERTH_TRANSPORT_URL=rabbit://berth:secret@127.0.0.1:5672/ berth worker --host compute-1
            """)

    @Option(
        help: ArgumentHelp(
            "An INI file of options, read as oslo.config reads it (repeatable; a later file wins).",
            valueName: "path"))
    var configFile: [String] = []

    @Option(
        help: ArgumentHelp(
            "A directory whose *.conf files are read in name order, after the --config-file ones (repeatable).",
            valueName: "path"))
    var configDir: [String] = []

    @Flag(help: "Print the settings (passwords masked) and where each came from, then exit.")
    var printConfig = false

    @Option(help: ArgumentHelp("With --print-config: text or json.", valueName: "format"))
    var printFormat: ConfigurationPrinter.Format = .text

    @OptionGroup var bus: BusOptions

    @Option(help: ArgumentHelp(.host, valueName: "name")) var host: String?
    @Option(help: ArgumentHelp(.concurrency, valueName: "count")) var concurrency: String?
    @Option(help: ArgumentHelp(.libvirtURI, valueName: "uri")) var libvirtURI: String?
    @Option(help: ArgumentHelp(.virtType, valueName: "type")) var virtType: String?
    @Option(name: .customLong("notification-topic"), help: ArgumentHelp(.notificationTopics, valueName: "topic"))
    var notificationTopics: [String] = []
    @Option(help: ArgumentHelp(.maxMessageBytes, valueName: "bytes")) var maxMessageBytes: String?
    @Option(help: ArgumentHelp(.gracePeriod, valueName: "seconds")) var gracePeriod: String?
    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.debugRPC)) var debugRPC: Bool?

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.debugCrashFixed)) var debugCrashFixed: Bool?

    @OptionGroup var catalog: CatalogOptions

    @Option(help: ArgumentHelp(.stateDir, valueName: "path")) var stateDir: String?
    @Option(name: .customLong("node"), help: ArgumentHelp(.nodes, valueName: "node")) var nodes: [String] = []
    @Option(help: ArgumentHelp(.storagePool, valueName: "pool")) var storagePool: String?
    @Option(help: ArgumentHelp(.deadLetterQueue, valueName: "queue")) var deadLetterQueue: String?
    @Option(name: .customLong("max-handoffs"), help: ArgumentHelp(.maxHandOffs, valueName: "count"))
    var maxHandOffs: String?
    @Option(help: ArgumentHelp(.maxAttempts, valueName: "count")) var maxAttempts: String?
    @Option(help: ArgumentHelp(.handlerTimeout, valueName: "seconds")) var handlerTimeout: String?
    @Option(help: ArgumentHelp(.metricsInterval, valueName: "seconds")) var metricsInterval: String?
    @Option(help: ArgumentHelp(.metricsListen, valueName: "host:port")) var metricsListen: String?
    @Option(help: ArgumentHelp(.reportInterval, valueName: "seconds")) var reportInterval: String?
    @Option(help: ArgumentHelp(.meteringTopic, valueName: "topic")) var meteringTopic: String?
    @Flag(inversion: .prefixedNo, help: ArgumentHelp(.forceConfigDrive)) var forceConfigDrive: Bool?

    /// Every option given on the command line, as the top configuration layer.
    var commandLine: [WorkerOption: WorkerConfiguration.CommandLineValue] {
        var given = bus.commandLine.merging(catalog.commandLine) { _, new in new }
        given[.host] = host.map { .text($0) }
        given[.concurrency] = concurrency.map { .text($0) }
        given[.libvirtURI] = libvirtURI.map { .text($0) }
        given[.virtType] = virtType.map { .text($0) }
        given[.notificationTopics] = notificationTopics.isEmpty ? nil : .list(notificationTopics)
        given[.maxMessageBytes] = maxMessageBytes.map { .text($0) }
        given[.gracePeriod] = gracePeriod.map { .text($0) }
        given[.debugRPC] = debugRPC.map { .boolean($0) }
        given[.stateDir] = stateDir.map { .text($0) }
        given[.nodes] = nodes.isEmpty ? nil : .list(nodes)
        given[.storagePool] = storagePool.map { .text($0) }
        given[.deadLetterQueue] = deadLetterQueue.map { .text($0) }
        given[.maxHandOffs] = maxHandOffs.map { .text($0) }
        given[.maxAttempts] = maxAttempts.map { .text($0) }
        given[.handlerTimeout] = handlerTimeout.map { .text($0) }
        given[.metricsInterval] = metricsInterval.map { .text($0) }
        given[.metricsListen] = metricsListen.map { .text($0) }
        given[.reportInterval] = reportInterval.map { .text($0) }
        given[.debugCrashFixed] = debugCrashFixed.map { .boolean($0) }
        given[.meteringTopic] = meteringTopic.map { .text($0) }
        given[.forceConfigDrive] = forceConfigDrive.map { .boolean($0) }
        return given
    }

    func run() async throws {
        let sources = ConfigurationSources(files: configFile, directories: configDir, commandLine: commandLine)
        let settings: WorkerConfiguration
        do {
            settings = try sources.load()
        } catch {
            throw ValidationError(error.message)
        }
        if printConfig {
            ConfigurationPrinter(format: printFormat).print(settings)
            return
        }
        let logger = BrokerOptions.logger("berth.worker", settings)
        let metricsAddress: MetricsListenAddress?
        do {
            metricsAddress = try settings.string(.metricsListen).map(MetricsListenAddress.init(parsing:))
        } catch {
            throw ValidationError("\(settings.origin(of: .metricsListen)): \(error.description)")
        }
        // Before anything makes a metric: swift-metrics binds each one to the backend of the moment.
        let registry = metricsAddress.map { _ in MetricsEndpoint.bootstrapMetrics() }
        let hostName = settings.string(.host) ?? ProcessInfo.processInfo.hostName
        try HostName.validate(hostName)
        let stateDir = settings.string(.stateDir) ?? "/var/lib/berth"
        let libvirtURI = settings.string(.libvirtURI) ?? "qemu:///system"

        var configuration = RPCServerConfiguration(urls: try BrokerOptions.urls(settings), host: hostName)
        configuration.topic = settings.string(.topic) ?? configuration.topic
        configuration.options = try BrokerOptions.rabbitOptions(settings)
        configuration.concurrency = settings.integer(.concurrency)
        configuration.limits = JSONLimits(maxBytes: settings.integer(.maxMessageBytes), maxDepth: 32)
        configuration.gracePeriod = .milliseconds(Int(settings.number(.gracePeriod) * 1000))
        configuration.notificationTopics = settings.list(.notificationTopics)
        configuration.maxAttempts = settings.integer(.maxAttempts)
        configuration.maxHandOffs = settings.integer(.maxHandOffs)
        configuration.deadLetter = DeadLetterRoute(queue: settings.string(.deadLetterQueue) ?? "berth.dead-letter")
        let handlerTimeout = settings.number(.handlerTimeout)
        configuration.handlerTimeout = handlerTimeout > 0 ? .milliseconds(Int(handlerTimeout * 1000)) : nil
        configuration.attemptsDirectory = stateDir + "/attempts"
        let reportInterval = settings.number(.reportInterval)
        configuration.reportInterval = reportInterval > 0 ? .milliseconds(Int(reportInterval * 1000)) : nil

        let libvirt = LibvirtHost(uri: libvirtURI, logger: logger)
        do {
            try await libvirt.connect()
        } catch {
            logger.warning("libvirt is not reachable yet; methods that need it will fail until it is", metadata: ["error": "\(error)"])
        }
        configuration.hostCapacity = {
            (try? await libvirt.capacity(domainPrefix: DomainSpec.namePrefix)).map(ReportedCapacity.init)
        }
        let domainType =
            settings.string(.virtType).flatMap(DomainSpec.DomainType.init(rawValue:))
            ?? ComputeConfiguration.defaultDomainType(libvirtURI: libvirtURI)
        var computeConfiguration = ComputeConfiguration(stateDirectory: stateDir, domainType: domainType)
        computeConfiguration.poolName = settings.string(.storagePool) ?? computeConfiguration.poolName
        computeConfiguration.forceConfigDrive = settings.boolean(.forceConfigDrive)
        let catalogSettings = CatalogSettings(settings)
        let glanceToken = GlanceToken(try catalogSettings.glanceToken())
        var compute = ComputeService(
            host: hostName, catalog: try catalogSettings.open(stateDirectory: stateDir, token: glanceToken),
            libvirt: libvirt, configuration: computeConfiguration)
        let metricsRecorder = MetricsRecorder(host: hostName)
        let metricsInterval = settings.number(.metricsInterval)
        // Without a poller nobody drains the recorder: boot durations would pile up to its cap.
        compute.metrics = metricsInterval > 0 ? metricsRecorder : nil
        var inventory = NodeInventory()
        for node in settings.list(.nodes) {
            do {
                try inventory.add(node)
            } catch {
                throw ValidationError("\(settings.origin(of: .nodes)): \(error.message)")
            }
        }
        let bareMetal = BareMetalService(
            host: hostName, catalog: compute.catalog, inventory: inventory, stateDirectory: stateDir)
        var endpoints = [ComputeEndpoints(compute: compute, bareMetal: bareMetal).endpoint]
        if settings.boolean(.debugRPC) {
            endpoints.append(DebugEndpoints.endpoint(crashIsFixed: settings.boolean(.debugCrashFixed)))
        }

        let server = try RPCServer(configuration: configuration, endpoints: endpoints, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let metricsAddress, let registry {
            // Before connecting, so a bad address fails at once; first in the group, so it is stopped last and
            // /healthz answers 503 throughout the drain.
            let endpoint = try MetricsEndpoint(
                address: metricsAddress, registry: registry, health: { server.health },
                refresh: { server.recordGauges() }, logger: logger)
            do {
                try await endpoint.start()
            } catch {
                logger.critical("cannot start", metadata: ["error": "\(error)"])
                throw ExitCode(1)
            }
            services.append(.init(service: endpoint))
        }
        do {
            try await server.start()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        let systemd = SystemdNotifier()
        services.append(.init(service: server))
        if metricsInterval > 0 {
            var metricsConfiguration = MetricsPollerConfiguration(host: hostName)
            metricsConfiguration.interval = .milliseconds(Int(metricsInterval * 1000))
            let poller = MetricsPoller(
                configuration: metricsConfiguration, source: libvirt,
                publisher: MeteringNotifier(
                    urls: configuration.urls, options: configuration.options, host: hostName,
                    topics: [settings.string(.meteringTopic) ?? "metering"], logger: logger),
                recorder: metricsRecorder, series: registry.map(InstanceSeries.init), logger: logger)
            do {
                try await poller.start()
            } catch {
                logger.critical("cannot start the metrics poller", metadata: ["error": "\(error)"])
                throw ExitCode(1)
            }
            // After the server: the group stops services in reverse order, so polling ends before the drain.
            services.append(.init(service: poller))
        }
        // Last, so the group tells it about the shutdown first: STOPPING=1 goes out as the drain starts.
        services.append(
            .init(
                service: SystemdStatusService(notifier: systemd, logger: logger) { server.inFlightCount },
                successTerminationBehavior: .ignore))
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // SIGHUP is systemd's reload (ExecReload=): it reads the files and the token file again and applies what
        // can change while running; it never ends the worker or touches the requests in hand.
        let reloader = WorkerReload(sources: sources, running: settings, glanceToken: glanceToken, logger: logger)
        let reload = ReloadSignal(logger: logger) { reloader.reload() }
        systemd.notify("READY=1", "STATUS=consuming \(configuration.topic) as \(hostName)", "MAINPID=\(getpid())")
        try await group.run()
        withExtendedLifetime(reload) {}
        logger.info("worker exited cleanly")
    }
}

enum HostName {
    /// Host names become queue names and routing keys; keep them to what both accept unescaped.
    static func validate(_ name: String) throws {
        guard HostNameRule.isValid(name) else {
            throw ValidationError("host name '\(name.prefix(64))' must be \(HostNameRule.expectation)")
        }
    }
}

/// `--timeout` of the commands that wait for the bus: positive, and at most a day.
func validateTimeout(_ seconds: Double) throws {
    guard seconds > 0, seconds <= 86400 else { throw ValidationError("--timeout must be more than 0 and at most 86400 s") }
}

/// What is left of a command's `--timeout` once the broker is connected; never zero, so a call that got the
/// broker at the last moment still goes out and times out the way oslo's would.
func remaining(until deadline: ContinuousClock.Instant) -> Duration {
    max(deadline - .now, .milliseconds(100))
}

struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call or cast an RPC method, as an oslo.messaging RPCClient would.",
        discussion: """
            Prints the result as JSON. A remote failure is printed as berth: error: <class>: <message>. \
            --timeout bounds the whole command, the broker connection included: a broker that is down fails \
            it within that time, with one line and exit status 3.

            \(ExitStatus.summary)

            Examples:
              berth call ping
              berth call describe_host --server compute-1 --timeout 10
              berth call ping --fanout --cast
            """)

    @OptionGroup var bus: BusOptions

    @Argument(help: "Method name.")
    var method: String

    @Option(help: "Keyword arguments as a JSON object.")
    var args = "{}"

    @Option(help: "Target one server (<topic>.<server>).")
    var server: String?

    @Flag(help: "Cast: send without waiting for a result.")
    var cast = false

    @Flag(help: "Cast to every server of the topic (implies --cast).")
    var fanout = false

    @Option(help: "Seconds to wait for the broker and the result.")
    var timeout = 60.0

    @Option(help: "Call-monitor timeout in seconds (_timeout): the server heartbeats while it works.")
    var callMonitorTimeout: Int?

    @Option(help: "Endpoint namespace.")
    var namespace: String?

    @Option(name: .customLong("api-version"), help: "Requested RPC API version (oslo's target version).")
    var apiVersion = "1.0"

    func validate() throws {
        try validateTimeout(timeout)
    }

    func run() async throws {
        guard case .object(let arguments) = try? JSONCodec.parse(args) else {
            throw ValidationError("--args must be a JSON object, e.g. --args '{\"instance_uuid\": \"...\"}'")
        }
        guard let requestedVersion = RPCVersion(apiVersion) else { throw ValidationError("--api-version must look like 1.0") }
        let deadline = ContinuousClock.now + .seconds(timeout)
        try await bus.withRPCClient("berth.call", connectBy: deadline) { client throws(RPCCallError) in
            if cast || fanout {
                try await client.cast(
                    method, args: arguments, server: server, fanout: fanout, namespace: namespace, version: requestedVersion)
                return
            }
            let result = try await client.call(
                method, args: arguments, server: server, namespace: namespace, version: requestedVersion,
                timeout: remaining(until: deadline), callMonitorTimeout: callMonitorTimeout)
            print(JSONCodec.serializeString(result))
        }
    }
}

struct Notify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish one oslo notification (messagingv2), as the worker does for its events.",
        discussion: """
            Example:
              berth notify instance.create.end --payload '{"instance_uuid": "...", "image_id": "..."}'
            """)

    @OptionGroup var bus: BrokerOptions

    @Argument(help: "Event type, e.g. instance.create.end.")
    var eventType: String

    @Option(help: "Payload as JSON.")
    var payload = "{}"

    @Option(help: "Priority: audit, debug, info, warn, error, critical, sample.")
    var priority = "info"

    @Option(help: "Host in publisher_id compute.<host>. Default: this machine's host name.")
    var publisherHost: String?

    @Option(help: "Notification topic.")
    var notificationTopic = "notifications"

    @Option(help: "Seconds to wait for the broker.")
    var timeout = 30.0

    func validate() throws { try validateTimeout(timeout) }

    func run() async throws {
        let logger = BrokerOptions.logger("berth.notify", try bus.settings(), quiet: true)
        guard let payloadValue = try? JSONCodec.parse(payload) else {
            throw ValidationError("--payload must be JSON")
        }
        guard let level = OsloNotification.Priority(wireValue: priority) else {
            throw ValidationError("--priority must be one of audit, debug, info, warn, error, critical, sample")
        }
        let options = try bus.rabbitOptions()
        let client = AMQPClient(
            configuration: .init(
                urls: try bus.urls(), connectionName: "berth-notify",
                topology: Notifier.topology(options: options, topics: [notificationTopic])),
            logger: logger)
        do {
            try await client.start(connectTimeout: .seconds(timeout))
        } catch {
            await client.stop()
            throw CommandFailure.brokerUnreachable(error)
        }
        do {
            let notifier = Notifier(
                client: client, options: options, host: publisherHost ?? ProcessInfo.processInfo.hostName,
                topics: [notificationTopic])
            try await notifier.notify(eventType: eventType, payload: payloadValue, priority: level)
            await client.stop()
        } catch {
            await client.stop()
            throw CommandFailure("NotDelivered", "\(error)", status: ExitStatus.unreachable)
        }
    }
}

struct Boot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send boot_instance over the bus, as a scheduler would, and print the result.",
        discussion: """
            With --wait (the default) the command calls boot_instance and waits up to --timeout for the \
            instance to be ACTIVE, saying on stderr what it waits for and how long it took, then prints the \
            instance. With --no-wait it casts boot_instance and prints the instance's uuid at once; follow \
            the boot with `berth call get_instance --args '{"instance_uuid": "<uuid>"}' --server <host>` or \
            the instance.create.end event.

            Example:
              berth boot --image <id> --flavor tiny:1:256:1 --meta kernel_extra_args=quiet --meta timezone=Europe/Paris
            """)

    @OptionGroup var bus: BusOptions

    @Option(help: "Image id.") var image: String
    @Option(help: "Flavor as name:vcpus:memory_mb:root_gb.") var flavor = "tiny:1:256:1"
    @Option(name: .customLong("meta"), help: "Per-VM metadata key=value (repeatable).") var metadata: [String] = []
    @Option(help: "Instance name.") var name = "berth-instance"
    @Option(help: "Instance uuid (default: a new one). Repeating a uuid repeats the boot.") var uuid: String?
    @Option(help: "Send to one worker (compute.<server>).") var server: String?
    @Option(help: "Seconds to wait for the broker and, with --wait, for the instance to be ACTIVE.")
    var timeout = 300.0
    @Flag(inversion: .prefixedNo, help: "Wait until the instance is ACTIVE (a call), or only send the boot (a cast).")
    var wait = true
    @Flag(help: "Attach a config drive (needed for --user-data and --key on a VM).") var configDrive = false
    @Option(help: ArgumentHelp("A file whose content is the guest's user data.", valueName: "path"))
    var userData: String?
    @Option(name: .customLong("key"), help: "A public key as name=key (repeatable), e.g. mykey=\"ssh-ed25519 AAAA...\".")
    var keys: [String] = []
    @OptionGroup var output: OutputOptions

    func validate() throws { try validateTimeout(timeout) }

    func run() async throws {
        let parts = flavor.split(separator: ":")
        guard parts.count == 4, let vcpus = Int64(parts[1]), let memory = Int64(parts[2]), let root = Int64(parts[3]) else {
            throw ValidationError("--flavor must be name:vcpus:memory_mb:root_gb, e.g. tiny:1:256:1")
        }
        var meta = JSONObject()
        for (key, value) in try parseProperties(metadata) { meta[key] = .string(value) }
        let instanceUUID = uuid ?? UUID().uuidString.lowercased()
        var instance: JSONObject = [
            "uuid": .string(instanceUUID), "name": .string(name), "image_id": .string(image),
            "flavor": [
                "name": .string(String(parts[0])), "vcpus": .int(vcpus), "memory_mb": .int(memory), "root_gb": .int(root),
            ],
            "metadata": .object(meta),
        ]
        if configDrive { instance["config_drive"] = true }
        if let userData {
            guard let data = FileManager.default.contents(atPath: userData) else {
                throw ValidationError("--user-data \(userData): cannot read the file")
            }
            instance["user_data"] = .string(data.base64EncodedString())
        }
        if !keys.isEmpty {
            var publicKeys = JSONObject()
            for (name, key) in try parseProperties(keys) { publicKeys[name] = .string(key) }
            instance["public_keys"] = .object(publicKeys)
        }
        let deadline = ContinuousClock.now + .seconds(timeout)
        let target = server.map { "worker \($0)" } ?? "the \(bus.topic ?? "compute") pool"
        var booted: JSONObject = ["uuid": .string(instanceUUID), "status": "BUILD", "image_id": .string(image)]
        try await bus.withRPCClient("berth.boot", connectBy: deadline) { client throws(RPCCallError) in
            guard wait else {
                try await client.cast("boot_instance", args: ["instance": .object(instance)], server: server)
                FileHandle.standardError.write(Data("berth: boot of instance \(instanceUUID) sent to \(target)\n".utf8))
                return
            }
            booted = try await client.call(
                "boot_instance", args: ["instance": .object(instance)], server: server, until: deadline,
                waiting: "booting instance \(instanceUUID) from image \(image) on \(target); waiting up to "
                    + "\(String(format: "%g", timeout)) s for ACTIVE"
            ) { result in
                "instance \(instanceUUID) is \(result["status"]?.stringValue ?? "?") on \(result["host"]?.stringValue ?? "?")"
            }
        }
        try output.show(booted)
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List this host's Berth instances from libvirt.")

    @Option(help: "libvirt connection URI.") var libvirtURI = "qemu:///system"
    @OptionGroup var catalog: CatalogOptions
    @Option(help: "The worker's state directory.") var stateDir = "/var/lib/berth"
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let libvirt = LibvirtHost(uri: libvirtURI)
        let compute = ComputeService(
            host: ProcessInfo.processInfo.hostName, catalog: try catalog.open(stateDirectory: stateDir),
            libvirt: libvirt,
            configuration: ComputeConfiguration(
                stateDirectory: stateDir, domainType: ComputeConfiguration.defaultDomainType(libvirtURI: libvirtURI)))
        try output.list(try await compute.list(), defaultColumns: ["uuid", "name", "status", "image_id", "domain"])
    }
}

struct Snapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send snapshot_instance over the bus and print the new image id.",
        discussion: """
            An image-backed instance becomes a new image inheriting its image's boot properties; a volume-backed \
            one becomes a volume snapshot and a placeholder image naming it.

            Example:
              berth snapshot <instance uuid> --name my-snapshot --server compute-1
            """)

    @OptionGroup var bus: BusOptions

    @Argument(help: "Instance uuid.") var instance: String
    @Option(help: "Name of the new image.") var name: String
    @Option(name: .customLong("property"), help: "An extra image property key=value (repeatable).")
    var properties: [String] = []
    @Option(help: "The worker that runs the instance (compute.<server>).") var server: String?
    @Option(help: "Seconds to wait for the broker and the new image.") var timeout = 600.0
    @OptionGroup var output: OutputOptions

    func validate() throws { try validateTimeout(timeout) }

    func run() async throws {
        var extra = JSONObject()
        for (key, value) in try parseProperties(properties) { extra[key] = .string(value) }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var snapshot = JSONObject()
        try await bus.withRPCClient("berth.snapshot", connectBy: deadline) { client throws(RPCCallError) in
            snapshot = try await client.call(
                "snapshot_instance",
                args: ["instance_uuid": .string(instance), "image_name": .string(name), "properties": .object(extra)],
                server: server, until: deadline,
                waiting: "snapshotting instance \(instance) to image \(name.debugDescription); waiting up to \(String(format: "%g", timeout)) s"
            ) { result in "image \(result["image_id"]?.stringValue ?? "?") made" }
        }
        try output.show(snapshot)
    }
}
