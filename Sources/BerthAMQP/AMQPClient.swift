import CRabbitMQShims
import Foundation
import Glibc
import Logging
import Metrics
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

        var isConnected: Bool { if case .connected = self { true } else { false } }
    }

    enum Command {
        case publish(Publish, PublishCompletion)
        case ack(DeliveryReference)
        case reject(DeliveryReference, requeue: Bool)
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
        var acknowledging: DeliveryReference?
    }

    struct Shared {
        var commands: [Command] = []
        var stopping = false
        /// `host:port` of the node the current connection is on.
        var broker: String?
        /// Ready messages per queue when the current connection declared them, before its consumers started.
        var readyMessages: [String: UInt32] = [:]
        var started = false
        var threadFinished: [CheckedContinuation<Void, Never>] = []
        var finished = false
    }

    let configuration: Configuration
    let logger: Logger
    let shared = Mutex(Shared())
    /// The connection's status, watched by `waitUntilConnected`.
    let watchedStatus = Watched<Status>(.connecting)
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

    public var status: Status { watchedStatus.value }

    /// `host:port` of the broker node this client is connected to; nil while it is not. In a cluster, which
    /// node a worker landed on (its URL's hosts are tried in a random order).
    public var connectedBroker: String? { status.isConnected ? shared.withLock { $0.broker } : nil }

    /// How many messages `queue` held when this connection declared it, before any consumer of the topology
    /// started: where a reader of a queue knows it has seen everything. Nil when the topology has no such queue.
    public func readyMessages(in queue: String) -> Int? {
        shared.withLock { $0.readyMessages[queue].map(Int.init) }
    }

    public func waitUntilConnected(timeout: Duration) async throws {
        let settled = await withTimeLimit(timeout) { [watchedStatus] in
            await watchedStatus.wait { status in
                if case .connecting = status { false } else { true }
            }
        }
        switch settled ?? status {
        case .connected: return
        case .failed(let error): throw error
        case .stopped: throw AMQPError(.shutdown, "the broker client was stopped")
        case .connecting:
            throw AMQPError(
                .connect,
                "no broker connection within \(Self.seconds(timeout)): tried \(configuration.urls.map(\.description).joined(separator: ", "))")
        }
    }

    /// "3 s", "0.5 s": a wait as a person reads it.
    private static func seconds(_ duration: Duration) -> String {
        let milliseconds = duration / .milliseconds(1)
        return milliseconds.truncatingRemainder(dividingBy: 1000) == 0
            ? "\(Int(milliseconds / 1000)) s" : String(format: "%.1f s", milliseconds / 1000)
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
            acknowledging: delivery.map(DeliveryReference.init))
        return try await withCheckedThrowingContinuation { continuation in
            let completion = PublishCompletion { continuation.resume(with: $0) }
            enqueue(.publish(publish, completion)) {
                completion.resume(throwing: AMQPError(.shutdown, "the broker client is stopping"))
            }
        }
    }

    /// Publishes `messages` in their order without waiting for one confirm before sending the next, and
    /// returns each one's outcome (a failure where `publish` would throw), in the same order. For a stream
    /// of small messages, such as status events, that would otherwise wait a confirm round trip each.
    public func publish(_ messages: [OutgoingMessage]) async -> [Result<PublishOutcome, AMQPError>] {
        guard !messages.isEmpty else { return [] }
        return await withCheckedContinuation { continuation in
            let outcomes = PublishBatch(count: messages.count, continuation: continuation)
            for (index, message) in messages.enumerated() {
                let publish = Publish(
                    exchange: message.exchange, routingKey: message.routingKey, mandatory: message.mandatory,
                    properties: message.properties, body: message.body, acknowledging: nil)
                let completion = PublishCompletion { outcomes.settle(index, $0) }
                enqueue(.publish(publish, completion)) {
                    completion.resume(throwing: AMQPError(.shutdown, "the broker client is stopping"))
                }
            }
        }
    }

    /// Acknowledges a delivery. An ack for a delivery from an earlier, lost connection is dropped:
    /// the broker has already put that message back and will deliver it again.
    public func ack(_ delivery: AMQPDelivery) {
        enqueue(.ack(.init(delivery))) {}
    }

    public func reject(_ delivery: AMQPDelivery, requeue: Bool) {
        enqueue(.reject(.init(delivery), requeue: requeue)) {}
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

    func setStatus(_ status: Status, broker: AMQPURL? = nil) {
        shared.withLock { $0.broker = broker.map { "\($0.host):\($0.port)" } }
        watchedStatus.update { $0 = status }
    }

    func finish(status: Status) {
        watchedStatus.update { current in
            if case .failed = current {} else { current = status }
        }
        let (commands, waiters) = shared.withLock { state in
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

/// The I/O thread: it carries out what `AMQPConnectionStateMachine` decides, on the one connection it owns.
/// Only ever touched on that thread, which is why it needs no lock; it is `@unchecked Sendable` solely so
/// the `Thread` closure can take it there.
final class IOLoop: @unchecked Sendable {
    typealias Machine = AMQPConnectionStateMachine<PublishCompletion>

    unowned let client: AMQPClient
    var machine: Machine
    var connection: AMQPConnection?
    var logger: Logger { client.logger }

    init(client: AMQPClient) {
        self.client = client
        let configuration = client.configuration
        machine = Machine(
            settings: .init(
                urls: configuration.urls, initialReconnectDelay: configuration.initialReconnectDelay,
                maximumReconnectDelay: configuration.maximumReconnectDelay))
    }

    func run() {
        var action = machine.receive(.started)
        while let event = perform(action) {
            action = machine.receive(event)
        }
    }

    /// Carries out one of the machine's actions and returns what came of it; nil once the client is finished.
    private func perform(_ action: Machine.Action) -> Machine.Event? {
        switch action {
        case .connect(let attempt):
            return connect(attempt)
        case .serve(let generation):
            client.setStatus(.connected(generation: generation), broker: connection?.url)
            return serve()
        case .waitBackOff(let seconds, let broker, let cause):
            logger.warning(
                "broker connection failed; retrying",
                metadata: ["broker": "\(broker)", "error": "\(cause.message)", "retry_in_s": "\(seconds)"])
            for command in client.takeCommands() {
                Self.abandon(command, AMQPError(.notConnected, "not connected to the broker: \(cause.message)"))
            }
            sleep(seconds: seconds)
            return client.isStopping ? .stopRequested : .backOffElapsed
        case .reconnect(let failing, let failure, let next):
            if let connection {
                logger.warning(
                    "broker connection lost; reconnecting",
                    metadata: [
                        "broker": "\(connection.url)", "error": "\(failure.message)",
                        "generation": "\(connection.generation)",
                    ])
            }
            connection = nil
            client.setStatus(.connecting)
            Counter(
                label: "berth_broker_reconnects_total",
                dimensions: [("connection", client.configuration.connectionName)]
            ).increment()
            for caller in failing { caller.resume(throwing: failure) }
            return connect(next)
        case .giveUp(let broker, let cause):
            logger.error("broker setup failed", metadata: ["broker": "\(broker)", "error": "\(cause.message)"])
            client.finish(status: .failed(cause))
            return nil
        case .drain:
            guard let connection else { preconditionFailure("draining without a connection") }
            do {
                try execute(client.takeCommands(), on: connection)
                return .drained
            } catch {
                return .connectionLost(Self.failure(error))
            }
        case .finish(let failing, let failure):
            connection = nil
            for caller in failing { caller.resume(throwing: failure) }
            client.finish(status: .stopped)
            return nil
        }
    }

    private func connect(_ attempt: Machine.Attempt) -> Machine.Event {
        guard !client.isStopping else { return .stopRequested }
        do {
            let connection = try AMQPConnection(
                url: attempt.url, connectionName: client.configuration.connectionName, generation: attempt.generation,
                bodyLimit: client.configuration.bodyLimit)
            var topology = client.configuration.topology
            if !attempt.startsConsumers { topology.consumers = [] }
            let readyMessages = try connection.apply(topology)
            client.shared.withLock { $0.readyMessages = readyMessages }
            logger.info(
                "connected to the broker",
                metadata: ["broker": "\(attempt.url)", "generation": "\(attempt.generation)"])
            self.connection = connection
            return .connected
        } catch {
            return .connectFailed(error)
        }
    }

    /// Turns of commands, then what the broker sent, until the connection fails or a stop is asked.
    private func serve() -> Machine.Event {
        guard let connection else { preconditionFailure("serving without a connection") }
        while !client.isStopping {
            do {
                try execute(client.takeCommands(), on: connection)
                if !connection.hasBufferedInput { waitForInput(socket: connection.socketDescriptor) }
                while let inbound = try connection.poll() {
                    try handle(inbound, on: connection)
                }
                connection.releaseBuffers()
            } catch {
                return .connectionLost(Self.failure(error))
            }
        }
        return .stopRequested
    }

    /// An error as the AMQPError callers get: itself, or a lost connection naming it.
    static func failure(_ error: any Error) -> AMQPError {
        (error as? AMQPError) ?? AMQPError(.connectionLost, "\(error)")
    }

    static func abandon(_ command: AMQPClient.Command, _ error: AMQPError) {
        switch command {
        case .publish(_, let completion): completion.resume(throwing: error)
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
                let failure = Self.failure(error)
                Self.abandon(command, failure)
                for rest in remaining { Self.abandon(rest, failure) }
                throw error
            }
        }
    }

    private func execute(_ command: AMQPClient.Command, on connection: some AMQPCommandChannel) throws {
        switch command {
        case .publish(let publish, let completion):
            let sequence = try connection.publish(
                exchange: publish.exchange, routingKey: publish.routingKey, mandatory: publish.mandatory,
                properties: publish.properties, body: publish.body)
            let publication = Machine.Publication(
                exchange: publish.exchange, routingKey: publish.routingKey, mandatory: publish.mandatory,
                acknowledging: publish.acknowledging)
            try carryOut(machine.receive(.published(sequence: sequence, publication, by: completion)), on: connection)
        case .ack(let delivery):
            try carryOut(machine.receive(.ackRequested(delivery)), on: connection)
        case .reject(let delivery, let requeue):
            try carryOut(machine.receive(.rejectRequested(delivery, requeue: requeue)), on: connection)
        case .cancelConsumers(let continuation):
            try carryOut(machine.receive(.cancelConsumersRequested), on: connection)
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
            let traffic: Machine.Traffic =
                ack ? .confirmed(sequence: tag, multiple: multiple) : .nacked(sequence: tag, multiple: multiple)
            try carryOut(machine.receive(traffic), on: connection)
        case .returned(let message):
            try carryOut(machine.receive(.returned(message)), on: connection)
        case .consumerCancelled(let tag):
            logger.warning("the broker cancelled a consumer (queue deleted?)", metadata: ["consumer_tag": "\(tag)"])
        case .blocked(let reason):
            try carryOut(machine.receive(.blocked(reason: reason)), on: connection)
        case .unblocked:
            try carryOut(machine.receive(.unblocked), on: connection)
        }
    }

    private func carryOut(_ action: Machine.TrafficAction, on connection: some AMQPCommandChannel) throws {
        switch action {
        case .nothing:
            break
        case .sendAck(let tag):
            try connection.ack(deliveryTag: tag)
        case .sendReject(let tag, let requeue):
            try connection.reject(deliveryTag: tag, requeue: requeue)
        case .drop(let tag):
            logger.debug("dropping an ack or reject from an earlier connection", metadata: ["delivery_tag": "\(tag)"])
        case .cancelConsumers:
            for consumer in client.configuration.topology.consumers {
                try connection.cancel(consumerTag: consumer.consumerTag)
            }
        case .resolve(let resolutions):
            var failure: (any Error)?
            for resolution in resolutions {
                if let tag = resolution.ack, failure == nil {
                    do { try connection.ack(deliveryTag: tag) } catch { failure = error }
                }
                resolution.caller.resume(returning: resolution.outcome)
            }
            // The confirms stand; the connection does not (its acks are moot: the broker redelivers).
            if let failure { throw failure }
        case .reportBlocked(let reason):
            logger.warning("the broker blocked publishing", metadata: ["reason": "\(reason)"])
        case .reportUnblocked:
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
