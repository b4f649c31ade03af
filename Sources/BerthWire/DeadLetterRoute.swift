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

    public var exchangeDeclaration: ExchangeDeclaration {
        ExchangeDeclaration(name: exchange, type: .topic, durable: true, autoDelete: false)
    }

    /// With `rabbit_quorum_queue` the dead letters go to a quorum queue too: a classic durable queue lives on
    /// one node of a cluster, and while that node is down every worker's redeclaration of it fails (404 "home
    /// node ... is down"), which would keep the whole pool off the bus.
    public func queueDeclaration(quorum: Bool) -> QueueDeclaration {
        QueueDeclaration(
            name: queue, durable: true, autoDelete: false,
            arguments: quorum ? [(key: "x-queue-type", value: .string("quorum"))] : [])
    }
    public var binding: Binding { Binding(exchange: exchange, queue: queue, routingKey: "#") }
}
