import BerthAMQP
import BerthJSON
import BerthWire
import Foundation
import Logging

/// Reads the recent service reports from the `berth.services` stream, for `berth hosts`.
///
/// Where the stream ends is found with a marker: once its consumer is attached the reader publishes a message
/// of its own (routing key `marker.<id>`, empty body) and reads until that message comes back. Every report
/// published before it is then read, whatever the broker's batching; a quiet period would be a guess.
public struct ServiceReportReader: Sendable {
    public enum Failure: Error, CustomStringConvertible {
        case noBroker(AMQPError)
        case markerLost(Duration)

        public var description: String {
            switch self {
            case .noBroker(let error): "cannot read the service reports: \(error)"
            case .markerLost(let timeout):
                "the broker did not deliver this reader's marker within \(timeout): the stream berth.services may be unavailable (a cluster without a majority?)"
            }
        }
    }

    public struct Result: Sendable {
        public var roster = ServiceRoster()
        /// Messages in the stream that are not valid reports (logged, then skipped).
        public var skipped = 0
    }

    /// A report is well under a kilobyte; anything this large is not one and is dropped unread.
    static let maxReportBytes = 64 << 10

    public let urls: [AMQPURL]
    public let logger: Logger
    /// How long to wait for the marker before giving up.
    public var timeout: Duration = .seconds(15)
    /// How long to try to reach a broker before giving up (`berth hosts --timeout` when it is shorter).
    public var connectTimeout: Duration = .seconds(30)

    public init(urls: [AMQPURL], logger: Logger) {
        self.urls = urls
        self.logger = logger
    }

    /// Reads the reports of the last `window` (whole seconds, at least 1).
    public func read(window: Duration) async throws(Failure) -> Result {
        let consumerTag = "berth-hosts-" + OsloIDs.uuid4Hex()
        var topology = AMQPTopology()
        ServiceReportTopology.add(to: &topology)
        let seconds = max(1, window.components.seconds)
        topology.consumers = [
            (ServiceReportTopology.stream, consumerTag, [(key: "x-stream-offset", value: .string("\(seconds)s"))])
        ]
        // A stream consumer needs a prefetch; acks give the credit back.
        topology.prefetchCount = 1000
        var configuration = AMQPClient.Configuration(urls: urls, connectionName: "berth-hosts", topology: topology)
        configuration.bodyLimit = .dropping(over: Self.maxReportBytes)
        let client = AMQPClient(configuration: configuration, logger: logger)
        let marker = OsloIDs.uuid4Hex()
        do {
            try await client.start(connectTimeout: connectTimeout)
            var properties = AMQPProperties.oslo()
            properties.messageID = marker
            _ = try await client.publish(
                exchange: ServiceReportTopology.exchange, routingKey: "marker.\(marker)", body: [],
                properties: properties)
        } catch {
            await client.stop()
            throw .noBroker((error as? AMQPError) ?? AMQPError(.connect, "\(error)"))
        }
        let timeout = self.timeout
        let watchdog = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { await client.stop() }
        }
        var result = Result()
        var sawMarker = false
        for await delivery in client.deliveries {
            client.ack(delivery)
            if delivery.properties.messageID == marker, delivery.routingKey == "marker.\(marker)" {
                sawMarker = true
                break
            }
            if delivery.routingKey.hasPrefix("marker.") { continue }  // another reader's
            add(delivery, to: &result)
        }
        watchdog.cancel()
        await client.stop()
        guard sawMarker else { throw .markerLost(timeout) }
        return result
    }

    private func add(_ delivery: AMQPDelivery, to result: inout Result) {
        do throws(WireError) {
            guard delivery.oversized == nil else {
                throw WireError(.tooLarge, "a message over \(Self.maxReportBytes) bytes is not a service report")
            }
            let notification = try OsloNotification.decode(
                OsloEnvelope.unwrap(delivery.body, limits: JSONLimits(maxBytes: Self.maxReportBytes, maxDepth: 8)))
            result.roster.add(try ServiceReport.decode(notification), sentAt: notification.timestamp)
        } catch {
            result.skipped += 1
            logger.warning(
                "skipping a message that is not a service report",
                metadata: ["routing_key": "\(delivery.routingKey.prefix(128))", "error": "\(error.message)"])
        }
    }
}
