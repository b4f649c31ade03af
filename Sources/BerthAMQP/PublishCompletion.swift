import Synchronization

/// A message for `AMQPClient.publish(_:)`, the pipelined form of `publish(exchange:routingKey:body:...)`.
public struct OutgoingMessage: Sendable {
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var properties: AMQPProperties
    public var mandatory: Bool

    public init(
        exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = .oslo(),
        mandatory: Bool = false
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// What the I/O thread calls once a publish is settled (confirmed, nacked, returned, or failed with its
/// connection). Called exactly once: the command queue and the connection state machine hand each one on
/// until it is resumed.
struct PublishCompletion: Sendable {
    private let body: @Sendable (Result<PublishOutcome, AMQPError>) -> Void

    init(_ body: @escaping @Sendable (Result<PublishOutcome, AMQPError>) -> Void) {
        self.body = body
    }

    func resume(returning outcome: PublishOutcome) { body(.success(outcome)) }

    func resume(throwing error: any Error) {
        body(.failure(IOLoop.failure(error)))
    }
}

/// The outcomes of one pipelined batch, collected in order as they settle (confirms may settle several at
/// once, failures all that remain); the caller is resumed when the last one is in.
final class PublishBatch: Sendable {
    private struct State {
        var outcomes: [Result<PublishOutcome, AMQPError>?]
        var remaining: Int
    }

    private let state: Mutex<State>
    private let continuation: CheckedContinuation<[Result<PublishOutcome, AMQPError>], Never>

    init(count: Int, continuation: CheckedContinuation<[Result<PublishOutcome, AMQPError>], Never>) {
        state = Mutex(State(outcomes: Array(repeating: nil, count: count), remaining: count))
        self.continuation = continuation
    }

    func settle(_ index: Int, _ outcome: Result<PublishOutcome, AMQPError>) {
        let finished = state.withLock { state -> [Result<PublishOutcome, AMQPError>]? in
            guard state.outcomes[index] == nil else { return nil }
            state.outcomes[index] = outcome
            state.remaining -= 1
            return state.remaining == 0 ? state.outcomes.map { $0! } : nil
        }
        if let finished { continuation.resume(returning: finished) }
    }
}
