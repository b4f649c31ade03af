import BerthAMQP
import BerthWire

/// Turns oslo's declarations (pure, in BerthWire) into what the AMQP client declares.
extension ExchangeSpec {
    public init(_ declaration: ExchangeDeclaration) {
        self.init(
            name: declaration.name, type: declaration.type.rawValue, durable: declaration.durable,
            autoDelete: declaration.autoDelete)
    }
}

extension QueueSpec {
    public init(_ declaration: QueueDeclaration) {
        self.init(
            name: declaration.name, durable: declaration.durable, exclusive: declaration.exclusive,
            autoDelete: declaration.autoDelete, arguments: AMQPTable(declaration.arguments))
    }
}

extension BindingSpec {
    public init(_ binding: Binding) {
        self.init(queue: binding.queue, exchange: binding.exchange, routingKey: binding.routingKey)
    }
}

extension AMQPFieldValue {
    public init(_ argument: QueueArgument) {
        switch argument {
        case .string(let value): self = .string(value)
        case .int(let value): self = .int(value)
        }
    }
}

extension Array where Element == (key: String, value: AMQPFieldValue) {
    public init(_ arguments: [(String, QueueArgument)]) {
        self = arguments.map { (key: $0.0, value: AMQPFieldValue($0.1)) }
    }
}

/// Berth's own dead-letter route for messages it cannot process. oslo's queues take no
/// `x-dead-letter-exchange` argument (declaring one would be a 406 against oslo-made queues), so the worker
/// republishes such a message here itself, with the reason in the `x-berth-reason` header, then acks it.
public struct DeadLetterRoute: Sendable, Equatable {
    public var exchange: String
    public var queue: String

    public init(exchange: String = "berth.dlx", queue: String = "berth.dead-letter") {
        self.exchange = exchange
        self.queue = queue
    }

    public var exchangeSpec: ExchangeSpec { ExchangeSpec(name: exchange, type: "topic", durable: true, autoDelete: false) }
    public var queueSpec: QueueSpec { queueSpec(quorum: false) }

    /// With `rabbit_quorum_queue` the dead letters go to a quorum queue too: a classic durable queue lives on
    /// one node of a cluster, and while that node is down every worker's redeclaration of it fails (404 "home
    /// node ... is down"), which would keep the whole pool off the bus.
    public func queueSpec(quorum: Bool) -> QueueSpec {
        QueueSpec(
            name: queue, durable: true, autoDelete: false,
            arguments: quorum ? [(key: "x-queue-type", value: .string("quorum"))] : [])
    }
    public var binding: BindingSpec { BindingSpec(queue: queue, exchange: exchange, routingKey: "#") }
}
