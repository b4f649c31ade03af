import BerthAMQP
import BerthDigest
import BerthJSON
import BerthWire
import Foundation

/// One message of the dead-letter queue, as `RPCServer` republished it: the original body (or, for a body over
/// `--max-message-bytes`, only its first bytes) and properties, with the `x-berth-*` headers saying why and
/// where from. Everything here comes from the bus: any header may be missing or of the wrong type.
public struct DeadLetter: Sendable {
    /// Headers the worker adds when it dead-letters a message (contracts/schemas/amqp/dead-letter.json).
    public enum Header {
        public static let reason = "x-berth-reason"
        public static let originalExchange = "x-berth-original-exchange"
        public static let originalRoutingKey = "x-berth-original-routing-key"
        public static let host = "x-berth-host"
        public static let originalBytes = "x-berth-original-bytes"
        public static let deadLetteredAt = "x-berth-dead-lettered-at"
        /// On a replayed copy: the reason it had been dead-lettered for.
        public static let replayedReason = "x-berth-replayed-reason"
        /// Taken off a replayed copy: the worker's headers, and the broker's record of its own dead-lettering.
        static let added = [
            reason, originalExchange, originalRoutingKey, host, originalBytes, deadLetteredAt, "x-death",
            "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
        ]
    }

    /// The first 12 hex digits of the body's SHA-256: stable across listings, so `show` and `replay` can name it.
    public let id: String
    public let delivery: AMQPDelivery
    public let reason: String
    public let host: String?
    public let originalExchange: String?
    public let originalRoutingKey: String?
    /// Set when only an excerpt of a larger body was kept: the size of the whole.
    public let originalBytes: Int64?
    public let deadLetteredAt: Date?
    /// The oslo request's method and namespace, when the body is one.
    public let method: String?
    public let namespace: String?
    /// The decoded oslo message, when the body is a whole oslo envelope.
    public let message: JSONObject?

    public init(_ delivery: AMQPDelivery, limits: JSONLimits = .default) {
        self.delivery = delivery
        id = String(SHA256Digest.hex(delivery.body).prefix(12))
        let properties = delivery.properties
        func text(_ key: String) -> String? {
            guard case .string(let value)? = properties.header(key) else { return nil }
            return value
        }
        // The broker's own dead-lettering (the deploy/ policy's delivery-limit, a call's expired TTL) says the
        // same in its x-death header.
        let death = BrokerDeath(properties.header("x-death"))
        reason =
            text(Header.reason) ?? death?.reason.map { "broker: \($0) (x-death)" } ?? "(no \(Header.reason) header)"
        host = text(Header.host)
        originalExchange = text(Header.originalExchange) ?? death?.exchange
        originalRoutingKey = text(Header.originalRoutingKey) ?? death?.routingKey
        if case .int(let bytes)? = properties.header(Header.originalBytes) {
            originalBytes = bytes
        } else {
            originalBytes = nil
        }
        if case .int(let seconds)? = properties.header(Header.deadLetteredAt), seconds >= 0, seconds < 1 << 40 {
            deadLetteredAt = Date(timeIntervalSince1970: Double(seconds))
        } else {
            deadLetteredAt = nil
        }
        message = originalBytes == nil ? try? OsloEnvelope.unwrap(delivery.body, limits: limits) : nil
        method = message?["method"]?.stringValue
        namespace = message?["namespace"]?.stringValue
    }

    /// Why this dead letter cannot be replayed as it is; nil when it can.
    public var replayRefusal: String? {
        if let originalBytes {
            return
                "only the first \(delivery.body.count) of its \(originalBytes) bytes were kept (it was over the worker's --max-message-bytes); the caller must send it again"
        }
        guard let exchange = originalExchange, let routingKey = originalRoutingKey else {
            return
                "it has no \(Header.originalExchange) / \(Header.originalRoutingKey) header to say where it came from"
        }
        if exchange == "" && routingKey.isEmpty { return "its original routing key is empty" }
        return nil
    }

    /// The properties of the replayed copy: the original's, without the dead-letter headers (the worker's and the
    /// broker's), with the reason it had been dead-lettered for kept in `x-berth-replayed-reason`.
    public var replayProperties: AMQPProperties {
        var properties = delivery.properties
        var headers = (properties.headers ?? []).filter {
            !Header.added.contains($0.key) && $0.key != Header.replayedReason
        }
        headers.append((key: Header.replayedReason, value: .string(String(reason.prefix(1024)))))
        properties.headers = headers
        return properties
    }

    /// Seconds since it was dead-lettered; nil when the header is missing (dead-lettered by an older worker).
    public func age(now: Date) -> Double? {
        deadLetteredAt.map { now.timeIntervalSince($0) }
    }
}

/// The first entry of RabbitMQ's `x-death` header: why the broker dead-lettered the message and where it was
/// first sent.
struct BrokerDeath {
    var reason: String?
    var exchange: String?
    var routingKey: String?

    init?(_ header: AMQPFieldValue?) {
        guard case .array(let deaths)? = header, case .table(let death)? = deaths.first else { return nil }
        func field(_ key: String) -> AMQPFieldValue? { death.first { $0.key == key }?.value }
        if case .string(let reason)? = field("reason") { self.reason = reason }
        if case .string(let exchange)? = field("exchange") { self.exchange = exchange }
        if case .array(let keys)? = field("routing-keys"), case .string(let key)? = keys.first { routingKey = key }
    }
}

/// Which dead letters a `berth dead-letters` command acts on. Every criterion given must hold.
public struct DeadLetterFilter: Sendable {
    public var ids: Set<String> = []
    /// A part of the reason, compared without regard to case.
    public var reason: String?
    public var method: String?
    public var olderThan: Double?
    public var newerThan: Double?

    public init() {}

    public var selectsEverything: Bool {
        ids.isEmpty && reason == nil && method == nil && olderThan == nil && newerThan == nil
    }

    public func matches(_ letter: DeadLetter, now: Date) -> Bool {
        if !ids.isEmpty && !ids.contains(letter.id) { return false }
        if let reason, !letter.reason.localizedCaseInsensitiveContains(reason) { return false }
        if let method, letter.method != method { return false }
        let age = letter.age(now: now)
        // A dead letter of unknown age matches no age criterion.
        if let olderThan, !(age.map { $0 > olderThan } ?? false) { return false }
        if let newerThan, !(age.map { $0 < newerThan } ?? false) { return false }
        return true
    }
}
