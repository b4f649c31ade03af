import BerthJSON
import Testing

@testable import BerthWire

/// Checks the declarations against `topology_variants.json`: what oslo.messaging 18.3.1 actually created on
/// RabbitMQ 3.10.8 for each option variant (rabbitmqctl listings).
@Suite("Topology")
struct TopologyTests {
    static let variantNames = [
        "default", "durable", "quorum", "quorum-durable", "quorum-limits", "transient-quorum", "all-quorum", "ha",
        "quorum-and-ha", "stream-fanout", "stream-no-prefetch", "queue-manager", "ttl0", "auto-delete",
        "quorum-auto-delete", "no-mandatory",
    ]

    static func variants() throws -> [JSONValue] {
        try #require(try Fixture.capture("topology_variants.json")["variants"]?.arrayValue)
    }

    static func variant(_ name: String) throws -> JSONObject {
        let found = try variants().first { $0["variant"]?.stringValue == name }
        return try #require(found?.objectValue)
    }

    static func options(from variant: JSONObject) throws -> RabbitOptions {
        var options = RabbitOptions()
        options.controlExchange = try #require(variant["control_exchange"]?.stringValue)
        for (key, value) in try #require(variant["oslo_messaging_rabbit_options"]?.objectValue) {
            switch key {
            case "amqp_durable_queues": options.amqpDurableQueues = value.boolValue!
            case "rabbit_quorum_queue": options.rabbitQuorumQueue = value.boolValue!
            case "rabbit_transient_quorum_queue": options.rabbitTransientQuorumQueue = value.boolValue!
            case "rabbit_ha_queues": options.rabbitHAQueues = value.boolValue!
            case "amqp_auto_delete": options.amqpAutoDelete = value.boolValue!
            case "rabbit_transient_queues_ttl": options.transientQueuesTTL = Int(value.intValue!)
            case "rabbit_quorum_delivery_limit": options.quorumDeliveryLimit = Int(value.intValue!)
            case "rabbit_quorum_max_memory_length": options.quorumMaxMemoryLength = Int(value.intValue!)
            case "rabbit_quorum_max_memory_bytes": options.quorumMaxMemoryBytes = Int(value.intValue!)
            case "rabbit_stream_fanout": options.rabbitStreamFanout = value.boolValue!
            case "rabbit_qos_prefetch_count": options.rabbitQosPrefetchCount = Int(value.intValue!)
            // Names only (the fanout suffix is taken from the capture) or no broker-visible effect.
            case "use_queue_manager", "hostname", "processname", "direct_mandatory_flag": break
            default: Issue.record("unmapped option \(key)")
            }
        }
        return options
    }

    /// Parses rabbitmqctl's `[{"x-expires",1800000},{"x-queue-type","quorum"}]`.
    static func parseArguments(_ text: String) -> [String: AMQPFieldValue] {
        var result: [String: AMQPFieldValue] = [:]
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            let body = rest[rest.index(after: open)..<close]
            if let comma = body.firstIndex(of: ",") {
                let key = body[..<comma].trimmingCharacters(in: "\"")
                let rawValue = body[body.index(after: comma)...]
                if rawValue.hasPrefix("\"") {
                    result[key] = .string(rawValue.trimmingCharacters(in: "\""))
                } else if let number = Int64(rawValue) {
                    result[key] = .int(number)
                }
            }
            rest = rest[rest.index(after: close)...]
        }
        return result
    }

    static func bool(_ value: JSONValue?) -> Bool? {
        switch value?.stringValue {
        case "true": true
        case "false": false
        // rabbitmqctl leaves `exclusive` empty for quorum and stream queues, which cannot be exclusive.
        case "": false
        default: nil
        }
    }

    static func check(_ declared: QueueDeclaration, against listing: [JSONValue], variant: String) throws {
        let row = try #require(
            listing.first { $0["name"]?.stringValue == declared.name }?.objectValue,
            "\(variant): queue \(declared.name) not in the capture")
        #expect(bool(row["durable"]) == declared.durable, "\(variant): \(declared.name) durable")
        #expect(bool(row["auto_delete"]) == declared.autoDelete, "\(variant): \(declared.name) auto_delete")
        #expect(bool(row["exclusive"]) == declared.exclusive, "\(variant): \(declared.name) exclusive")
        let captured = parseArguments(row["arguments"]?.stringValue ?? "")
        let generated = Dictionary(declared.arguments, uniquingKeysWith: { first, _ in first })
        #expect(generated == captured, "\(variant): \(declared.name) arguments")
        #expect(declared.arguments.count == generated.count, "\(variant): \(declared.name) duplicate arguments")
        let type = declared.argument("x-queue-type").flatMap { if case .string(let s) = $0 { s } else { nil } }
        #expect(row["type"]?.stringValue == (type ?? "classic"), "\(variant): \(declared.name) type")
    }

    @Test("the fixture holds exactly the variants tested here")
    func variantList() throws {
        let names = try Self.variants().compactMap { $0["variant"]?.stringValue }
        #expect(names == Self.variantNames)
    }

    @Test("declarations match what oslo created, per option variant", arguments: variantNames)
    func variantMatches(name: String) throws {
        let variant = try Self.variant(name)
        let options = try Self.options(from: variant)
        let start = try #require(variant["server_start"]?.stringValue)
        if start != "ok" {
            // oslo refused to start; Berth must refuse the same options up front.
            #expect(throws: WireError.self) { try options.validate() }
            return
        }
        try options.validate()

        let topic = try #require(variant["rpc_topic"]?.stringValue)
        let server = try #require(variant["server"]?.stringValue)
        let queues = try #require(variant["queues"]?.arrayValue)
        let exchanges = try #require(variant["exchanges"]?.arrayValue)
        let bindings = try #require(variant["bindings"]?.arrayValue)
        let fanoutPrefix = "\(topic)_fanout_"
        let capturedFanout = queues.compactMap { $0["name"]?.stringValue }.first { $0.hasPrefix(fanoutPrefix) }
        let suffix = capturedFanout.map { String($0.dropFirst(fanoutPrefix.count)) } ?? OsloIDs.uuid4Hex()

        let topology = RPCServerTopology(options: options, topic: topic, server: server, fanoutQueueSuffix: suffix)
        #expect(topology.queues.map(\.name).prefix(2) == [topic, "\(topic).\(server)"])

        for exchange in topology.exchanges {
            let row = try #require(
                exchanges.first { $0["name"]?.stringValue == exchange.name }, "\(name): exchange \(exchange.name)")
            #expect(row["type"]?.stringValue == exchange.type.rawValue, "\(name): \(exchange.name) type")
            #expect(Self.bool(row["durable"]) == exchange.durable, "\(name): \(exchange.name) durable")
            #expect(Self.bool(row["auto_delete"]) == exchange.autoDelete, "\(name): \(exchange.name) auto_delete")
            #expect(row["arguments"]?.stringValue == "[]")
        }
        #expect(Set(exchanges.compactMap { $0["name"]?.stringValue }) == Set(topology.exchanges.map(\.name)))

        for queue in topology.queues {
            try Self.check(queue, against: queues, variant: name)
        }
        for binding in topology.bindings {
            let found = bindings.contains {
                $0["source_name"]?.stringValue == binding.exchange
                    && $0["destination_name"]?.stringValue == binding.queue
                    && $0["routing_key"]?.stringValue == binding.routingKey
            }
            #expect(found, "\(name): binding \(binding)")
        }

        // The client's reply queue and the notifier's queue, declared by the same rules.
        let replyName = try #require(variant["reply_queue_name"]?.stringValue)
        try Self.check(options.replyQueue(replyName), against: queues, variant: name)
        let notificationTopic = try #require(variant["notification_topic"]?.stringValue)
        let notification = options.notificationQueue(topic: notificationTopic, priority: .info)
        try Self.check(notification.queue, against: queues, variant: name)
        #expect(
            bindings.contains {
                $0["source_name"]?.stringValue == notification.binding.exchange
                    && $0["destination_name"]?.stringValue == notification.binding.queue
                    && $0["routing_key"]?.stringValue == notification.binding.routingKey
            }, "\(name): notification binding")

        // Nothing oslo declared is missing from Berth's declarations.
        let declared = Set(topology.queues.map(\.name) + [replyName, notification.queue.name])
        #expect(Set(queues.compactMap { $0["name"]?.stringValue }) == declared)
        // Only explicit bindings (not the default exchange's implicit ones) count.
        let explicit = bindings.filter { $0["source_name"]?.stringValue != "" }.count
        #expect(explicit == topology.bindings.count + 1)
    }

    struct Refusal: Sendable, CustomTestStringConvertible {
        var label: String
        var options: RabbitOptions
        var mentions: [String]
        var testDescription: String { label }
    }

    static func make(_ change: (inout RabbitOptions) -> Void) -> RabbitOptions {
        var options = RabbitOptions()
        change(&options)
        return options
    }

    @Test(
        "incompatible options are refused, naming the options",
        arguments: [
            Refusal(
                label: "quorum + HA",
                options: make {
                    $0.rabbitQuorumQueue = true; $0.rabbitHAQueues = true
                },
                mentions: [
                    "Configuration Error: rabbit_quorum_queue and rabbit_ha_queues both enabled, queue type is quorum "
                        + "or HA (mirrored) not both"
                ]),
            Refusal(
                label: "transient quorum + HA",
                options: make {
                    $0.rabbitTransientQuorumQueue = true; $0.rabbitHAQueues = true
                },
                mentions: ["rabbit_transient_quorum_queue", "rabbit_ha_queues"]),
            Refusal(
                label: "quorum + auto delete",
                options: make {
                    $0.rabbitQuorumQueue = true; $0.amqpAutoDelete = true
                },
                mentions: ["rabbit_quorum_queue", "amqp_auto_delete=false", "auto-delete"]),
            Refusal(
                label: "stream without prefetch",
                options: make {
                    $0.rabbitStreamFanout = true; $0.rabbitTransientQuorumQueue = true
                },
                mentions: ["rabbit_qos_prefetch_count"]),
            Refusal(
                label: "stream without transient quorum",
                options: make {
                    $0.rabbitStreamFanout = true; $0.rabbitQosPrefetchCount = 4
                },
                mentions: ["rabbit_transient_quorum_queue"]),
            Refusal(
                label: "negative TTL", options: make { $0.transientQueuesTTL = -1 },
                mentions: ["rabbit_transient_queues_ttl"]),
        ])
    func refusals(_ refusal: Refusal) {
        #expect {
            try refusal.options.validate()
        } throws: { error in
            guard let error = error as? WireError, error.code == .invalidOptions else { return false }
            return refusal.mentions.allSatisfy { error.message.contains($0) }
        }
    }

    @Test("the captured oslo refusals match Berth's wording")
    func capturedRefusalWording() throws {
        for name in ["quorum-and-ha", "stream-no-prefetch"] {
            let variant = try Self.variant(name)
            let start = try #require(variant["server_start"]?.stringValue)
            let osloText = String(start.dropFirst("ERROR RuntimeError: ".count))
            #expect {
                try Self.options(from: variant).validate()
            } throws: { error in
                (error as? WireError)?.message.hasPrefix(osloText) == true
            }
        }
    }

    @Test("defaults: Berth's control exchange and the transient TTL")
    func defaults() {
        let topology = RPCServerTopology(
            options: RabbitOptions(), server: "host-a", fanoutQueueSuffix: "c0fbc519e9c0420badfcec8eea9bd1f5")
        #expect(
            topology.exchanges == [
                ExchangeDeclaration(name: "berth", type: .topic, durable: false, autoDelete: false),
                ExchangeDeclaration(name: "compute_fanout", type: .fanout, durable: false, autoDelete: true),
            ])
        #expect(
            topology.queues.map(\.name) == [
                "compute", "compute.host-a", "compute_fanout_c0fbc519e9c0420badfcec8eea9bd1f5",
            ])
        #expect(topology.fanoutQueue.argument("x-expires") == .int(1_800_000))
        #expect(
            topology.bindings == [
                Binding(exchange: "berth", queue: "compute", routingKey: "compute"),
                Binding(exchange: "berth", queue: "compute.host-a", routingKey: "compute.host-a"),
                Binding(
                    exchange: "compute_fanout", queue: "compute_fanout_c0fbc519e9c0420badfcec8eea9bd1f5",
                    routingKey: "compute"),
            ])
        #expect(topology.deletesFanoutQueueOnShutdown)
        #expect(topology.fanoutConsumerArguments.isEmpty)
        let reply = RabbitOptions().replyQueue()
        #expect(reply.name.hasPrefix("reply_") && reply.name.count == 38)
    }

    @Test("quorum limits also apply to transient quorum queues (oslo passes the same quorum config)")
    func transientQuorumLimits() {
        var options = RabbitOptions()
        options.rabbitTransientQuorumQueue = true
        options.quorumDeliveryLimit = 3
        #expect(
            options.replyQueue("reply_x").arguments.map(\.0) == ["x-queue-type", "x-delivery-limit", "x-expires"])
        #expect(options.topicQueue("compute").arguments.isEmpty)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var text = self
        while text.first == set { text = text.dropFirst() }
        while text.last == set { text = text.dropLast() }
        return String(text)
    }
}
