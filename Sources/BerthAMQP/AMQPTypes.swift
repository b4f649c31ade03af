@_exported import BerthAMQPModel

/// An error from the broker connection, with a message that says what to do about it.
public struct AMQPError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable {
        case invalidURL
        case connect
        case login
        /// The broker's TLS certificate did not verify, or the CA bundle could not be loaded.
        case tls
        /// The broker closed the channel, e.g. 406 PRECONDITION_FAILED on a declaration, 404 NOT_FOUND.
        case channelClosed
        /// The broker closed the connection (e.g. 320 CONNECTION_FORCED on shutdown).
        case connectionClosed
        /// The socket failed or heartbeats stopped.
        case connectionLost
        case notConnected
        case library
        case shutdown
    }

    public let kind: Kind
    /// The AMQP reply code when the broker sent one (406, 404, 320, ...).
    public let replyCode: Int
    public let message: String

    public init(_ kind: Kind, _ message: String, replyCode: Int = 0) {
        self.kind = kind
        self.message = message
        self.replyCode = replyCode
    }

    public var description: String { message }

    /// Whether a reconnect may cure it: everything but bad configuration and refused declarations.
    public var isTransient: Bool {
        switch kind {
        case .connect, .connectionClosed, .connectionLost, .notConnected, .library: true
        case .invalidURL, .login, .tls, .channelClosed, .shutdown: false
        }
    }
}

/// The basic-class properties Berth reads and writes.
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    public var timestamp: UInt64?
    public var type: String?
    public var appID: String?

    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: AMQPTable? = nil,
        deliveryMode: UInt8? = nil, priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil,
        expiration: String? = nil, messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil,
        appID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.appID = appID
    }

    /// What oslo.messaging puts on every message it publishes (OSLO-WIRE §3).
    public static func oslo(expiration: String? = nil) -> AMQPProperties {
        AMQPProperties(
            contentType: "application/json", contentEncoding: "utf-8", headers: [], deliveryMode: 2, priority: 0,
            expiration: expiration)
    }

    public static func == (lhs: AMQPProperties, rhs: AMQPProperties) -> Bool {
        lhs.contentType == rhs.contentType && lhs.contentEncoding == rhs.contentEncoding
            && lhs.deliveryMode == rhs.deliveryMode && lhs.priority == rhs.priority
            && lhs.correlationID == rhs.correlationID && lhs.replyTo == rhs.replyTo
            && lhs.expiration == rhs.expiration && lhs.messageID == rhs.messageID && lhs.timestamp == rhs.timestamp
            && lhs.type == rhs.type && lhs.appID == rhs.appID
            && lhs.headers?.map(\.key) == rhs.headers?.map(\.key)
            && lhs.headers?.map(\.value) == rhs.headers?.map(\.value)
    }

    public func header(_ key: String) -> AMQPFieldValue? {
        headers?.first { $0.key == key }?.value
    }
}

/// A message the broker delivered to one of our consumers.
public struct AMQPDelivery: Sendable {
    public let consumerTag: String
    public let deliveryTag: UInt64
    public let redelivered: Bool
    public let exchange: String
    public let routingKey: String
    public let properties: AMQPProperties
    /// The whole body; empty when it was over the client's `AMQPBodyLimit` (see `oversized`).
    public let body: [UInt8]
    /// Set when the body was over the client's `AMQPBodyLimit`: it was read and dropped, not kept.
    public let oversized: AMQPOversizedBody?
    /// Which connection it came on: a delivery tag means nothing on any other connection, so an ack
    /// for a delivery from a connection that has since been lost is dropped (the broker redelivers it).
    public let connectionGeneration: UInt64
}

/// A mandatory message the broker could not route, returned to us (e.g. a reply whose queue is gone).
public struct AMQPReturnedMessage: Sendable, Equatable {
    public let replyCode: Int
    public let replyText: String
    public let exchange: String
    public let routingKey: String
}

/// What the broker said about a published message once publisher confirms are on.
public enum PublishOutcome: Sendable, Equatable {
    /// The broker took responsibility for it (routed, and written to disk where the queue is durable).
    case confirmed
    /// The broker refused it (nack): the queue rejected it, or an internal error.
    case nacked
    /// Mandatory and unroutable: no queue is bound for its routing key.
    case returned(AMQPReturnedMessage)
}

/// What a connection declares and consumes each time it (re)connects, so a reconnect restores it all.
public struct AMQPTopology: Sendable {
    public var exchanges: [ExchangeDeclaration] = []
    public var queues: [QueueDeclaration] = []
    public var bindings: [Binding] = []
    /// Queues to consume with manual acknowledgement, by consumer tag.
    public var consumers: [(queue: String, consumerTag: String, arguments: AMQPTable)] = []
    /// `basic.qos` prefetch count; 0 sends no `basic.qos` (as oslo does by default).
    public var prefetchCount: UInt16 = 0

    public init() {}
}
