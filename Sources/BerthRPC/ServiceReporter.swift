import BerthAMQP
import BerthWire
import Foundation
import Logging

/// Where service reports go: the topic exchange `berth.services` (routing key `<topic>.<host>`) into the
/// stream `berth.services`.
///
/// A stream, because a reader must see workers that have stopped talking: a queue of its own would only show
/// the workers that report while it listens, and a SIGKILLed worker would simply be missing instead of down.
/// A stream keeps every report for `maxAge` and each reader starts from an offset of its choosing without
/// taking anything away from the others, so `berth hosts` reads the last few minutes at once, from any node of
/// a cluster (a stream is replicated like a quorum queue). Every declarer (workers and `berth hosts`) declares
/// it with the same arguments, as RabbitMQ requires.
public enum ServiceReportTopology {
    public static let exchange = "berth.services"
    public static let stream = "berth.services"
    /// How long reports are kept (RabbitMQ drops whole segments older than this).
    public static let maxAge = "1h"
    /// Small segments, so the retention above is kept closely instead of in 500 MB steps.
    public static let segmentBytes: Int64 = 4 << 20

    public static var exchangeDeclaration: ExchangeDeclaration {
        ExchangeDeclaration(name: exchange, type: .topic, durable: true, autoDelete: false)
    }

    public static var streamDeclaration: QueueDeclaration {
        QueueDeclaration(
            name: stream, durable: true, autoDelete: false,
            arguments: [
                (key: "x-queue-type", value: .string("stream")), (key: "x-max-age", value: .string(maxAge)),
                (key: "x-stream-max-segment-size-bytes", value: .int(segmentBytes)),
            ])
    }

    public static var binding: Binding { Binding(exchange: exchange, queue: stream, routingKey: "#") }

    /// The declarations, to add to a client's topology.
    public static func add(to topology: inout AMQPTopology) {
        topology.exchanges.append(exchangeDeclaration)
        topology.queues.append(streamDeclaration)
        topology.bindings.append(binding)
    }
}

/// The host's size and what is left of it, as a service report gives them. The worker reads them from libvirt;
/// the RPC side only carries them.
public struct ReportedCapacity: Sendable, Equatable {
    public var total: ServiceReport.Resources
    public var free: ServiceReport.Resources
    /// Berth's domains on the host.
    public var instances: Int

    public init(total: ServiceReport.Resources, free: ServiceReport.Resources, instances: Int) {
        self.total = total
        self.free = free
        self.instances = instances
    }
}

/// Builds and publishes one worker's service reports over the RPC server's connection, so a worker whose RPC
/// connection is gone stops reporting and shows down, as it should.
struct ServiceReporter: Sendable {
    let client: AMQPClient
    let configuration: RPCServerConfiguration
    let logger: Logger
    let instanceID = OsloIDs.uuid4Hex()
    let started = ContinuousClock.now

    /// Publishes a report in `state`; false when the broker did not confirm it (the next one will try again).
    @discardableResult
    func report(_ state: ServiceReport.State, inFlight: Int) async -> Bool {
        let capacity = await configuration.hostCapacity()
        let report = ServiceReport(
            host: configuration.host, topic: configuration.topic,
            controlExchange: configuration.options.controlExchange, state: state, version: BerthVersion.string,
            instanceID: instanceID, pid: Int(getpid()),
            uptimeSeconds: Double((ContinuousClock.now - started).components.seconds),
            reportIntervalSeconds: configuration.reportInterval.map(Self.seconds) ?? 0,
            broker: client.connectedBroker, concurrency: configuration.concurrency, inFlight: inFlight,
            capacity: capacity?.total, free: capacity?.free, instances: capacity?.instances)
        do {
            let body = OsloEnvelope.wrap(try report.notification().encode())
            let outcome = try await client.publish(
                exchange: ServiceReportTopology.exchange, routingKey: "\(configuration.topic).\(configuration.host)",
                body: body)
            guard outcome == .confirmed else {
                logger.warning("the broker did not take the service report", metadata: ["outcome": "\(outcome)"])
                return false
            }
            return true
        } catch {
            logger.debug("could not publish the service report", metadata: ["error": "\(error)"])
            return false
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
