/// A value in an AMQP field table (queue and consumer arguments, message headers).
public enum AMQPFieldValue: Sendable, Equatable {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case double(Double)
    case table(AMQPTable)
    case array([AMQPFieldValue])
    case bytes([UInt8])
    case void

    public static func == (lhs: AMQPFieldValue, rhs: AMQPFieldValue) -> Bool {
        switch (lhs, rhs) {
        case (.string(let a), .string(let b)): a == b
        case (.int(let a), .int(let b)): a == b
        case (.bool(let a), .bool(let b)): a == b
        case (.double(let a), .double(let b)): a == b
        case (.table(let a), .table(let b)): a.map(\.key) == b.map(\.key) && a.map(\.value) == b.map(\.value)
        case (.array(let a), .array(let b)): a == b
        case (.bytes(let a), .bytes(let b)): a == b
        case (.void, .void): true
        default: false
        }
    }
}

/// An AMQP field table in wire order.
public typealias AMQPTable = [(key: String, value: AMQPFieldValue)]
