import ArgumentParser
import BerthAMQP
import BerthCatalog
import BerthCore
import BerthJSON
import BerthLibvirt
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
        version: BerthVersion.string,
        subcommands: [Worker.self, Call.self, Boot.self, Snapshot.self, Status.self, Images.self, Volumes.self, Notify.self, Monitor.self, Deploy.self, Hosts.self, DeadLetters.self])
}

/// Broker options shared by every command that talks to RabbitMQ.
struct BusOptions: ParsableArguments {
    @Option(
        name: .customLong("transport-url"),
        help: ArgumentHelp(
            "Broker URL, oslo style: rabbit://user:password@host:5672/vhost (amqp:// is accepted too; several hosts: h1:5672,h2:5672, taken in a random order per process, as oslo does). Prefer the BERTH_TRANSPORT_URL environment variable or --transport-url-file, which keep the password out of process listings.",
            valueName: "url"))
    var transportURL: String?

    @Option(help: ArgumentHelp("File holding the transport URL; must not be readable by group or others (0600).", valueName: "path"))
    var transportURLFile: String?

    @Option(help: "oslo's control_exchange.")
    var controlExchange = "berth"

    @Option(help: "RPC topic.")
    var topic = "compute"

    @Flag(help: "oslo amqp_durable_queues: durable control exchange and topic queues.")
    var amqpDurableQueues = false

    @Flag(help: "oslo rabbit_quorum_queue: topic queues are quorum queues.")
    var rabbitQuorumQueue = false

    @Flag(help: "oslo rabbit_transient_quorum_queue: reply and fanout queues are quorum queues.")
    var rabbitTransientQuorumQueue = false

    @Option(help: "oslo rabbit_transient_queues_ttl in seconds (x-expires of reply and fanout queues; 0: none).")
    var transientQueuesTTL = 1800

    @Option(help: "oslo rabbit_quorum_delivery_limit (0: none).")
    var quorumDeliveryLimit = 0

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Log format on stderr: text or json (one object per line). Under systemd each line carries its syslog priority.")
    var logFormat = "text"

    func urls() throws -> [AMQPURL] {
        let text: String
        if let transportURL {
            text = transportURL
        } else if let transportURLFile {
            text = try Self.readSecretFile(transportURLFile)
        } else if let environment = ProcessInfo.processInfo.environment["BERTH_TRANSPORT_URL"], !environment.isEmpty {
            text = environment
        } else {
            text = "amqp://guest:guest@127.0.0.1:5672/"
        }
        do {
            // Shuffled once per process, as oslo.messaging does with a URL's hosts: a pool given the same URL
            // spreads over the brokers instead of piling onto the first. On a failure the next one is tried.
            return try AMQPURL.parseList(text.trimmingCharacters(in: .whitespacesAndNewlines)).shuffled()
        } catch {
            throw ValidationError(error.message)
        }
    }

    func rabbitOptions() throws -> RabbitOptions {
        var options = RabbitOptions()
        options.controlExchange = controlExchange
        options.amqpDurableQueues = amqpDurableQueues
        options.rabbitQuorumQueue = rabbitQuorumQueue
        options.rabbitTransientQuorumQueue = rabbitTransientQuorumQueue
        options.transientQueuesTTL = transientQueuesTTL
        options.quorumDeliveryLimit = quorumDeliveryLimit
        do {
            try options.validate()
        } catch {
            throw ValidationError(error.message)
        }
        return options
    }

    func logger(_ label: String) throws -> Logger {
        guard let format = BerthLogHandler.Format(rawValue: logFormat) else {
            throw ValidationError("--log-format must be text or json")
        }
        Bootstrap.logging(format: format)
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }

    /// Runs `body` with a started RPC client, stopping it afterwards, and maps failures to the exit
    /// statuses every bus command shares: 1 remote failure, 2 timeout, 3 not delivered or no broker.
    func withRPCClient(
        _ label: String, _ body: (OsloRPCClient) async throws(RPCCallError) -> Void
    ) async throws {
        var logger = try logger(label)
        if logLevel == "info" { logger.logLevel = .warning }
        let client = OsloRPCClient(urls: try urls(), options: try rabbitOptions(), topic: topic, logger: logger)
        do {
            try await client.start()
        } catch {
            FileHandle.standardError.write(Data("cannot reach the broker: \(error)\n".utf8))
            throw ExitCode(3)
        }
        do {
            try await body(client)
            await client.stop()
        } catch {
            await client.stop()
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            switch error {
            case .remote: throw ExitCode(1)
            case .timeout: throw ExitCode(2)
            case .notDelivered: throw ExitCode(3)
            }
        }
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

enum Bootstrap {
    /// The log handler every command writes through; the first call's format wins (swift-log bootstraps once).
    static func logging(format: BerthLogHandler.Format = .text) {
        once.withLock { done in
            guard !done else { return }
            done = true
            let journal = BerthLogHandler.stderrIsJournal()
            LoggingSystem.bootstrap { label in BerthLogHandler(label: label, format: format, journal: journal) }
        }
    }

    private static let once = Mutex(false)
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume compute RPCs and run them.",
        discussion: """
            Consumes <topic> (shared by the pool), <topic>.<host> and the fanout queue on the control exchange,
            declared exactly as oslo.messaging declares them for the same options. Stops on SIGTERM after
            finishing (or handing back) the requests in hand.

            Example:
              BERTH_TRANSPORT_URL=amqp://berth:secret@127.0.0.1:5672/ berth worker --host compute-1 --libvirt-uri qemu:///system
            """)

    @OptionGroup var bus: BusOptions

    @Option(help: "Server name: the worker serves <topic>.<host>. Default: this machine's host name.")
    var host: String?

    @Option(help: "Requests worked on at once (also the basic.qos prefetch).")
    var concurrency = 8

    @Option(help: "libvirt connection URI (test:///default for the in-process test driver).")
    var libvirtURI = "qemu:///system"

    @Option(help: "Notification topic for status events (oslo's [oslo_messaging_notifications] topics).")
    var notificationTopic = "notifications"

    @Option(help: "Largest accepted message body in bytes; larger ones are dead-lettered.")
    var maxMessageBytes = 1 << 20

    @Option(help: "Seconds to finish in-flight requests after SIGTERM before handing them back.")
    var gracePeriod = 30.0

    @Flag(help: "Also serve the berth.debug namespace (sleep, fail, record), for tests.")
    var debugRPC = false

    @Flag(help: "With --debug-rpc: berth.debug crash answers {\"fixed\": true} instead of killing the worker (dead-letter replay tests).")
    var debugCrashFixed = false

    @OptionGroup var catalog: CatalogOptions

    @Option(help: "Where the worker keeps its image cache, root disks (a libvirt storage pool), consoles and locks.")
    var stateDir = "/var/lib/berth"

    @Option(
        name: .customLong("node"),
        help: ArgumentHelp(
            "A bare-metal node this worker deploys to: NAME=PATH[:SECTOR_SIZE] (a block device or disk file; repeatable).",
            valueName: "node"))
    var nodes: [String] = []

    @Option(help: "libvirt storage pool (a dir pool under --state-dir/instances) for root disks.")
    var storagePool = "berth"

    @Option(
        help: ArgumentHelp(
            "Queue that keeps dead letters (bound to exchange berth.dlx). A quorum queue with --rabbit-quorum-queue, "
                + "so every worker of a vhost must agree on that option, as for the RPC queues.",
            valueName: "queue"))
    var deadLetterQueue = "berth.dead-letter"

    @Option(
        name: .customLong("max-handoffs"),
        help: "Times a boot sent to the pool that this host cannot run is passed on to other workers before the caller gets HostIncompatible; 0: answer at once.")
    var maxHandOffs = 16

    @Option(help: "Starts a request gets (the worker crashed or the handler timed out) before it is dead-lettered.")
    var maxAttempts = 3

    @Option(help: "Seconds a handler may run before it is abandoned and the request retried; 0: no limit.")
    var handlerTimeout = 3600.0

    @Option(help: "Seconds between metrics polls (berth.metrics samples on <metering-topic>.sample); 0: no poller.")
    var metricsInterval = 10.0

    @Option(help: "Seconds between service reports (what berth hosts shows) on exchange berth.services; 0: none.")
    var reportInterval = 10.0

    @Option(help: "Notification topic for berth.metrics samples (Ceilometer's metering topic).")
    var meteringTopic = "metering"

    @Flag(
        help: ArgumentHelp(
            "Attach a config drive to every VM (Nova's force_config_drive); without it, a VM gets one when its boot "
                + "asks with config_drive: true."))
    var forceConfigDrive = false

    @Option(help: "libvirt domain type: kvm, qemu (TCG) or test. Default: test for test:// URIs, else qemu; say kvm where guests run under KVM.")
    var virtType: String?

    func validate() throws {
        guard (1...256).contains(concurrency) else { throw ValidationError("--concurrency must be 1-256") }
        guard (1024...(64 << 20)).contains(maxMessageBytes) else {
            throw ValidationError("--max-message-bytes must be between 1024 and 67108864")
        }
        guard gracePeriod >= 0, gracePeriod <= 3600 else { throw ValidationError("--grace-period must be 0-3600 s") }
        if let host { try HostName.validate(host) }
        guard !deadLetterQueue.isEmpty, deadLetterQueue.utf8.count <= 255,
            !deadLetterQueue.hasPrefix("amq."), deadLetterQueue.allSatisfy({ !$0.isWhitespace && !$0.isNewline })
        else {
            throw ValidationError("--dead-letter-queue must be 1-255 bytes, no spaces, not starting with 'amq.'")
        }
        guard (0...100).contains(maxHandOffs) else { throw ValidationError("--max-handoffs must be 0-100") }
        guard (1...100).contains(maxAttempts) else { throw ValidationError("--max-attempts must be 1-100") }
        guard handlerTimeout >= 0, handlerTimeout <= 86400 else {
            throw ValidationError("--handler-timeout must be 0 (no limit) to 86400 s")
        }
        guard metricsInterval == 0 || (0.1...3600).contains(metricsInterval) else {
            throw ValidationError("--metrics-interval must be 0 (off) or 0.1-3600 s")
        }
        guard reportInterval == 0 || (0.1...3600).contains(reportInterval) else {
            throw ValidationError("--report-interval must be 0 (off) or 0.1-3600 s")
        }
    }

    func run() async throws {
        let logger = try bus.logger("berth.worker")
        let hostName = host ?? ProcessInfo.processInfo.hostName
        try HostName.validate(hostName)

        var configuration = RPCServerConfiguration(urls: try bus.urls(), host: hostName)
        configuration.topic = bus.topic
        configuration.options = try bus.rabbitOptions()
        configuration.concurrency = concurrency
        configuration.limits = JSONLimits(maxBytes: maxMessageBytes, maxDepth: 32)
        configuration.gracePeriod = .milliseconds(Int(gracePeriod * 1000))
        configuration.notificationTopics = [notificationTopic]
        configuration.maxAttempts = maxAttempts
        configuration.maxHandOffs = maxHandOffs
        configuration.deadLetter = DeadLetterRoute(queue: deadLetterQueue)
        configuration.handlerTimeout = handlerTimeout > 0 ? .milliseconds(Int(handlerTimeout * 1000)) : nil
        configuration.attemptsDirectory = stateDir + "/attempts"
        configuration.reportInterval = reportInterval > 0 ? .milliseconds(Int(reportInterval * 1000)) : nil

        let libvirt = LibvirtHost(uri: libvirtURI, logger: logger)
        do {
            try await libvirt.connect()
        } catch {
            logger.warning("libvirt is not reachable yet; methods that need it will fail until it is", metadata: ["error": "\(error)"])
        }
        configuration.hostCapacity = { try? await libvirt.capacity(domainPrefix: DomainSpec.namePrefix) }
        let domainType: DomainSpec.DomainType
        if let virtType {
            guard let chosen = DomainSpec.DomainType(rawValue: virtType) else {
                throw ValidationError("--virt-type must be one of kvm, qemu, test")
            }
            domainType = chosen
        } else {
            domainType = ComputeConfiguration.defaultDomainType(libvirtURI: libvirtURI)
        }
        var computeConfiguration = ComputeConfiguration(stateDirectory: stateDir, domainType: domainType)
        computeConfiguration.poolName = storagePool
        computeConfiguration.forceConfigDrive = forceConfigDrive
        var compute = ComputeService(
            host: hostName, catalog: try catalog.open(stateDirectory: stateDir), libvirt: libvirt,
            configuration: computeConfiguration)
        let metricsRecorder = MetricsRecorder(host: hostName)
        // Without a poller nobody drains the recorder: boot durations would pile up to its cap.
        compute.metrics = metricsInterval > 0 ? metricsRecorder : nil
        var inventory = NodeInventory()
        for node in nodes {
            do { try inventory.add(node) } catch { throw ValidationError(error.message) }
        }
        let bareMetal = BareMetalService(
            host: hostName, catalog: compute.catalog, inventory: inventory, stateDirectory: stateDir)
        var endpoints = [ComputeEndpoints(compute: compute, bareMetal: bareMetal).endpoint]
        if debugRPC { endpoints.append(DebugEndpoints.endpoint(crashIsFixed: debugCrashFixed)) }

        let server = try RPCServer(configuration: configuration, endpoints: endpoints, logger: logger)
        do {
            try await server.start()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        let systemd = SystemdNotifier()
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        if metricsInterval > 0 {
            var metricsConfiguration = MetricsPollerConfiguration(host: hostName)
            metricsConfiguration.interval = .milliseconds(Int(metricsInterval * 1000))
            let poller = MetricsPoller(
                configuration: metricsConfiguration, source: libvirt,
                publisher: MeteringNotifier(
                    urls: configuration.urls, options: configuration.options, host: hostName, topics: [meteringTopic],
                    logger: logger),
                recorder: metricsRecorder, logger: logger)
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
        // SIGHUP is systemd's reload (ExecReload=): it must not end the worker. What a reload re-reads is
        // logged; the worker keeps serving.
        let reload = ReloadSignal(logger: logger)
        systemd.notify("READY=1", "STATUS=consuming \(configuration.topic) as \(hostName)", "MAINPID=\(getpid())")
        try await group.run()
        withExtendedLifetime(reload) {}
        logger.info("worker exited cleanly")
    }
}

enum HostName {
    /// Host names become queue names and routing keys; keep them to what both accept unescaped.
    static func validate(_ name: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:")
        guard !name.isEmpty, name.count <= 128, name.allSatisfy(allowed.contains) else {
            throw ValidationError("host name '\(name.prefix(64))' must be 1-128 characters of letters, digits, '.', '-', '_', ':'")
        }
    }
}

struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call or cast an RPC method, as an oslo.messaging RPCClient would.",
        discussion: """
            Prints the result as JSON. Exit status: 0 success, 1 remote failure (printed as <class>: <message>
            on stderr), 2 timeout, 3 not delivered.

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

    @Option(help: "Seconds to wait for the result.")
    var timeout = 60.0

    @Option(help: "Call-monitor timeout in seconds (_timeout): the server heartbeats while it works.")
    var callMonitorTimeout: Int?

    @Option(help: "Endpoint namespace.")
    var namespace: String?

    @Option(name: .customLong("api-version"), help: "Requested RPC API version (oslo's target version).")
    var apiVersion = "1.0"

    /// `--version V` here used to print Berth's version, exit 0 and send nothing: a caller who meant the API
    /// version got a silent no-op. Taken so it can be refused with the right name.
    @Option(name: .customLong("version"), help: .hidden)
    var misplacedVersion: String?

    func validate() throws {
        if misplacedVersion != nil {
            throw ValidationError("the RPC API version is --api-version (e.g. --api-version 1.0); berth --version prints Berth's")
        }
    }

    func run() async throws {
        guard case .object(let arguments) = try? JSONCodec.parse(args) else {
            throw ValidationError("--args must be a JSON object, e.g. --args '{\"instance_uuid\": \"...\"}'")
        }
        guard let requestedVersion = RPCVersion(apiVersion) else { throw ValidationError("--api-version must look like 1.0") }
        try await bus.withRPCClient("berth.call") { client throws(RPCCallError) in
            if cast || fanout {
                try await client.cast(
                    method, args: arguments, server: server, fanout: fanout, namespace: namespace, version: requestedVersion)
                return
            }
            let result = try await client.call(
                method, args: arguments, server: server, namespace: namespace, version: requestedVersion,
                timeout: .milliseconds(Int(timeout * 1000)), callMonitorTimeout: callMonitorTimeout)
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

    @OptionGroup var bus: BusOptions

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

    func run() async throws {
        var logger = try bus.logger("berth.notify")
        if bus.logLevel == "info" { logger.logLevel = .warning }
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
            try await client.start()
            let notifier = Notifier(
                client: client, options: options, host: publisherHost ?? ProcessInfo.processInfo.hostName,
                topics: [notificationTopic])
            try await notifier.notify(eventType: eventType, payload: payloadValue, priority: level)
            await client.stop()
        } catch {
            await client.stop()
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(3)
        }
    }
}

struct Boot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send boot_instance over the bus, as a scheduler would, and print the result.",
        discussion: """
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
    @Option(help: "Seconds to wait.") var timeout = 300.0
    @Flag(help: "Attach a config drive (needed for --user-data and --key on a VM).") var configDrive = false
    @Option(help: ArgumentHelp("A file whose content is the guest's user data.", valueName: "path"))
    var userData: String?
    @Option(name: .customLong("key"), help: "A public key as name=key (repeatable), e.g. mykey=\"ssh-ed25519 AAAA...\".")
    var keys: [String] = []

    func run() async throws {
        let parts = flavor.split(separator: ":")
        guard parts.count == 4, let vcpus = Int64(parts[1]), let memory = Int64(parts[2]), let root = Int64(parts[3]) else {
            throw ValidationError("--flavor must be name:vcpus:memory_mb:root_gb, e.g. tiny:1:256:1")
        }
        var meta = JSONObject()
        for (key, value) in try parseProperties(metadata) { meta[key] = .string(value) }
        var instance: JSONObject = [
            "uuid": .string(uuid ?? UUID().uuidString.lowercased()), "name": .string(name), "image_id": .string(image),
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
        try await bus.withRPCClient("berth.boot") { client throws(RPCCallError) in
            let result = try await client.call(
                "boot_instance", args: ["instance": .object(instance)], server: server,
                timeout: .milliseconds(Int(timeout * 1000)))
            print(JSONCodec.serializeString(result))
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List this host's Berth instances from libvirt (JSON lines).")

    @Option(help: "libvirt connection URI.") var libvirtURI = "qemu:///system"
    @OptionGroup var catalog: CatalogOptions
    @Option(help: "The worker's state directory.") var stateDir = "/var/lib/berth"

    func run() async throws {
        let libvirt = LibvirtHost(uri: libvirtURI)
        let compute = ComputeService(
            host: ProcessInfo.processInfo.hostName, catalog: try catalog.open(stateDirectory: stateDir),
            libvirt: libvirt,
            configuration: ComputeConfiguration(
                stateDirectory: stateDir, domainType: ComputeConfiguration.defaultDomainType(libvirtURI: libvirtURI)))
        for instance in try await compute.list() { Output.print(.object(instance)) }
    }
}

struct Snapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send snapshot_instance over the bus and print the new image id.",
        discussion: """
            An image-backed instance becomes a new image inheriting its image's boot properties; a volume-backed
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
    @Option(help: "Seconds to wait.") var timeout = 600.0

    func run() async throws {
        var extra = JSONObject()
        for (key, value) in try parseProperties(properties) { extra[key] = .string(value) }
        try await bus.withRPCClient("berth.snapshot") { client throws(RPCCallError) in
            let result = try await client.call(
                "snapshot_instance",
                args: ["instance_uuid": .string(instance), "image_name": .string(name), "properties": .object(extra)],
                server: server, timeout: .milliseconds(Int(timeout * 1000)))
            print(JSONCodec.serializeString(result))
        }
    }
}
