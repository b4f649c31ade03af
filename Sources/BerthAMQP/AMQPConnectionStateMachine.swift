/// The rules of one broker client's connection, in the style of async-http-client's connection state machines:
/// the I/O thread reports what happened (`receive(_:)`) and carries out the action it gets back. Nothing else
/// decides when to connect and to which broker, how long to back off, which publish a confirm or a return
/// belongs to, which acks still mean something, or which callers to fail when the connection goes.
///
/// It holds no socket and no librabbitmq state, so every sequence is tested without a broker. `Caller` is
/// whatever the thread resumes when a publish is settled (a continuation; a plain value in tests).
///
/// The rules it keeps:
/// - A confirm settles every pending publish up to its sequence number (`multiple`) or that one only; a
///   mandatory publish that came back before its confirm is `.returned` whatever the confirm says.
/// - A publish that `acknowledges` a delivery gets that delivery acked on its `.confirmed`, and only if the
///   delivery came on this connection: an earlier connection's deliveries are back in their queues.
/// - A lost connection fails every pending publish, in publish order; the next connection starts at the first
///   broker. Failed connects rotate through the brokers and back off 0.1 s, 0.2 s, … up to the maximum.
/// - The first connect failing for a reason a retry will not cure (bad login, a 406 on a declaration) is
///   fatal; once connected, every loss is retried for ever.
/// - Cancelled consumers stay cancelled across reconnects (a draining worker takes no new work).
struct AMQPConnectionStateMachine<Caller> {
    struct Settings {
        /// Tried in turn while connects fail.
        var urls: [AMQPURL]
        var initialReconnectDelay: Double
        var maximumReconnectDelay: Double
    }

    /// One connect: where, as which generation (deliveries carry it, so a late ack is known for stale), and
    /// whether the topology's consumers start.
    struct Attempt: Equatable {
        var url: AMQPURL
        var generation: UInt64
        var startsConsumers: Bool
    }

    /// What a publish carries that its confirm and a return are matched on.
    struct Publication {
        var exchange: String
        var routingKey: String
        var mandatory: Bool
        /// A delivery to ack when the broker confirms this message.
        var acknowledging: DeliveryReference?
    }

    /// A publish the broker has not confirmed yet.
    struct PendingConfirm {
        var sequence: UInt64
        var publication: Publication
        var returned: AMQPReturnedMessage?
        var caller: Caller
    }

    /// A settled publish: resume `caller` with `outcome`, after acking `ack` (a delivery tag) when there is one.
    struct Resolution {
        var caller: Caller
        var outcome: PublishOutcome
        var ack: UInt64?
    }

    /// What happened to the connection.
    enum Event {
        case started
        /// The connect of the last `.connect` succeeded: the connection is open and its topology declared.
        case connected
        case connectFailed(AMQPError)
        case backOffElapsed
        /// The open connection failed (socket, heartbeat, a channel or connection close).
        case connectionLost(AMQPError)
        case stopRequested
        /// The commands asked before the stop were carried out.
        case drained
    }

    /// What the I/O thread must do next with the connection.
    enum Action {
        /// Open a connection and declare the topology, without its consumers unless `startsConsumers`; report
        /// `.connected` or `.connectFailed` (`.stopRequested` if a stop came first).
        case connect(Attempt)
        /// Report the connection up and serve it (commands, then what the broker sends) until it is lost or a
        /// stop is requested.
        case serve(generation: UInt64)
        /// Fail the commands queued meanwhile as not connected (`cause`), wait `seconds` unless a stop comes,
        /// and report `.backOffElapsed` or `.stopRequested`.
        case waitBackOff(seconds: Double, broker: AMQPURL, cause: AMQPError)
        /// The connection is gone: fail `failing` with `failure`, in order, then carry out `.connect(next)`.
        case reconnect(failing: [Caller], failure: AMQPError, next: Attempt)
        /// The first connect to `broker` failed for good: the client ends failed with `cause`.
        case giveUp(broker: AMQPURL, cause: AMQPError)
        /// Carry out the commands asked before the stop (acks and replies of finished work), then report
        /// `.drained`.
        case drain
        /// Close the connection, fail `failing` with `failure`, in order, and end the client.
        case finish(failing: [Caller], failure: AMQPError)
    }

    /// What the open connection's traffic did: a caller's command carried out, or something the broker sent.
    enum Traffic {
        /// A message went out with this publish sequence number.
        case published(sequence: UInt64, Publication, by: Caller)
        case ackRequested(DeliveryReference)
        case rejectRequested(DeliveryReference, requeue: Bool)
        case cancelConsumersRequested
        case confirmed(sequence: UInt64, multiple: Bool)
        case nacked(sequence: UInt64, multiple: Bool)
        case returned(AMQPReturnedMessage)
        case blocked(reason: String)
        case unblocked
    }

    /// What the I/O thread must do on the open connection.
    enum TrafficAction {
        case nothing
        case sendAck(deliveryTag: UInt64)
        case sendReject(deliveryTag: UInt64, requeue: Bool)
        /// An ack or reject of a delivery from an earlier connection: the broker has redelivered it already.
        case drop(deliveryTag: UInt64)
        /// Cancel the topology's consumers (no new deliveries, now or after a reconnect), then resume the caller.
        case cancelConsumers
        /// Carry these out in order. An ack that fails loses the connection: the rest are resumed without
        /// their acks, then `.connectionLost` is reported.
        case resolve([Resolution])
        case reportBlocked(reason: String)
        case reportUnblocked
    }

    enum State: Equatable {
        case idle
        case connecting
        case open
        case backingOff
        /// Stop requested on an open connection: its last commands go out before it closes.
        case closing
        case finished
    }

    let settings: Settings
    private(set) var state = State.idle
    /// Counts every connect; a delivery's generation says which connection it came on.
    private(set) var generation: UInt64 = 0
    /// Connects failed since the last success: picks the broker and the back-off.
    private(set) var failedConnects = 0
    private(set) var everConnected = false
    private(set) var consumersCancelled = false
    /// Whether the broker said it stopped reading our publishes (resource alarm).
    private(set) var blocked = false
    private(set) var pending: [PendingConfirm] = []

    init(settings: Settings) {
        precondition(!settings.urls.isEmpty, "a broker connection needs at least one URL")
        self.settings = settings
    }

    mutating func receive(_ event: Event) -> Action {
        switch (state, event) {
        case (.idle, .started):
            return connect()

        case (.connecting, .connected):
            failedConnects = 0
            everConnected = true
            blocked = false
            state = .open
            return .serve(generation: generation)

        case (.connecting, .connectFailed(let error)):
            let broker = url
            failedConnects += 1
            if !everConnected && !error.isTransient {
                state = .finished
                return .giveUp(broker: broker, cause: error)
            }
            state = .backingOff
            return .waitBackOff(seconds: backOff, broker: broker, cause: error)

        case (.backingOff, .backOffElapsed):
            return connect()

        case (.open, .connectionLost(let error)):
            return .reconnect(failing: takePending(), failure: Self.lostBeforeConfirm(error), next: nextAttempt())

        case (.open, .stopRequested):
            state = .closing
            return .drain

        case (.closing, .drained):
            state = .finished
            return .finish(failing: takePending(), failure: AMQPError(.shutdown, "the broker client stopped"))

        case (.closing, .connectionLost(let error)):
            state = .finished
            return .finish(failing: takePending(), failure: Self.lostBeforeConfirm(error))

        case (.idle, .stopRequested), (.connecting, .stopRequested), (.backingOff, .stopRequested):
            // Nothing is pending without a connection: a loss failed it already.
            state = .finished
            return .finish(failing: [], failure: AMQPError(.shutdown, "the broker client stopped"))

        default:
            preconditionFailure("AMQPConnectionStateMachine: \(event) cannot happen in state \(state)")
        }
    }

    mutating func receive(_ traffic: Traffic) -> TrafficAction {
        switch state {
        case .open, .closing: break
        case .idle, .connecting, .backingOff, .finished:
            preconditionFailure("AMQPConnectionStateMachine: \(traffic) without a connection (state \(state))")
        }
        switch traffic {
        case .published(let sequence, let publication, let caller):
            pending.append(PendingConfirm(sequence: sequence, publication: publication, caller: caller))
            return .nothing

        case .ackRequested(let delivery):
            guard delivery.generation == generation else { return .drop(deliveryTag: delivery.deliveryTag) }
            return .sendAck(deliveryTag: delivery.deliveryTag)

        case .rejectRequested(let delivery, let requeue):
            guard delivery.generation == generation else { return .drop(deliveryTag: delivery.deliveryTag) }
            return .sendReject(deliveryTag: delivery.deliveryTag, requeue: requeue)

        case .cancelConsumersRequested:
            // Set first: if the connection dies while cancelling, the reconnect must not start them again.
            consumersCancelled = true
            return .cancelConsumers

        case .confirmed(let sequence, let multiple):
            return .resolve(settle(upTo: sequence, multiple: multiple, brokerOutcome: .confirmed))

        case .nacked(let sequence, let multiple):
            return .resolve(settle(upTo: sequence, multiple: multiple, brokerOutcome: .nacked))

        case .returned(let message):
            // A return carries no sequence number; RabbitMQ sends it just before the confirm of the same
            // message, so it belongs to the oldest unconfirmed mandatory publish with its route.
            if let index = pending.firstIndex(where: {
                $0.publication.mandatory && $0.returned == nil && $0.publication.exchange == message.exchange
                    && $0.publication.routingKey == message.routingKey
            }) {
                pending[index].returned = message
            }
            return .nothing

        case .blocked(let reason):
            guard !blocked else { return .nothing }
            blocked = true
            return .reportBlocked(reason: reason)

        case .unblocked:
            guard blocked else { return .nothing }
            blocked = false
            return .reportUnblocked
        }
    }

    // MARK: Rules

    /// The broker to try now: the first after a success, the next one after each failure.
    private var url: AMQPURL { settings.urls[failedConnects % settings.urls.count] }

    /// 0.1 s after the first failure, doubling up to the maximum (capped low so a worker is back within
    /// seconds of the broker returning).
    private var backOff: Double {
        min(
            settings.maximumReconnectDelay,
            settings.initialReconnectDelay * Double(1 << min(failedConnects - 1, 10)))
    }

    private mutating func connect() -> Action { .connect(nextAttempt()) }

    private mutating func nextAttempt() -> Attempt {
        generation += 1
        state = .connecting
        return Attempt(url: url, generation: generation, startsConsumers: !consumersCancelled)
    }

    private mutating func takePending() -> [Caller] {
        defer { pending = [] }
        return pending.map(\.caller)
    }

    private mutating func settle(upTo sequence: UInt64, multiple: Bool, brokerOutcome: PublishOutcome) -> [Resolution] {
        var settled: [Resolution] = []
        pending.removeAll { entry in
            guard multiple ? entry.sequence <= sequence : entry.sequence == sequence else { return false }
            let outcome = entry.returned.map { .returned($0) } ?? brokerOutcome
            var ack: UInt64?
            if outcome == .confirmed, let delivery = entry.publication.acknowledging, delivery.generation == generation
            {
                ack = delivery.deliveryTag
            }
            settled.append(Resolution(caller: entry.caller, outcome: outcome, ack: ack))
            return true
        }
        return settled
    }

    private static func lostBeforeConfirm(_ error: AMQPError) -> AMQPError {
        AMQPError(.connectionLost, "the broker connection was lost before the confirm: \(error.message)")
    }
}

extension AMQPConnectionStateMachine.Action: Equatable where Caller: Equatable {}
extension AMQPConnectionStateMachine.TrafficAction: Equatable where Caller: Equatable {}
extension AMQPConnectionStateMachine.Resolution: Equatable where Caller: Equatable {}

/// A delivery as an ack names it: its tag is only meaningful on the connection (generation) it came on.
struct DeliveryReference: Equatable {
    var deliveryTag: UInt64
    var generation: UInt64
}

extension DeliveryReference {
    init(_ delivery: AMQPDelivery) {
        self.init(deliveryTag: delivery.deliveryTag, generation: delivery.connectionGeneration)
    }
}
