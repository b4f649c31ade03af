import BerthAMQP
import BerthJSON
import BerthWire
import Logging

/// Publishes oslo `messagingv2` notifications: the envelope, `publisher_id` `compute.<host>`, routing key
/// `<topic>.<priority>` on the control exchange. Like oslo's notifier it declares the notification queue
/// itself, so events wait for a listener that starts later.
public struct Notifier: Sendable {
    public let client: AMQPClient
    public let options: RabbitOptions
    public let publisherID: String
    public let topics: [String]

    /// The declarations a notifier needs, to include in its client's topology.
    public static func topology(options: RabbitOptions, topics: [String]) -> AMQPTopology {
        var topology = AMQPTopology()
        topology.exchanges = [ExchangeSpec(options.controlExchangeDeclaration)]
        for topic in topics {
            for priority in [OsloNotification.Priority.info, .error] {
                let (queue, binding) = options.notificationQueue(topic: topic, priority: priority)
                topology.queues.append(QueueSpec(queue))
                topology.bindings.append(BindingSpec(binding))
            }
        }
        return topology
    }

    public init(client: AMQPClient, options: RabbitOptions, host: String, topics: [String] = ["notifications"]) {
        self.client = client
        self.options = options
        self.publisherID = "compute.\(host)"
        self.topics = topics
    }

    /// The messages one event becomes: one per topic, each with its routing key and enveloped body.
    public func messages(
        eventType: String, payload: JSONValue, priority: OsloNotification.Priority = .info, context: JSONObject = [:]
    ) -> [(routingKey: String, body: [UInt8])] {
        let notification = OsloNotification(
            publisherID: publisherID, eventType: eventType, priority: priority, payload: payload, context: context)
        let body = OsloEnvelope.wrap(notification.encode())
        return topics.map { (notification.routingKey(topic: $0), body) }
    }

    /// Publishes to every topic and waits for the broker's confirms.
    public func notify(
        eventType: String, payload: JSONValue, priority: OsloNotification.Priority = .info, context: JSONObject = [:]
    ) async throws {
        for message in messages(eventType: eventType, payload: payload, priority: priority, context: context) {
            let outcome = try await client.publish(
                exchange: options.controlExchange, routingKey: message.routingKey, body: message.body)
            guard outcome == .confirmed else {
                throw AMQPError(.library, "the broker did not accept notification \(eventType) (\(outcome))")
            }
        }
    }
}
