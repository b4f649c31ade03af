import CBerthShims
import Foundation
import Glibc
import Logging
import Synchronization

/// A broker client that stays connected: it owns an I/O thread that holds the librabbitmq connection,
/// declares the topology and starts the consumers on every (re)connect, reads deliveries, sends
/// publishes with publisher confirms, and reconnects with backoff when the connection is lost.
///
/// librabbitmq's calls block and its connection is not thread-safe, so every C call happens on that one
/// thread — never on Swift's cooperative pool. Callers talk to it through a command queue and a wake-up
/// `eventfd`, and get answers through continuations.
public final class AMQPClient: Sendable {
    public struct Configuration: Sendable {
        /// Tried in order on every reconnect, so a cluster's nodes can all be listed.
        public var urls: [AMQPURL]
        public var connectionName: String
        public var topology: AMQPTopology
        public var initialReconnectDelay: Double = 0.1
        /// Capped low so a worker is back within seconds of the broker returning.
        public var maximumReconnectDelay: Double = 2.0
        /// Bodies over this limit are not held in memory; nil: every body is kept whole.
        public var bodyLimit: AMQPBodyLimit?

        public init(urls: [AMQPURL], connectionName: String, topology: AMQPTopology) {
            self.urls = urls
            self.connectionName = connectionName
            self.topology = topology
        }
    }

    public enum Status: Sendable, Equatable {
        case connecting
        case connected(generation: UInt64)
        case failed(AMQPError)
        case stopped
    }

    enum Command {
        case publish(Publish, CheckedContinuation<PublishOutcome, any Error>)
        case ack(deliveryTag: UInt64, generation: UInt64)
        case reject(deliveryTag: UInt64, generation: UInt64, requeue: Bool)
        case cancelConsumers(CheckedContinuation<Void, Never>)
        case deleteQueue(String, CheckedContinuation<Void, any Error>)
    }

    struct Publish {
        var exchange: String
        var routingKey: String
        var mandatory: Bool
        var properties: AMQPProperties
        var body: [UInt8]
        /// A delivery to ack when the broker confirms this message (delivery tag, connection generation).
        var acknowledging: (deliveryTag: UInt64, generation: UInt64)?
    }

    struct Shared {
        var commands: [Command] = []
        var stopping = false
        var status: Status = .connecting
        var statusWaiters: [CheckedContinuation<Void, any Error>] = []
        var started = false
        var threadFinished: [CheckedContinuation<Void, Never>] = []
        var finished = false
    }

    let configuration: Configuration
    let logger: Logger
    let shared = Mutex(Shared())
    let wakeDescriptor: Int32
    public let deliveries: AsyncStream<AMQPDelivery>
    let deliveryContinuation: AsyncStream<AMQPDelivery>.Continuation

    public init(configuration: Configuration, logger: Logger) {
        precondition(!configuration.urls.isEmpty, "AMQPClient needs at least one broker URL")
        self.configuration = configuration
        self.logger = logger
        self.wakeDescriptor = berth_wake_descriptor()
        (deliveries, deliveryContinuation) = AsyncStream.makeStream(of: AMQPDelivery.self)
    }

    deinit {
        close(wakeDescriptor)
    }

    // MARK: Lifecycle

    /// Starts the I/O thread and returns once the first connection is up and its topology declared.
    /// Throws when that first attempt fails for a reason a retry will not cure (bad login, a 406 on a
    /// declaration) or when `connectTimeout` passes; later losses are retried for ever.
    public func start(connectTimeout: Duration = .seconds(30)) async throws {
        let alreadyStarted = shared.withLock { state in
            defer { state.started = true }
            return state.started
        }
        if !alreadyStarted {
            let loop = IOLoop(client: self)
            let thread = Thread { loop.run() }
            thread.name = "berth-amqp"
            thread.start()
        }
        try await waitUntilConnected(timeout: connectTimeout)
    }

    public var status: Status { shared.withLock { $0.status } }

    public func waitUntilConnected(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            switch status {
            case .connected: return
            case .failed(let error): throw error
            case .stopped: throw AMQPError(.shutdown, "the broker client was stopped")
            case .connecting:
                if ContinuousClock.now >= deadline {
                    throw AMQPError(
                        .connect,
                        "no broker connection after \(timeout): tried \(configuration.urls.map(\.description).joined(separator: ", "))"
                    )
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// Closes the connection (unacked deliveries go back to their queues) and ends `deliveries`.
    public func stop() async {
        let wasStarted = shared.withLock { state in
            state.stopping = true
            return state.started
        }
        wake()
        guard wasStarted else {
            finish(status: .stopped)
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = shared.withLock { state in
                if state.finished { return true }
                state.threadFinished.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: Operations

    /// Publishes and waits for the broker's confirm. A mandatory message that no queue takes comes back
    /// as `.returned`. Throws `notConnected`/`connectionLost` when the broker is away: the caller decides
    /// whether the message is worth keeping.
    ///
    /// `acknowledging`: a delivery the I/O thread acks the moment the broker confirms this message, the
    /// answer-then-ack of an RPC server without a second trip through the command queue. It is acked only on
    /// `.confirmed`; after `.nacked`, `.returned` or a throw it is still the caller's to ack or reject.
    public func publish(
        exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = .oslo(),
        mandatory: Bool = false, acknowledging delivery: AMQPDelivery? = nil
    ) async throws -> PublishOutcome {
        let publish = Publish(
            exchange: exchange, routingKey: routingKey, mandatory: mandatory, properties: properties, body: body,
            acknowledging: delivery.map { ($0.deliveryTag, $0.connectionGeneration) })
        return try await withCheckedThrowingContinuation { continuation in
            enqueue(.publish(publish, continuation)) {
                continuation.resume(throwing: AMQPError(.shutdown, "the broker client is stopping"))
            }
        }
    }

    /// Acknowledges a delivery. An ack for a delivery from an earlier, lost connection is dropped:
    /// the broker has already put that message back and will deliver it again.
    public func ack(_ delivery: AMQPDelivery) {
        enqueue(.ack(deliveryTag: delivery.deliveryTag, generation: delivery.connectionGeneration)) {}
    }

    public func reject(_ delivery: AMQPDelivery, requeue: Bool) {
        enqueue(.reject(deliveryTag: delivery.deliveryTag, generation: delivery.connectionGeneration, requeue: requeue)) {
        }
    }

    /// Stops the consumers (no new deliveries; in-flight ones can still be acked and answered), also
    /// across reconnects. Used to drain on SIGTERM.
    public func cancelConsumers() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            enqueue(.cancelConsumers(continuation)) { continuation.resume() }
        }
    }

    public func deleteQueue(_ name: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enqueue(.deleteQueue(name, continuation)) {
                continuation.resume(throwing: AMQPError(.shutdown, "the broker client is stopping"))
            }
        }
    }

    // MARK: Plumbing

    private func enqueue(_ command: Command, orElse rejected: () -> Void) {
        let accepted = shared.withLock { state in
            guard !state.finished else { return false }
            state.commands.append(command)
            return true
        }
        if accepted { wake() } else { rejected() }
    }

    func wake() {
        var one: UInt64 = 1
        _ = write(wakeDescriptor, &one, 8)
    }

    func takeCommands() -> [Command] {
        shared.withLock { state in
            defer { state.commands.removeAll(keepingCapacity: true) }
            return state.commands
        }
    }

    var isStopping: Bool { shared.withLock { $0.stopping } }

    func setStatus(_ status: Status) {
        shared.withLock { $0.status = status }
    }

    func finish(status: Status) {
        let (commands, waiters) = shared.withLock { state in
            if case .failed = state.status {} else { state.status = status }
            state.finished = true
            defer {
                state.commands = []
                state.threadFinished = []
            }
            return (state.commands, state.threadFinished)
        }
        for command in commands { IOLoop.abandon(command, AMQPError(.shutdown, "the broker client stopped")) }
        deliveryContinuation.finish()
        for waiter in waiters { waiter.resume() }
    }
}

/// The I/O thread's state. Only ever touched on that thread, which is why it needs no lock; it is
/// `@unchecked Sendable` solely so the `Thread` closure can take it there.
final class IOLoop: @unchecked Sendable {
    struct PendingConfirm {
        var sequence: UInt64
        var exchange: String
        var routingKey: String
        var mandatory: Bool
        var returned: AMQPReturnedMessage?
        var acknowledging: (deliveryTag: UInt64, generation: UInt64)?
        var continuation: CheckedContinuation<PublishOutcome, any Error>
    }

    unowned let client: AMQPClient
    var connection: AMQPConnection?
    var generation: UInt64 = 0
    var pending: [PendingConfirm] = []
    var consumersCancelled = false
    var everConnected = false
    var attempt = 0
    var logger: Logger { client.logger }

    init(client: AMQPClient) {
        self.client = client
    }

    func run() {
        while !client.isStopping {
            guard let connection = connection ?? connect() else { continue }
            do {
                try execute(client.takeCommands(), on: connection)
                if !connection.hasBufferedInput { waitForInput(socket: connection.socketDescriptor) }
                while let inbound = try connection.poll() {
                    try handle(inbound, on: connection)
                }
                connection.releaseBuffers()
            } catch {
                lose(connection, error)
            }
        }
        // Drain what was asked before the stop (acks and replies of finished work) before closing.
        if let connection {
            do { try execute(client.takeCommands(), on: connection) } catch { lose(connection, error) }
        }
        self.connection = nil
        failPending(AMQPError(.shutdown, "the broker client stopped"))
        client.finish(status: .stopped)
    }

    private func connect() -> AMQPConnection? {
        let urls = client.configuration.urls
        let url = urls[attempt % urls.count]
        generation += 1
        do {
            let connection = try AMQPConnection(
                url: url, connectionName: client.configuration.connectionName, generation: generation,
                bodyLimit: client.configuration.bodyLimit)
            var topology = client.configuration.topology
            if consumersCancelled { topology.consumers = [] }
            try connection.apply(topology)
            logger.info(
                "connected to the broker", metadata: ["broker": "\(url)", "generation": "\(generation)"])
            attempt = 0
            everConnected = true
            self.connection = connection
            client.setStatus(.connected(generation: generation))
            return connection
        } catch {
            attempt += 1
            if !everConnected && !error.isTransient {
                logger.error("broker setup failed", metadata: ["broker": "\(url)", "error": "\(error.message)"])
                client.setStatus(.failed(error))
                client.shared.withLock { $0.stopping = true }
                return nil
            }
            let delay = min(
                client.configuration.maximumReconnectDelay,
                client.configuration.initialReconnectDelay * pow(2, Double(min(attempt - 1, 10))))
            logger.warning(
                "broker connection failed; retrying",
                metadata: ["broker": "\(url)", "error": "\(error.message)", "retry_in_s": "\(delay)"])
            // Publishes made while there is no connection fail at once rather than wait an unknown time.
            for command in client.takeCommands() {
                Self.abandon(command, AMQPError(.notConnected, "not connected to the broker: \(error.message)"))
            }
            sleep(seconds: delay)
            return nil
        }
    }

    private func lose(_ connection: AMQPConnection, _ error: any Error) {
        let message = (error as? AMQPError)?.message ?? "\(error)"
        logger.warning(
            "broker connection lost; reconnecting",
            metadata: ["broker": "\(connection.url)", "error": "\(message)", "generation": "\(connection.generation)"])
        self.connection = nil
        client.setStatus(.connecting)
        failPending(AMQPError(.connectionLost, "the broker connection was lost before the confirm: \(message)"))
    }

    private func failPending(_ error: AMQPError) {
        let failed = pending
        pending = []
        for entry in failed { entry.continuation.resume(throwing: error) }
    }

    static func abandon(_ command: AMQPClient.Command, _ error: AMQPError) {
        switch command {
        case .publish(_, let continuation): continuation.resume(throwing: error)
        case .deleteQueue(_, let continuation): continuation.resume(throwing: error)
        case .cancelConsumers(let continuation): continuation.resume()
        case .ack, .reject: break
        }
    }

    /// Carries out the callers' commands in order. Each command's continuation is resumed exactly once: by
    /// the command when it succeeds, by `abandon` when it (or one before it) fails.
    func execute(_ commands: [AMQPClient.Command], on connection: some AMQPCommandChannel) throws {
        var remaining = commands[...]
        while let command = remaining.popFirst() {
            do {
                try execute(command, on: connection)
            } catch {
                // The rest cannot run on a dead connection; they fail now (acks are dropped: redelivery follows).
                let failure = (error as? AMQPError) ?? AMQPError(.connectionLost, "\(error)")
                Self.abandon(command, failure)
                for rest in remaining { Self.abandon(rest, failure) }
                throw error
            }
        }
    }

    private func execute(_ command: AMQPClient.Command, on connection: some AMQPCommandChannel) throws {
        switch command {
        case .publish(let publish, let continuation):
            let sequence = try connection.publish(
                exchange: publish.exchange, routingKey: publish.routingKey, mandatory: publish.mandatory,
                properties: publish.properties, body: publish.body)
            pending.append(
                PendingConfirm(
                    sequence: sequence, exchange: publish.exchange, routingKey: publish.routingKey,
                    mandatory: publish.mandatory, acknowledging: publish.acknowledging, continuation: continuation))
        case .ack(let tag, let generation):
            guard generation == connection.generation else {
                logger.debug("dropping ack from an earlier connection", metadata: ["delivery_tag": "\(tag)"])
                return
            }
            try connection.ack(deliveryTag: tag)
        case .reject(let tag, let generation, let requeue):
            guard generation == connection.generation else { return }
            try connection.reject(deliveryTag: tag, requeue: requeue)
        case .cancelConsumers(let continuation):
            // Set first: if the connection dies here, the reconnect must not start the consumers again.
            consumersCancelled = true
            for consumer in client.configuration.topology.consumers {
                try connection.cancel(consumerTag: consumer.consumerTag)
            }
            continuation.resume()
        case .deleteQueue(let name, let continuation):
            try connection.deleteQueue(name)
            continuation.resume()
        }
    }

    private func handle(_ inbound: AMQPInbound, on connection: AMQPConnection) throws {
        switch inbound {
        case .delivery(let delivery):
            client.deliveryContinuation.yield(delivery)
        case .confirm(let tag, let multiple, let ack):
            var resolved: [PendingConfirm] = []
            pending.removeAll { entry in
                let matches = multiple ? entry.sequence <= tag : entry.sequence == tag
                if matches { resolved.append(entry) }
                return matches
            }
            var failure: (any Error)?
            for entry in resolved {
                let outcome: PublishOutcome = entry.returned.map { .returned($0) } ?? (ack ? .confirmed : .nacked)
                // A delivery from an earlier connection is back in its queue already: nothing to ack.
                if outcome == .confirmed, failure == nil, let request = entry.acknowledging,
                    request.generation == connection.generation
                {
                    do { try connection.ack(deliveryTag: request.deliveryTag) } catch { failure = error }
                }
                entry.continuation.resume(returning: outcome)
            }
            // The confirms stand; the connection does not (its acks are moot: the broker redelivers).
            if let failure { throw failure }
        case .returned(let message):
            // A return carries no sequence number; RabbitMQ sends it just before the confirm of the same
            // message, so it belongs to the oldest unconfirmed mandatory publish with its route.
            if let index = pending.firstIndex(where: {
                $0.mandatory && $0.returned == nil && $0.exchange == message.exchange
                    && $0.routingKey == message.routingKey
            }) {
                pending[index].returned = message
            }
        case .consumerCancelled(let tag):
            logger.warning("the broker cancelled a consumer (queue deleted?)", metadata: ["consumer_tag": "\(tag)"])
        case .blocked(let reason):
            logger.warning("the broker blocked publishing", metadata: ["reason": "\(reason)"])
        case .unblocked:
            logger.info("the broker unblocked publishing")
        }
    }

    private func waitForInput(socket: Int32) {
        let heartbeat = connection?.url.heartbeat ?? 0
        let timeout = heartbeat > 0 ? min(1000, heartbeat * 250) : 1000
        var descriptors = [
            pollfd(fd: socket, events: Int16(POLLIN), revents: 0),
            pollfd(fd: client.wakeDescriptor, events: Int16(POLLIN), revents: 0),
        ]
        _ = Glibc.poll(&descriptors, 2, Int32(timeout))
        drainWake()
    }

    private func sleep(seconds: Double) {
        var descriptor = pollfd(fd: client.wakeDescriptor, events: Int16(POLLIN), revents: 0)
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !client.isStopping, ContinuousClock.now < deadline {
            _ = Glibc.poll(&descriptor, 1, Int32(max(1, seconds * 1000)))
            drainWake()
        }
    }

    private func drainWake() {
        var value: UInt64 = 0
        _ = read(client.wakeDescriptor, &value, 8)
    }
}
