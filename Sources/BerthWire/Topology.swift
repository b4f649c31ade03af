// The declarations are BerthAMQPModel's, the same types the AMQP client declares.
@_exported import BerthAMQPModel

/// The `[oslo_messaging_rabbit]` options that change what is declared on the broker. Berth must declare its
/// queues and exchanges with exactly the flags and arguments oslo would use for the same options, or RabbitMQ
/// closes the channel with 406 PRECONDITION_FAILED.
public struct RabbitOptions: Sendable, Hashable {
    /// Berth's default (the `control_exchange` option; oslo's own default is "openstack").
    public var controlExchange = "berth"
    public var amqpDurableQueues = false
    public var rabbitQuorumQueue = false
    public var rabbitTransientQuorumQueue = false
    public var rabbitHAQueues = false
    /// Seconds; 0 means no `x-expires` on the reply and fanout queues.
    public var transientQueuesTTL = 1800
    public var amqpAutoDelete = false
    public var quorumDeliveryLimit = 0
    public var quorumMaxMemoryLength = 0
    public var quorumMaxMemoryBytes = 0
    /// One shared stream queue `<topic>_fanout` instead of a queue per server; needs transient quorum queues
    /// and a prefetch count, and consumers must pass `x-stream-offset`.
    public var rabbitStreamFanout = false
    /// The consumer's `basic.qos` prefetch; only checked here because stream fanout requires it.
    public var rabbitQosPrefetchCount = 0

    public init() {}

    /// Refuses the combinations oslo refuses at startup (or that RabbitMQ rejects on the first declare), with
    /// oslo's wording where it has one and the options to change.
    public func validate() throws(WireError) {
        if rabbitQuorumQueue && rabbitHAQueues {
            throw WireError(
                .invalidOptions,
                "Configuration Error: rabbit_quorum_queue and rabbit_ha_queues both enabled, queue type is quorum "
                    + "or HA (mirrored) not both; set rabbit_ha_queues=false (quorum queues are replicated already)")
        }
        if rabbitTransientQuorumQueue && rabbitHAQueues {
            throw WireError(
                .invalidOptions,
                "Configuration Error: rabbit_transient_quorum_queue and rabbit_ha_queues both enabled, queue type "
                    + "is quorum or HA (mirrored) not both; set one of them to false")
        }
        if rabbitQuorumQueue && amqpAutoDelete {
            throw WireError(
                .invalidOptions,
                "rabbit_quorum_queue and amqp_auto_delete both enabled: RabbitMQ refuses auto-delete quorum queues "
                    + "(406 invalid property 'auto-delete'); set amqp_auto_delete=false")
        }
        if rabbitStreamFanout && rabbitQosPrefetchCount <= 0 {
            throw WireError(
                .invalidOptions,
                "Configuration Error: rabbit_stream_fanout need rabbit_qos_prefetch_count to be set to a value "
                    + "greater than 0.")
        }
        if rabbitStreamFanout && !rabbitTransientQuorumQueue {
            throw WireError(
                .invalidOptions,
                "Configuration Error: rabbit_stream_fanout need rabbit_transient_quorum_queue to be set to true.")
        }
        for (name, value) in [
            ("rabbit_transient_queues_ttl", transientQueuesTTL), ("rabbit_quorum_delivery_limit", quorumDeliveryLimit),
            ("rabbit_quorum_max_memory_length", quorumMaxMemoryLength),
            ("rabbit_quorum_max_memory_bytes", quorumMaxMemoryBytes),
        ] where value < 0 {
            throw WireError(.invalidOptions, "\(name) is \(value); it must be 0 (off) or positive")
        }
        if controlExchange.isEmpty || controlExchange.utf8.count > 255 {
            throw WireError(.invalidOptions, "control_exchange must be 1 to 255 bytes long")
        }
    }

    /// oslo's `Connection.durable`: quorum queues are always durable, so the option is forced with them.
    public var topicQueuesDurable: Bool { amqpDurableQueues || rabbitQuorumQueue }
}

// The declarations oslo makes, one function per kind of object, so server, client and notifier agree.
extension RabbitOptions {
    /// The control exchange, declared by servers, clients before publishing, notifiers and listeners.
    public var controlExchangeDeclaration: ExchangeDeclaration {
        ExchangeDeclaration(
            name: controlExchange, type: .topic, durable: topicQueuesDurable, autoDelete: amqpAutoDelete)
    }

    /// `<topic>_fanout`: always auto-delete, durable only with transient quorum (or stream) queues.
    public func fanoutExchange(topic: String) -> ExchangeDeclaration {
        ExchangeDeclaration(
            name: "\(topic)_fanout", type: .fanout, durable: rabbitTransientQuorumQueue || rabbitStreamFanout,
            autoDelete: true)
    }

    /// A topic queue: `<topic>`, `<topic>.<server>`, or a notification queue `<topic>.<priority>`.
    public func topicQueue(_ name: String) -> QueueDeclaration {
        QueueDeclaration(
            name: name, durable: topicQueuesDurable, autoDelete: amqpAutoDelete,
            arguments: queueArguments(quorum: rabbitQuorumQueue, ttlSeconds: 0))
    }

    /// A transient queue (reply or per-server fanout): never auto-delete; expires after the TTL instead.
    public func transientQueue(_ name: String) -> QueueDeclaration {
        QueueDeclaration(
            name: name, durable: rabbitTransientQuorumQueue, autoDelete: false,
            arguments: queueArguments(quorum: rabbitTransientQuorumQueue, ttlSeconds: transientQueuesTTL))
    }

    /// A client's reply queue, `reply_<uuid4hex>`. It has no explicit binding: replies use the default
    /// exchange with the queue name as routing key.
    public func replyQueue(_ name: String = OsloIDs.replyQueueName()) -> QueueDeclaration {
        transientQueue(name)
    }

    /// The queue a notifier declares on first publish (and a pool-less listener consumes), with its binding.
    public func notificationQueue(
        topic: String, priority: OsloNotification.Priority
    ) -> (queue: QueueDeclaration, binding: Binding) {
        let name = "\(topic).\(priority.routingSuffix)"
        return (topicQueue(name), Binding(exchange: controlExchange, queue: name, routingKey: name))
    }

    /// oslo's `_get_queue_arguments`, in its insertion order.
    func queueArguments(quorum: Bool, ttlSeconds: Int) -> AMQPTable {
        var arguments: AMQPTable = []
        if rabbitHAQueues { arguments.append(("x-ha-policy", .string("all"))) }
        if quorum {
            arguments.append(("x-queue-type", .string("quorum")))
            if quorumDeliveryLimit != 0 { arguments.append(("x-delivery-limit", .int(Int64(quorumDeliveryLimit)))) }
            if quorumMaxMemoryLength != 0 {
                arguments.append(("x-max-in-memory-length", .int(Int64(quorumMaxMemoryLength))))
            }
            if quorumMaxMemoryBytes != 0 {
                arguments.append(("x-max-in-memory-bytes", .int(Int64(quorumMaxMemoryBytes))))
            }
        }
        if ttlSeconds > 0 { arguments.append(("x-expires", .int(Int64(ttlSeconds) * 1000))) }
        return arguments
    }
}

/// Everything one RPC server declares and consumes, in oslo's order: `<topic>`, `<topic>.<server>`, then the
/// fanout exchange and its queue.
public struct RPCServerTopology: Sendable, Equatable {
    public var options: RabbitOptions
    public var topic: String
    public var server: String

    public var exchanges: [ExchangeDeclaration]
    /// Topic queue, server queue, fanout queue; consume all three.
    public var queues: [QueueDeclaration]
    public var bindings: [Binding]

    public var topicQueue: QueueDeclaration { queues[0] }
    public var serverQueue: QueueDeclaration { queues[1] }
    public var fanoutQueue: QueueDeclaration { queues[2] }

    /// oslo deletes its per-server fanout queue on a clean shutdown; the shared stream queue stays.
    public var deletesFanoutQueueOnShutdown: Bool { !options.rabbitStreamFanout }

    /// With stream fanout the consumer must pass `x-stream-offset` (oslo starts at "last").
    public var fanoutConsumerArguments: AMQPTable {
        options.rabbitStreamFanout ? [("x-stream-offset", .string("last"))] : []
    }

    /// - Parameter fanoutQueueSuffix: uuid4 hex, new for each server process (oslo's default naming).
    public init(
        options: RabbitOptions, topic: String = "compute", server: String,
        fanoutQueueSuffix: String = OsloIDs.uuid4Hex()
    ) {
        self.options = options
        self.topic = topic
        self.server = server
        let control = options.controlExchangeDeclaration
        let fanout = options.fanoutExchange(topic: topic)
        exchanges = [control, fanout]

        let serverQueueName = "\(topic).\(server)"
        let fanoutQueue: QueueDeclaration
        if options.rabbitStreamFanout {
            var arguments: AMQPTable = [("x-queue-type", .string("stream"))]
            if options.transientQueuesTTL > 0 {
                arguments.append(("x-max-age", .string("\(options.transientQueuesTTL)s")))
            }
            fanoutQueue = QueueDeclaration(
                name: "\(topic)_fanout", durable: true, autoDelete: false, arguments: arguments)
        } else {
            fanoutQueue = options.transientQueue("\(topic)_fanout_\(fanoutQueueSuffix)")
        }
        queues = [options.topicQueue(topic), options.topicQueue(serverQueueName), fanoutQueue]
        bindings = [
            Binding(exchange: control.name, queue: topic, routingKey: topic),
            Binding(exchange: control.name, queue: serverQueueName, routingKey: serverQueueName),
            Binding(exchange: fanout.name, queue: fanoutQueue.name, routingKey: topic),
        ]
    }

    public static func == (lhs: RPCServerTopology, rhs: RPCServerTopology) -> Bool {
        lhs.options == rhs.options && lhs.topic == rhs.topic && lhs.server == rhs.server
            && lhs.exchanges == rhs.exchanges && lhs.queues == rhs.queues && lhs.bindings == rhs.bindings
    }
}
