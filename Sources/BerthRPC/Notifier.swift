import BerthAMQP
import BerthDigest
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
        topology.exchanges = [options.controlExchangeDeclaration]
        for topic in topics {
            for priority in [OsloNotification.Priority.info, .error] {
                let (queue, binding) = options.notificationQueue(topic: topic, priority: priority)
                topology.queues.append(queue)
                topology.bindings.append(binding)
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
    /// `identity`, when given, fixes the notification's `message_id` and `_unique_id` (see `EventIdentity`).
    public func messages(
        eventType: String, payload: JSONValue, priority: OsloNotification.Priority = .info, context: JSONObject = [:],
        identity: EventIdentity? = nil
    ) -> [(routingKey: String, body: [UInt8])] {
        var notification = OsloNotification(
            publisherID: publisherID, eventType: eventType, priority: priority, payload: payload, context: context)
        if let identity {
            notification.messageID = identity.messageID
            notification.uniqueID = identity.uniqueID
        }
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

/// The ids of an event a request emits, derived from the request and the event's place among its events, so
/// the event emitted again by a redelivered request has the ids of the first: a consumer (and oslo's own
/// duplicate filter on `_unique_id`) can tell the copy from a new event. A copy can only happen when the
/// worker dies between the broker taking the event and the worker recording that (see docs/architecture.md).
public struct EventIdentity: Sendable, Hashable {
    /// RFC 9562 version 8 (custom) UUID text, as oslo's uuid4 `message_id` is written.
    public let messageID: String
    /// 32 hex digits, as oslo's `_unique_id`.
    public let uniqueID: String

    /// `request`: the request's oslo `_unique_id` (or `_msg_id`); `occurrence`: 0 for the first event of this
    /// type the request emits, 1 for the second, ...
    public init(request: String, eventType: String, occurrence: Int) {
        // Bytes, not Characters: two of these per boot, and String indexing cost ~20 µs each in the profile.
        let hex = Array(SHA256Digest.hex(Array("berth-event\n\(request)\n\(eventType)\n\(occurrence)".utf8)).utf8)
        var uuid = [UInt8]()
        uuid.reserveCapacity(36)
        for (index, digit) in hex[0..<32].enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { uuid.append(UInt8(ascii: "-")) }
            switch index {
            case 12: uuid.append(UInt8(ascii: "8"))  // version 8
            case 16: uuid.append(Self.variant[Int(Self.hexValue(digit) & 3)])  // the RFC 9562 variant
            default: uuid.append(digit)
            }
        }
        messageID = String(decoding: uuid, as: UTF8.self)
        uniqueID = String(decoding: hex[32..<64], as: UTF8.self)
    }

    private static let variant = Array("89ab".utf8)

    private static func hexValue(_ digit: UInt8) -> UInt8 {
        digit <= UInt8(ascii: "9") ? digit &- UInt8(ascii: "0") : digit &- UInt8(ascii: "a") &+ 10
    }
}
