import BerthAMQP
import BerthJSON
import BerthWire
import Foundation
import Logging
import Synchronization

/// A pass over the dead-letter queue: takes the messages it held when the pass began (at most `limit`), one at
/// a time; each is removed (acked), replayed (republished, then acked) or kept. What is kept goes back to the
/// queue, in its place, when the pass closes: listing takes nothing away.
///
/// The queue is declared passively, so a pass neither creates it nor needs to know whether it is a quorum
/// queue. Messages that arrive during the pass are left for the next one.
public final class DeadLetterQueue: Sendable {
    public enum Failure: Error, CustomStringConvertible {
        case noBroker(AMQPError)
        case noQueue(String)

        public var description: String {
            switch self {
            case .noBroker(let error): "cannot read the dead letters: \(error)"
            case .noQueue(let queue):
                "there is no queue '\(queue)' on this vhost: no worker has dead-lettered anything yet (or see --dead-letter-queue)"
            }
        }
    }

    /// The largest body kept whole; the worker's own limit is at most 64 MiB, and its dead letters are no larger.
    static let maxBodyBytes = 64 << 20

    private let client: AMQPClient
    public let queue: String
    /// How many messages this pass takes: the ready count when it began, capped by the limit.
    public let total: Int
    private let taken = Mutex(0)
    private let idleTimeout: Duration

    /// Connects and starts the pass.
    public init(
        urls: [AMQPURL], queue: String, limit: Int, logger: Logger, idleTimeout: Duration = .seconds(5)
    ) async throws(Failure) {
        let consumerTag = "berth-dead-letters-" + OsloIDs.uuid4Hex()
        var topology = AMQPTopology()
        topology.queues = [.existing(queue)]
        topology.consumers = [(queue, consumerTag, [])]
        // Everything taken stays unacked until the pass decides, so the prefetch is the whole pass.
        topology.prefetchCount = UInt16(clamping: max(1, limit))
        var configuration = AMQPClient.Configuration(
            urls: urls, connectionName: "berth-dead-letters", topology: topology)
        configuration.bodyLimit = .dropping(over: Self.maxBodyBytes)
        let client = AMQPClient(configuration: configuration, logger: logger)
        do {
            try await client.start()
        } catch let error as AMQPError where error.replyCode == 404 {
            await client.stop()
            throw .noQueue(queue)
        } catch {
            await client.stop()
            throw .noBroker((error as? AMQPError) ?? AMQPError(.connect, "\(error)"))
        }
        self.client = client
        self.queue = queue
        self.total = min(client.readyMessages(in: queue) ?? 0, limit)
        self.idleTimeout = idleTimeout
    }

    /// Every message of the pass, in queue order. Ends early when the broker stops delivering (another reader
    /// took the rest).
    public func letters() -> AsyncStream<DeadLetter> {
        AsyncStream { continuation in
            let task = Task {
                var iterator = client.deliveries.makeAsyncIterator()
                while taken.withLock({ $0 }) < total {
                    guard let delivery = await Self.next(&iterator, within: idleTimeout, client: client) else { break }
                    taken.withLock { $0 += 1 }
                    continuation.yield(DeadLetter(delivery))
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    public func remove(_ letter: DeadLetter) {
        client.ack(letter.delivery)
    }

    /// Republishes the message where it was first sent, then removes it; the broker must confirm and route it
    /// (mandatory), or it stays.
    public func replay(_ letter: DeadLetter) async throws -> PublishOutcome {
        guard let exchange = letter.originalExchange, let routingKey = letter.originalRoutingKey else {
            return .nacked
        }
        let outcome = try await client.publish(
            exchange: exchange, routingKey: routingKey, body: letter.delivery.body, properties: letter.replayProperties,
            mandatory: true)
        if outcome == .confirmed { client.ack(letter.delivery) }
        return outcome
    }

    /// Ends the pass: what was neither removed nor replayed goes back to the queue.
    public func close() async {
        await client.stop()
    }

    /// The next delivery, or nil when none comes within `timeout` (the client is stopped then).
    private static func next(
        _ iterator: inout AsyncStream<AMQPDelivery>.Iterator, within timeout: Duration, client: AMQPClient
    ) async -> AMQPDelivery? {
        let watchdog = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { await client.stop() }
        }
        defer { watchdog.cancel() }
        return await iterator.next()
    }
}
