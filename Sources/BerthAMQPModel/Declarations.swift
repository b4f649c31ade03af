/// The exchange types Berth declares.
public enum ExchangeType: String, Sendable, Hashable {
    case topic, fanout, direct
}

/// An `exchange.declare`: what oslo's topology (BerthWire) asks for and the AMQP client (BerthAMQP) sends.
public struct ExchangeDeclaration: Sendable, Hashable {
    public var name: String
    public var type: ExchangeType
    public var durable: Bool
    public var autoDelete: Bool

    public init(name: String, type: ExchangeType, durable: Bool, autoDelete: Bool) {
        self.name = name
        self.type = type
        self.durable = durable
        self.autoDelete = autoDelete
    }
}

/// A `queue.declare`.
public struct QueueDeclaration: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var durable: Bool
    public var autoDelete: Bool
    public var exclusive: Bool
    /// In the declarer's order; oslo's is x-ha-policy, x-queue-type, quorum limits, x-expires.
    public var arguments: AMQPTable
    /// Only check that the queue exists (a 404 when it does not), whatever its arguments: for a reader that
    /// must neither create the queue nor know how it was declared.
    public var passive = false

    public init(
        name: String, durable: Bool, autoDelete: Bool, exclusive: Bool = false, arguments: AMQPTable = []
    ) {
        self.name = name
        self.durable = durable
        self.autoDelete = autoDelete
        self.exclusive = exclusive
        self.arguments = arguments
    }

    /// A passive declaration of `name`.
    public static func existing(_ name: String) -> QueueDeclaration {
        var declaration = QueueDeclaration(name: name, durable: false, autoDelete: false)
        declaration.passive = true
        return declaration
    }

    public func argument(_ key: String) -> AMQPFieldValue? {
        arguments.first { $0.key == key }?.value
    }

    public static func == (lhs: QueueDeclaration, rhs: QueueDeclaration) -> Bool {
        lhs.name == rhs.name && lhs.durable == rhs.durable && lhs.autoDelete == rhs.autoDelete
            && lhs.exclusive == rhs.exclusive && lhs.passive == rhs.passive
            && lhs.arguments.map(\.key) == rhs.arguments.map(\.key)
            && lhs.arguments.map(\.value) == rhs.arguments.map(\.value)
    }

    public var description: String {
        let args = arguments.map { "\($0.key)=\(Self.describe($0.value))" }.joined(separator: ", ")
        return "queue '\(name)' durable=\(durable) auto_delete=\(autoDelete) exclusive=\(exclusive) [\(args)]"
    }

    private static func describe(_ value: AMQPFieldValue) -> String {
        switch value {
        case .string(let text): "\"\(text)\""
        case .int(let number): String(number)
        default: "\(value)"
        }
    }
}

/// A `queue.bind`.
public struct Binding: Sendable, Hashable {
    public var exchange: String
    public var queue: String
    public var routingKey: String

    public init(exchange: String, queue: String, routingKey: String) {
        self.exchange = exchange
        self.queue = queue
        self.routingKey = routingKey
    }
}
