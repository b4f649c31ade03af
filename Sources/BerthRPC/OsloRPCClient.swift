import BerthAMQP
import BerthJSON
import BerthWire
import Foundation
import Logging
import Synchronization

public enum RPCCallError: Error, Sendable, CustomStringConvertible {
    /// The server answered with a failure.
    case remote(RPCFailure)
    /// No final reply in time; oslo's `MessagingTimeout` wording.
    case timeout(msgID: String)
    /// The request could not be published.
    case notDelivered(String)

    public var description: String {
        switch self {
        case .remote(let failure): "\(failure.className): \(failure.message)"
        case .timeout(let msgID): "Timed out waiting for a reply to message ID \(msgID)"
        case .notDelivered(let reason): "request not delivered: \(reason)"
        }
    }
}

/// An RPC client that speaks to oslo.messaging servers (and Berth workers) exactly as oslo's `RPCClient`
/// does: requests on the control exchange (or `<topic>_fanout`), replies on its own `reply_<uuid>` queue,
/// call-monitor heartbeats restarting the timer.
public final class OsloRPCClient: Sendable {
    public let options: RabbitOptions
    public let topic: String
    let client: AMQPClient
    let replyQueue: String
    let waiters = Mutex([String: AsyncStream<RPCReply>.Continuation]())
    let logger: Logger

    public init(urls: [AMQPURL], options: RabbitOptions, topic: String = "compute", logger: Logger) {
        self.options = options
        self.topic = topic
        self.logger = logger
        let replyQueue = options.replyQueue()
        self.replyQueue = replyQueue.name
        var topology = AMQPTopology()
        topology.exchanges = [
            options.controlExchangeDeclaration, options.fanoutExchange(topic: topic),
        ]
        topology.queues = [replyQueue]
        topology.consumers = [(replyQueue.name, "berth-client-\(replyQueue.name)", [])]
        client = AMQPClient(
            configuration: .init(urls: urls, connectionName: "berth-client", topology: topology), logger: logger)
    }

    /// Connects, retrying the broker for up to `connectTimeout`. Replies are read only inside `serving(_:)`.
    public func start(connectTimeout: Duration = .seconds(30)) async throws {
        try await client.start(connectTimeout: connectTimeout)
    }

    /// Runs `body` (calls and casts) with the replies read alongside it, then stops the client: the reply
    /// reader lives exactly as long as `body`, in this task's group rather than a task of its own.
    public func serving<T, E: Error>(_ body: () async throws(E) -> T) async throws(E) -> T {
        let outcome: Result<T, E> = await withDiscardingTaskGroup { group in
            group.addTask { await self.readReplies() }
            let outcome: Result<T, E>
            do throws(E) { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            // Ends the deliveries, and with them the reader.
            await client.stop()
            return outcome
        }
        return try outcome.get()
    }

    public func stop() async {
        await client.stop()
    }

    private func readReplies() async {
        for await delivery in client.deliveries {
            client.ack(delivery)
            route(delivery)
        }
    }

    private func route(_ delivery: AMQPDelivery) {
        do {
            let reply = try RPCReply.decode(OsloEnvelope.unwrap(delivery.body))
            let waiter = waiters.withLock { $0[reply.msgID] }
            if let waiter {
                waiter.yield(reply)
            } else {
                logger.info("no call waiting for this reply", metadata: ["msg_id": "\(reply.msgID)"])
            }
        } catch {
            logger.warning("undecodable reply dropped", metadata: ["error": "\(error)"])
        }
    }

    /// Calls a method and returns its result.
    /// - Parameters:
    ///   - timeout: overall time to wait for the final reply; also the request's `expiration`, so the broker
    ///     drops a request nobody took in time.
    ///   - callMonitorTimeout: `_timeout`: the server heartbeats every half of it and the call fails if a
    ///     heartbeat is this late.
    public func call(
        _ method: String, args: JSONObject = [:], server: String? = nil, namespace: String? = nil,
        version: RPCVersion? = nil, context: JSONObject = [:], timeout: Duration = .seconds(60),
        callMonitorTimeout: Int? = nil
    ) async throws(RPCCallError) -> JSONValue {
        let msgID = OsloIDs.uuid4Hex()
        let request = RPCRequest(
            method: method, args: args, namespace: namespace, version: version, msgID: msgID,
            replyQueue: replyQueue, callMonitorTimeout: callMonitorTimeout, uniqueID: OsloIDs.uuid4Hex(),
            context: context)
        let (replies, continuation) = AsyncStream.makeStream(of: RPCReply.self)
        waiters.withLock { $0[msgID] = continuation }
        defer {
            _ = waiters.withLock { $0.removeValue(forKey: msgID) }
            continuation.finish()
        }
        let milliseconds = max(1, Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
        try await send(request, server: server, fanout: false, expiration: String(milliseconds))

        let overallDeadline = ContinuousClock.now + timeout
        let monitor = callMonitorTimeout.map { Duration.seconds($0) }
        var state = RPCCallState()
        var iterator = replies.makeAsyncIterator()
        var monitorDeadline = monitor.map { ContinuousClock.now + $0 } ?? overallDeadline
        while true {
            let deadline = min(overallDeadline, monitorDeadline)
            guard let reply = await Self.next(&iterator, before: deadline) else { throw .timeout(msgID: msgID) }
            switch state.receive(reply) {
            case .heartbeat, .pending:
                if let monitor { monitorDeadline = ContinuousClock.now + monitor }
            case .finished(.success(let value)):
                return value
            case .finished(.failure(let failure)):
                throw .remote(failure)
            }
        }
    }

    /// Sends a request with no reply: to the topic (one worker), one server, or every server (fanout).
    public func cast(
        _ method: String, args: JSONObject = [:], server: String? = nil, fanout: Bool = false,
        namespace: String? = nil, version: RPCVersion? = nil, context: JSONObject = [:]
    ) async throws(RPCCallError) {
        let request = RPCRequest(
            method: method, args: args, namespace: namespace, version: version, msgID: nil, replyQueue: nil,
            callMonitorTimeout: nil, uniqueID: OsloIDs.uuid4Hex(), context: context)
        try await send(request, server: server, fanout: fanout, expiration: nil)
    }

    private func send(_ request: RPCRequest, server: String?, fanout: Bool, expiration: String?) async throws(RPCCallError) {
        let exchange = fanout ? "\(topic)_fanout" : options.controlExchange
        let routingKey = fanout ? "" : server.map { "\(topic).\($0)" } ?? topic
        do {
            let outcome = try await client.publish(
                exchange: exchange, routingKey: routingKey, body: OsloEnvelope.wrap(request.encode()),
                properties: .oslo(expiration: expiration))
            guard outcome == .confirmed else { throw RPCCallError.notDelivered("the broker answered \(outcome)") }
        } catch let error as RPCCallError {
            throw error
        } catch {
            throw .notDelivered("\(error)")
        }
    }

    /// The next reply, or nil when the deadline passes first.
    private static func next(
        _ iterator: inout AsyncStream<RPCReply>.Iterator, before deadline: ContinuousClock.Instant
    ) async -> RPCReply? {
        let box = IteratorBox(iterator)
        let reply = await withTaskGroup(of: RPCReply?.self) { group in
            group.addTask { await box.next() }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        iterator = box.iterator
        return reply
    }
}

/// Lets a child task advance the caller's stream iterator; only one task uses it at a time (the race in
/// `next(_:before:)` reads it back only after the group finished), which is why `@unchecked` is safe.
private final class IteratorBox: @unchecked Sendable {
    var iterator: AsyncStream<RPCReply>.Iterator

    init(_ iterator: AsyncStream<RPCReply>.Iterator) {
        self.iterator = iterator
    }

    func next() async -> RPCReply? {
        await iterator.next()
    }
}
