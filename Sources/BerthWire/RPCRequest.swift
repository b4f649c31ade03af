import BerthJSON

/// An RPC call or cast, the dict inside `oslo.message`.
public struct RPCRequest: Sendable, Hashable {
    public var method: String
    /// Keyword arguments; `{}` when the caller passed none.
    public var args: JSONObject
    public var namespace: String?
    /// The version the request carried, nil when it had none. Kept apart from `version` so `encode()` writes
    /// back exactly what was (or was not) sent.
    public var requestedVersion: RPCVersion?
    /// Reply correlation id; present only on a call.
    public var msgID: String?
    public var replyQueue: String?
    /// `_timeout`: the caller's call-monitor timeout in seconds, nil when it sent null.
    public var callMonitorTimeout: Int?
    /// `_unique_id`, for duplicate suppression.
    public var uniqueID: String?
    /// The caller's context dict, rebuilt from the `_context_*` keys.
    public var context: JSONObject

    /// The version dispatch compares: oslo assumes 1.0 when a request carries none.
    public var version: RPCVersion { requestedVersion ?? .oneZero }

    /// A call expects exactly one final reply; a cast or fanout gets none, even on failure.
    public var isCall: Bool { msgID != nil }

    public static let contextPrefix = "_context_"

    public init(
        method: String, args: JSONObject = [:], namespace: String? = nil, version: RPCVersion? = nil,
        msgID: String? = nil, replyQueue: String? = nil, callMonitorTimeout: Int? = nil,
        uniqueID: String? = OsloIDs.uuid4Hex(), context: JSONObject = [:]
    ) {
        self.method = method
        self.args = args
        self.namespace = namespace
        self.requestedVersion = version
        self.msgID = msgID
        self.replyQueue = replyQueue
        self.callMonitorTimeout = callMonitorTimeout
        self.uniqueID = uniqueID
        self.context = context
    }

    /// Validates and decodes a request dict (the output of `OsloEnvelope.unwrap`). Keys oslo would ignore are
    /// ignored; every key it relies on is type-checked here so the handlers never see a wrong type.
    public static func decode(_ message: JSONObject) throws(WireError) -> RPCRequest {
        guard let methodValue = message["method"] else {
            throw WireError(.missingField, "request has no 'method'; an oslo RPC request names the method to call")
        }
        let method = try requireString(methodValue, field: "method", maxBytes: WireLimits.maxMethodBytes)

        var args = JSONObject()
        if let argsValue = message["args"] {
            guard case .object(let object) = argsValue else {
                throw WireError(
                    .badField, "'args' is a JSON \(argsValue.typeName); it must be an object of keyword arguments")
            }
            args = object
        }

        // An empty namespace is kept, not refused: it matches no endpoint, so oslo's UnsupportedVersion follows.
        var namespace: String?
        if let namespaceValue = message["namespace"], !namespaceValue.isNull {
            guard case .string(let text) = namespaceValue, text.utf8.count <= 255 else {
                throw WireError(
                    .badField,
                    "'namespace' must be a string of at most 255 bytes, got a JSON \(namespaceValue.typeName)")
            }
            namespace = text
        }

        var version: RPCVersion?
        if let versionValue = message["version"], !versionValue.isNull {
            let text = try requireString(versionValue, field: "version", maxBytes: 32)
            guard let parsed = RPCVersion(text) else {
                throw WireError(.badField, "'version' is '\(text)'; expected \"X.Y\" or \"X.Y.Z\" such as \"1.0\"")
            }
            version = parsed
        }

        let address = try decodeReplyAddress(message)

        var timeout: Int?
        if let timeoutValue = message["_timeout"] {
            switch timeoutValue {
            case .null: timeout = nil
            // oslo applies int(), so a float timeout is truncated toward zero.
            case .int(let value): timeout = Int(clamping: value)
            case .double(let value) where value.isFinite && abs(value) < 1e12: timeout = Int(value)
            default:
                throw WireError(
                    .badField, "'_timeout' is a JSON \(timeoutValue.typeName); it must be null or whole seconds")
            }
        }

        let uniqueID = try optionalString(
            message["_unique_id"], field: "_unique_id", maxCharacters: WireLimits.maxIDCharacters)

        var context = JSONObject()
        for (key, value) in message where key.hasPrefix(contextPrefix) {
            context[String(key.dropFirst(contextPrefix.count))] = value
        }

        return RPCRequest(
            method: method, args: args, namespace: namespace, version: version, msgID: address?.msgID,
            replyQueue: address?.replyQueue, callMonitorTimeout: timeout, uniqueID: uniqueID, context: context)
    }

    /// Where to send the failure reply for a message that failed validation elsewhere: the `_msg_id` and
    /// `_reply_q` when both are present and sane, otherwise nil (a cast, or nothing safe to reply to).
    public static func replyAddress(of message: JSONObject) -> (msgID: String, replyQueue: String)? {
        guard let address = try? decodeReplyAddress(message) else { return nil }
        return address
    }

    /// Writes the request the way an oslo `RPCClient` does, in its key order.
    public func encode() -> JSONObject {
        var message: JSONObject = ["method": .string(method), "args": .object(args)]
        if let namespace { message["namespace"] = .string(namespace) }
        if let requestedVersion { message["version"] = .string(requestedVersion.description) }
        if let msgID {
            message["_msg_id"] = .string(msgID)
            message["_reply_q"] = replyQueue.map(JSONValue.string) ?? .null
            message["_timeout"] = callMonitorTimeout.map { .int(Int64($0)) } ?? .null
        }
        if let uniqueID { message["_unique_id"] = .string(uniqueID) }
        for (key, value) in context { message[Self.contextPrefix + key] = value }
        return message
    }

    private static func decodeReplyAddress(
        _ message: JSONObject
    ) throws(WireError) -> (msgID: String, replyQueue: String)? {
        guard
            let msgID = try optionalString(
                message["_msg_id"], field: "_msg_id", maxCharacters: WireLimits.maxIDCharacters)
        else { return nil }
        guard let queueValue = message["_reply_q"], !queueValue.isNull else {
            throw WireError(
                .missingField, "call '\(msgID)' has '_msg_id' but no '_reply_q', so there is nowhere to reply")
        }
        let replyQueue = try requireString(queueValue, field: "_reply_q", maxBytes: WireLimits.maxQueueNameBytes)
        return (msgID, replyQueue)
    }
}

// Field helpers shared by the decoders in this module.

func requireString(
    _ value: JSONValue, field: String, maxBytes: Int? = nil, maxCharacters: Int? = nil
) throws(WireError) -> String {
    guard case .string(let text) = value else {
        throw WireError(.badField, "'\(field)' is a JSON \(value.typeName); it must be a string")
    }
    guard !text.isEmpty else {
        throw WireError(.badField, "'\(field)' is empty")
    }
    if let maxBytes, text.utf8.count > maxBytes {
        throw WireError(.badField, "'\(field)' is \(text.utf8.count) bytes long; the limit is \(maxBytes)")
    }
    if let maxCharacters, text.unicodeScalars.count > maxCharacters {
        throw WireError(
            .badField, "'\(field)' is \(text.unicodeScalars.count) characters long; the limit is \(maxCharacters)")
    }
    return text
}

/// Absent and null both mean "not given", as with Python's `dict.get`.
func optionalString(
    _ value: JSONValue?, field: String, maxBytes: Int? = nil, maxCharacters: Int? = nil
) throws(WireError) -> String? {
    guard let value, !value.isNull else { return nil }
    return try requireString(value, field: field, maxBytes: maxBytes, maxCharacters: maxCharacters)
}
