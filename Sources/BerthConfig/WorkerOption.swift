/// Every setting of `berth worker`, each settable four ways: the command line (`--flag`), the environment
/// (`BERTH_...`), a configuration file (`[section] name`) and the default. Where oslo.messaging, oslo.config
/// or Nova have an option with the same meaning, the file uses its section and name, so a `nova.conf` fragment
/// means the same here; Berth's own options live in `[berth]`, `[glance]` and `[baremetal]`.
///
/// This table is the one description of the options: the command's flags take their help from it, and
/// `--print-config`, docs/operations.md and deploy/berth.conf.sample follow it.
public enum WorkerOption: String, CaseIterable, Sendable {
    case transportURL, transportURLFile, host, controlExchange, topic
    case amqpDurableQueues, rabbitQuorumQueue, rabbitTransientQuorumQueue, transientQueuesTTL, quorumDeliveryLimit
    case heartbeatTimeoutThreshold, ssl, sslCAFile, sslCertFile, sslKeyFile
    case notificationTopics, meteringTopic
    case virtType, libvirtURI, forceConfigDrive, storagePool
    case logLevel, logFormat, concurrency, maxMessageBytes, gracePeriod, debugRPC, stateDir, deadLetterQueue
    case maxHandOffs, maxAttempts, handlerTimeout, metricsInterval, metricsListen, reportInterval, debugCrashFixed
    // New worker options go here, each with its row in `descriptor` (then one line in Worker.commandLine, and
    // regenerate deploy/berth.conf.sample).
    case catalog, glanceTokenFile, glanceCacheDir, volumeCatalog
    case nodes

    /// What the value is, and what it may be.
    public enum Kind: Sendable, Equatable {
        case string(StringRule)
        case integer(ClosedRange<Int>)
        /// Seconds and the like; `zeroMeans` names what 0 turns off when 0 lies outside the range.
        case number(ClosedRange<Double>, zeroMeans: String?)
        case boolean
        case choice([String])
        /// Comma-separated, as oslo.config's ListOpt.
        case list
    }

    public enum StringRule: Sendable, Equatable {
        case nonEmpty, hostName, queueName
    }

    public struct Descriptor: Sendable {
        public var section: String
        public var name: String
        public var flag: String
        public var kind: Kind
        /// nil: no default (the value is worked out at start, or the option is simply off).
        public var defaultValue: ConfigValue?
        /// Read again on SIGHUP; the others take effect at the next start.
        public var reloadable = false
        /// Shown masked by `--print-config` (a transport URL carries passwords).
        public var secret = false
        public var help: String
    }

    /// `BERTH_` and the flag in capitals, dashes as underscores: `--libvirt-uri` is `BERTH_LIBVIRT_URI`.
    public var environmentVariable: String {
        "BERTH_" + descriptor.flag.uppercased().replacingDashes()
    }

    public var section: String { descriptor.section }
    public var name: String { descriptor.name }
    public var flag: String { descriptor.flag }
    public var kind: Kind { descriptor.kind }
    public var help: String { descriptor.help }

    public static let sections = [
        "DEFAULT", "oslo_messaging_rabbit", "oslo_messaging_notifications", "libvirt", "berth", "glance", "baremetal",
    ]

    // swift-format-ignore
    public var descriptor: Descriptor {
        switch self {
        case .transportURL:
            Descriptor(section: "DEFAULT", name: "transport_url", flag: "transport-url", kind: .string(.nonEmpty), defaultValue: nil, secret: true,
                help: "Broker URL, oslo style: rabbit://user:password@host:5672/vhost (amqp:// and amqps:// too; several hosts h1:5672,h2:5672 are taken in a random order per process, as oslo does). Default: rabbit://guest:guest@127.0.0.1:5672/. Keep it out of the command line: a file of mode 0600, or the environment.")
        case .transportURLFile:
            Descriptor(section: "berth", name: "transport_url_file", flag: "transport-url-file", kind: .string(.nonEmpty), defaultValue: nil,
                help: "File holding the transport URL; must not be readable by group or others (0600). transport_url wins when both come from the same place.")
        case .host:
            Descriptor(section: "DEFAULT", name: "host", flag: "host", kind: .string(.hostName), defaultValue: nil,
                help: "Server name: the worker serves <topic>.<host>. Default: this machine's host name.")
        case .controlExchange:
            Descriptor(section: "DEFAULT", name: "control_exchange", flag: "control-exchange", kind: .string(.nonEmpty), defaultValue: .string("berth"),
                help: "oslo's control_exchange: the exchange of the RPC topic and fanout.")
        case .topic:
            Descriptor(section: "berth", name: "topic", flag: "topic", kind: .string(.nonEmpty), defaultValue: .string("compute"),
                help: "RPC topic.")
        case .amqpDurableQueues:
            Descriptor(section: "oslo_messaging_rabbit", name: "amqp_durable_queues", flag: "amqp-durable-queues", kind: .boolean, defaultValue: .boolean(false),
                help: "Durable control exchange and topic queues (oslo's amqp_durable_queues).")
        case .rabbitQuorumQueue:
            Descriptor(section: "oslo_messaging_rabbit", name: "rabbit_quorum_queue", flag: "rabbit-quorum-queue", kind: .boolean, defaultValue: .boolean(false),
                help: "Topic queues are quorum queues (oslo's rabbit_quorum_queue); so is Berth's dead-letter queue.")
        case .rabbitTransientQuorumQueue:
            Descriptor(section: "oslo_messaging_rabbit", name: "rabbit_transient_quorum_queue", flag: "rabbit-transient-quorum-queue", kind: .boolean, defaultValue: .boolean(false),
                help: "Reply and fanout queues are quorum queues (oslo's rabbit_transient_quorum_queue).")
        case .transientQueuesTTL:
            Descriptor(section: "oslo_messaging_rabbit", name: "rabbit_transient_queues_ttl", flag: "transient-queues-ttl", kind: .integer(0...2_147_483), defaultValue: .integer(1800),
                help: "Seconds before unused reply and fanout queues expire (x-expires; 0: never), as oslo's rabbit_transient_queues_ttl.")
        case .quorumDeliveryLimit:
            Descriptor(section: "oslo_messaging_rabbit", name: "rabbit_quorum_delivery_limit", flag: "quorum-delivery-limit", kind: .integer(0...Int(Int32.max)), defaultValue: .integer(0),
                help: "x-delivery-limit of quorum queues (oslo's rabbit_quorum_delivery_limit; 0: none).")
        case .heartbeatTimeoutThreshold:
            Descriptor(section: "oslo_messaging_rabbit", name: "heartbeat_timeout_threshold", flag: "heartbeat-timeout-threshold", kind: .integer(0...3600), defaultValue: .integer(60),
                help: "AMQP heartbeat in seconds (0: off), as oslo's heartbeat_timeout_threshold; a URL's ?heartbeat= wins for its hosts.")
        case .ssl:
            Descriptor(section: "oslo_messaging_rabbit", name: "ssl", flag: "ssl", kind: .boolean, defaultValue: .boolean(false),
                help: "Connect over TLS (oslo's ssl; as amqps:// or ?ssl=1 in the URL). Certificate and host-name checks are always on.")
        case .sslCAFile:
            Descriptor(section: "oslo_messaging_rabbit", name: "ssl_ca_file", flag: "ssl-ca-file", kind: .string(.nonEmpty), defaultValue: nil,
                help: "CA bundle (PEM) that signed the brokers' certificates; needed with TLS, since librabbitmq does not read the system's store. A URL's ?ssl_ca_file= or ?cacert= wins.")
        case .sslCertFile:
            Descriptor(section: "oslo_messaging_rabbit", name: "ssl_cert_file", flag: "ssl-cert-file", kind: .string(.nonEmpty), defaultValue: nil,
                help: "Client certificate (PEM) for brokers that ask for one; with ssl_key_file.")
        case .sslKeyFile:
            Descriptor(section: "oslo_messaging_rabbit", name: "ssl_key_file", flag: "ssl-key-file", kind: .string(.nonEmpty), defaultValue: nil,
                help: "Private key (PEM) of ssl_cert_file.")
        case .notificationTopics:
            Descriptor(section: "oslo_messaging_notifications", name: "topics", flag: "notification-topic", kind: .list, defaultValue: .list(["notifications"]),
                help: "Notification topics for the worker's status events (oslo's [oslo_messaging_notifications] topics; the flag is repeatable).")
        case .meteringTopic:
            Descriptor(section: "berth", name: "metering_topic", flag: "metering-topic", kind: .string(.nonEmpty), defaultValue: .string("metering"),
                help: "Notification topic of berth.metrics samples (Ceilometer's metering topic).")
        case .virtType:
            Descriptor(section: "libvirt", name: "virt_type", flag: "virt-type", kind: .choice(["kvm", "qemu", "test"]), defaultValue: nil,
                help: "libvirt domain type: kvm, qemu (TCG) or test. Default: test for test:// URIs, else qemu, whether or not /dev/kvm exists; set kvm where guests run under KVM (Nova's default is kvm).")
        case .libvirtURI:
            Descriptor(section: "libvirt", name: "connection_uri", flag: "libvirt-uri", kind: .string(.nonEmpty), defaultValue: .string("qemu:///system"),
                help: "libvirt connection URI (test:///default for the in-process test driver).")
        case .storagePool:
            Descriptor(section: "berth", name: "storage_pool", flag: "storage-pool", kind: .string(.nonEmpty), defaultValue: .string("berth"),
                help: "libvirt storage pool (a dir pool under state_dir/instances) for root disks.")
        case .forceConfigDrive:
            Descriptor(section: "DEFAULT", name: "force_config_drive", flag: "force-config-drive", kind: .boolean, defaultValue: .boolean(false),
                help: "Attach a config drive to every VM (Nova's force_config_drive); without it a VM gets one when its boot asks with config_drive: true.")
        case .logLevel:
            Descriptor(section: "berth", name: "log_level", flag: "log-level", kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]), defaultValue: .string("info"), reloadable: true,
                help: "Log level: trace, debug, info, notice, warning, error or critical.")
        case .logFormat:
            Descriptor(section: "berth", name: "log_format", flag: "log-format", kind: .choice(["text", "json"]), defaultValue: .string("text"), reloadable: true,
                help: "Log format on stderr: text, or json (one object per line). Under systemd each line carries its syslog priority.")
        case .concurrency:
            Descriptor(section: "berth", name: "concurrency", flag: "concurrency", kind: .integer(1...256), defaultValue: .integer(8),
                help: "Requests worked on at once (also the basic.qos prefetch).")
        case .maxMessageBytes:
            Descriptor(section: "berth", name: "max_message_bytes", flag: "max-message-bytes", kind: .integer(1024...(64 << 20)), defaultValue: .integer(1 << 20),
                help: "Largest accepted message body in bytes; larger ones are dead-lettered.")
        case .gracePeriod:
            Descriptor(section: "berth", name: "grace_period", flag: "grace-period", kind: .number(0...3600, zeroMeans: nil), defaultValue: .number(30),
                help: "Seconds to finish in-flight requests after SIGTERM before handing them back.")
        case .debugRPC:
            Descriptor(section: "berth", name: "debug_rpc", flag: "debug-rpc", kind: .boolean, defaultValue: .boolean(false),
                help: "Also serve the berth.debug namespace (sleep, fail, record), for tests.")
        case .stateDir:
            Descriptor(section: "berth", name: "state_dir", flag: "state-dir", kind: .string(.nonEmpty), defaultValue: .string("/var/lib/berth"),
                help: "Where the worker keeps its image cache, root disks (a libvirt storage pool), consoles, locks and attempt ledger; one per worker.")
        case .deadLetterQueue:
            Descriptor(section: "berth", name: "dead_letter_queue", flag: "dead-letter-queue", kind: .string(.queueName), defaultValue: .string("berth.dead-letter"),
                help: "Queue that keeps dead letters (bound to exchange berth.dlx); a quorum queue with rabbit_quorum_queue, so every worker of a vhost must agree on that option.")
        case .maxHandOffs:
            Descriptor(section: "berth", name: "max_handoffs", flag: "max-handoffs", kind: .integer(0...100), defaultValue: .integer(16),
                help: "Times a boot sent to the pool that this host cannot run is passed on to other workers before the caller gets HostIncompatible; 0: answer at once.")
        case .maxAttempts:
            Descriptor(section: "berth", name: "max_attempts", flag: "max-attempts", kind: .integer(1...100), defaultValue: .integer(3),
                help: "Starts a request gets (the worker crashed or the handler timed out) before it is dead-lettered.")
        case .handlerTimeout:
            Descriptor(section: "berth", name: "handler_timeout", flag: "handler-timeout", kind: .number(0...86400, zeroMeans: nil), defaultValue: .number(3600),
                help: "Seconds a handler may run before it is abandoned and the request retried; 0: no limit.")
        case .reportInterval:
            Descriptor(section: "berth", name: "report_interval", flag: "report-interval", kind: .number(0.1...3600, zeroMeans: "no reports"), defaultValue: .number(10),
                help: "Seconds between service reports (what berth hosts shows) on exchange berth.services, as Nova's report_interval; 0: none.")
        case .debugCrashFixed:
            Descriptor(section: "berth", name: "debug_crash_fixed", flag: "debug-crash-fixed", kind: .boolean, defaultValue: .boolean(false),
                help: "With debug_rpc: berth.debug crash answers {\"fixed\": true} instead of killing the worker (dead-letter replay tests).")
        case .metricsListen:
            Descriptor(section: "berth", name: "metrics_listen", flag: "metrics-listen", kind: .string(.nonEmpty), defaultValue: nil,
                help: "Serve Prometheus /metrics and /healthz on this address (IPv4 or [IPv6] literal and port, e.g. 127.0.0.1:9180). Off by default; keep it on loopback or a management network.")
        case .metricsInterval:
            Descriptor(section: "berth", name: "metrics_interval", flag: "metrics-interval", kind: .number(0.1...3600, zeroMeans: "no poller"), defaultValue: .number(10),
                help: "Seconds between metrics polls (berth.metrics samples on <metering_topic>.sample); 0: no poller.")
        case .catalog:
            Descriptor(section: "berth", name: "catalog", flag: "catalog", kind: .string(.nonEmpty), defaultValue: .string("local:/var/lib/berth/catalog"),
                help: "Image catalog: local:PATH, or glance:URL (e.g. glance:http://127.0.0.1:9292).")
        case .glanceTokenFile:
            Descriptor(section: "glance", name: "token_file", flag: "glance-token-file", kind: .string(.nonEmpty), defaultValue: nil, reloadable: true,
                help: "With glance:URL: a file (mode 0600) holding the token sent as X-Auth-Token, read again on SIGHUP; without it BERTH_GLANCE_TOKEN, then OS_AUTH_TOKEN, from the environment.")
        case .glanceCacheDir:
            Descriptor(section: "glance", name: "cache_dir", flag: "glance-cache-dir", kind: .string(.nonEmpty), defaultValue: nil,
                help: "With glance:URL: this host's download cache of image data. Default: cache/glance under state_dir.")
        case .volumeCatalog:
            Descriptor(section: "berth", name: "volume_catalog", flag: "volume-catalog", kind: .string(.nonEmpty), defaultValue: .string("/var/lib/berth/catalog"),
                help: "With glance:URL: the local catalog directory that holds volumes and volume snapshots.")
        case .nodes:
            Descriptor(section: "baremetal", name: "nodes", flag: "node", kind: .list, defaultValue: .list([]),
                help: "Bare-metal nodes this worker deploys to, each NAME=PATH[:SECTOR_SIZE] (a block device or disk file; the flag is repeatable).")
        }
    }

    /// The option a file names, by section (oslo compares section names other than DEFAULT case-insensitively)
    /// and name.
    public static func named(section: String, name: String) -> WorkerOption? {
        let wanted = section == "DEFAULT" ? section : section.lowercased()
        return allCases.first { $0.section == wanted && $0.name == name }
    }
}

extension String {
    fileprivate func replacingDashes() -> String {
        String(map { $0 == "-" ? "_" : $0 })
    }
}
