/// Why a message from the bus (or a configuration for it) was refused. Every failure in this module is one of
/// these, so the worker can dead-letter a message with a stable `code` and log a `message` an operator can act on.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// The body (or the inner `oslo.message`) is not JSON at all, or is cut short.
        case notJSON
        case invalidUTF8
        /// Larger than `JSONLimits.maxBytes`.
        case tooLarge
        /// Nested deeper than `JSONLimits.maxDepth`.
        case tooDeep
        /// The envelope is present but malformed: inner message not a string, not an object, body not an object.
        case badEnvelope
        /// `oslo.version` is not compatible with 2.0.
        case unsupportedEnvelope
        case missingField
        /// A field has the wrong type, is empty, or is too long.
        case badField
        /// AMQP `content_type` other than `application/json`.
        case contentType
        /// `RabbitOptions` that oslo.messaging (or RabbitMQ) would refuse.
        case invalidOptions
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// oslo's kombu consumer decodes only `application/json`; anything else is dropped there, so Berth refuses it
    /// too rather than guessing. Returns nil when the content type is acceptable.
    public static func contentType(_ contentType: String?) -> WireError? {
        guard let contentType else {
            return WireError(
                .contentType,
                "message has no content_type; oslo.messaging peers publish content_type=application/json and "
                    + "Berth accepts nothing else")
        }
        if contentType == "application/json" { return nil }
        return WireError(
            .contentType,
            "message has content_type '\(contentType.prefix(64))'; only 'application/json' is accepted "
                + "(oslo.messaging drops other types too)")
    }
}

/// Limits on identifiers taken from messages. AMQP short strings (queue names) cannot exceed 255 bytes, and
/// ids are uuid4 hex (32 characters) in practice, so anything much longer is garbage or an attack.
public enum WireLimits {
    public static let maxMethodBytes = 255
    public static let maxQueueNameBytes = 255
    public static let maxIDCharacters = 64
}
