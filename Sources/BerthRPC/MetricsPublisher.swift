import BerthAMQP
import BerthJSON
import BerthWire
import Foundation
import Logging

/// Publishes `berth.metrics` as oslo `messagingv2` notifications with priority `sample` (routing key
/// `<topic>.sample`, default `metering.sample`) on the control exchange, publisher_id `compute.<host>`,
/// confirmed by the broker.
///
/// It has a connection of its own by default, so a burst of samples never queues behind RPC replies on the
/// worker's connection, and the RPC server's declarations stay as they are. Like oslo's notifier it declares
/// `<topic>.sample`, so samples wait for a metering listener (Ceilometer) that starts later.
public final class MeteringNotifier: Sendable {
    public let client: AMQPClient
    public let options: RabbitOptions
    public let topics: [String]
    private let notifier: Notifier
    private let ownsClient: Bool

    /// The declarations the publisher needs: the control exchange and, per topic, `<topic>.sample` bound to it.
    public static func topology(options: RabbitOptions, topics: [String]) -> AMQPTopology {
        var topology = AMQPTopology()
        topology.exchanges = [options.controlExchangeDeclaration]
        for topic in topics {
            let (queue, binding) = options.notificationQueue(topic: topic, priority: .sample)
            topology.queues.append(queue)
            topology.bindings.append(binding)
        }
        return topology
    }

    /// With a connection of its own, opened by `start()` and closed by `stop()`.
    public init(urls: [AMQPURL], options: RabbitOptions, host: String, topics: [String] = ["metering"], logger: Logger)
    {
        self.client = AMQPClient(
            configuration: .init(
                urls: urls, connectionName: "berth-metrics \(host)",
                topology: Self.topology(options: options, topics: topics)),
            logger: logger)
        self.options = options
        self.topics = topics
        self.notifier = Notifier(client: client, options: options, host: host, topics: topics)
        self.ownsClient = true
    }

    /// Over a connection someone else starts and stops, whose topology includes `topology(options:topics:)`.
    public init(client: AMQPClient, options: RabbitOptions, host: String, topics: [String] = ["metering"]) {
        self.client = client
        self.options = options
        self.topics = topics
        self.notifier = Notifier(client: client, options: options, host: host, topics: topics)
        self.ownsClient = false
    }

    public func start() async throws {
        guard ownsClient else { return }
        do {
            try await client.start()
        } catch let error as AMQPError where error.replyCode == 406 {
            throw AMQPError(
                .channelClosed, PreconditionFailedAdvice.explain(error.message, options: options), replyCode: 406)
        }
    }

    public func publish(_ samples: [MetricsSample]) async throws {
        try await notifier.notify(
            eventType: MetricsBatch.eventType, payload: MetricsBatch.payload(samples), priority: .sample)
    }

    public func stop() async {
        guard ownsClient else { return }
        await client.stop()
    }
}

/// What `berth monitor` declares: its own exclusive, auto-delete queue bound to `<topic>.sample`, so it sees
/// every sample alongside (not instead of) the topic's other listeners, and the queue goes when it exits.
public enum MetricsMonitorTopology {
    public static func make(options: RabbitOptions, topic: String, queue: String, consumerTag: String) -> AMQPTopology {
        var topology = AMQPTopology()
        topology.exchanges = [options.controlExchangeDeclaration]
        topology.queues = [QueueDeclaration(name: queue, durable: false, autoDelete: true, exclusive: true)]
        topology.bindings = [
            Binding(
                exchange: options.controlExchange, queue: queue,
                routingKey: "\(topic).\(OsloNotification.Priority.sample.routingSuffix)")
        ]
        topology.consumers = [(queue, consumerTag, [])]
        // Enough in flight to keep up with many workers, few enough that a slow terminal does not hoard them.
        topology.prefetchCount = 256
        return topology
    }

    public static func queueName() -> String {
        "berth-monitor-" + OsloIDs.uuid4Hex()
    }
}
