import BerthJSON

/// The oslo.messaging 2.0 envelope: `{"oslo.version": "2.0", "oslo.message": "<inner JSON as a string>"}`.
/// The inner message is JSON-encoded twice on purpose: that is what every oslo peer sends and expects.
public enum OsloEnvelope {
    public static let versionKey = "oslo.version"
    public static let messageKey = "oslo.message"
    /// The envelope version Berth writes and the newest it reads.
    public static let version = RPCVersion(major: 2, minor: 0)

    /// Serialises `message` into an envelope body, keys in oslo's order.
    public static func wrap(_ message: JSONObject) -> [UInt8] {
        let inner = JSONCodec.serializeString(.object(message))
        let outer: JSONObject = [versionKey: .string(version.description), messageKey: .string(inner)]
        return JSONCodec.serialize(.object(outer))
    }

    /// Decodes an AMQP body into the message dict, as oslo's `deserialize_msg` does: a dict carrying both
    /// envelope keys is an envelope whose version must be compatible with 2.0; any other dict is a legacy
    /// (1.0, no envelope) message used as is. Unlike oslo, a body that is not a dict is refused, because no
    /// RPC, reply or notification can be anything else.
    public static func unwrap(_ body: [UInt8], limits: JSONLimits = .default) throws(WireError) -> JSONObject {
        let outer: JSONValue
        do {
            outer = try JSONCodec.parse(body, limits: limits)
        } catch {
            throw WireError(decoding: error, what: "message body")
        }
        guard case .object(let dict) = outer else {
            throw WireError(
                .badEnvelope,
                "message body is a JSON \(outer.typeName), expected an object (an oslo envelope or a message dict)")
        }
        guard let versionValue = dict[versionKey], let innerValue = dict[messageKey] else {
            return dict
        }
        guard case .string(let versionText) = versionValue else {
            throw WireError(
                .unsupportedEnvelope,
                "'\(versionKey)' is a JSON \(versionValue.typeName), expected a version string such as \"2.0\"")
        }
        guard let envelopeVersion = RPCVersion(versionText), version.accepts(envelopeVersion) else {
            throw WireError(
                .unsupportedEnvelope,
                "envelope version '\(versionText.prefix(32))' is not supported; Berth reads oslo.messaging "
                    + "envelope 2.0 (same major, minor <= 0), so the publisher is newer or not oslo.messaging")
        }
        guard case .string(let innerText) = innerValue else {
            throw WireError(
                .badEnvelope,
                "'\(messageKey)' is a JSON \(innerValue.typeName); oslo.messaging sends the message "
                    + "JSON-encoded as a string")
        }
        let inner: JSONValue
        do {
            inner = try JSONCodec.parse(Array(innerText.utf8), limits: limits)
        } catch {
            throw WireError(decoding: error, what: "'\(messageKey)'")
        }
        guard case .object(let message) = inner else {
            throw WireError(
                .badEnvelope, "'\(messageKey)' decodes to a JSON \(inner.typeName), expected an object")
        }
        return message
    }
}

extension WireError {
    /// Maps a codec failure onto the wire error codes, keeping json-c's detail for the log.
    init(decoding error: JSONError, what: String) {
        let code: Code =
            switch error.code {
            case .tooLarge: .tooLarge
            case .tooDeep: .tooDeep
            case .invalidUTF8: .invalidUTF8
            // syntax, truncated, and whatever the codec adds later: all mean "not usable JSON".
            default: .notJSON
            }
        let summary =
            switch code {
            case .tooLarge: "\(what) is too large"
            case .tooDeep: "\(what) is nested too deeply"
            case .invalidUTF8: "\(what) is not valid UTF-8"
            default: "\(what) is not valid JSON"
            }
        self.init(code, "\(summary): \(error.message)")
    }
}
