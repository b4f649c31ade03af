import BerthJSON

/// A reply message (inside the envelope) to a call, published to `""` with routing key `_reply_q`.
public struct RPCReply: Sendable, Hashable {
    public var msgID: String
    public var result: JSONValue
    public var failure: RPCFailure?
    /// True on the one final message of a call; false on heartbeats (and on the first half of a legacy pair).
    public var ending: Bool
    /// Not checked by oslo clients, and may be missing.
    public var uniqueID: String?

    public init(msgID: String, result: JSONValue, failure: RPCFailure?, ending: Bool, uniqueID: String?) {
        self.msgID = msgID
        self.result = result
        self.failure = failure
        self.ending = ending
        self.uniqueID = uniqueID
    }

    /// Every key is always written: an oslo client raises `KeyError` without `failure`, and waits forever
    /// without `ending: true`.
    private static func message(
        result: JSONValue, failure: JSONValue, ending: Bool, msgID: String, uniqueID: String
    ) -> JSONObject {
        [
            "result": result, "failure": failure, "ending": .bool(ending), "_msg_id": .string(msgID),
            "_unique_id": .string(uniqueID),
        ]
    }

    /// The single final reply of a successful call.
    public static func result(
        _ value: JSONValue, msgID: String, uniqueID: String = OsloIDs.uuid4Hex()
    ) -> JSONObject {
        message(result: value, failure: .null, ending: true, msgID: msgID, uniqueID: uniqueID)
    }

    /// The single final reply of a failed call; `failure` is the JSON-encoded string oslo expects.
    public static func failure(
        _ failure: RPCFailure, msgID: String, uniqueID: String = OsloIDs.uuid4Hex()
    ) -> JSONObject {
        message(result: .null, failure: .string(failure.jsonString), ending: true, msgID: msgID, uniqueID: uniqueID)
    }

    /// A call-monitor heartbeat. Send only when the request's `_timeout` was non-null: an oslo client that did
    /// not ask for a call monitor crashes on one (`'NoneType' object has no attribute 'restart'`).
    public static func heartbeat(msgID: String, uniqueID: String = OsloIDs.uuid4Hex()) -> JSONObject {
        message(result: .null, failure: .null, ending: false, msgID: msgID, uniqueID: uniqueID)
    }

    /// Decodes a reply (client side), as tolerant as oslo's client: `result` and `failure` may be missing or
    /// null, `ending` defaults to false, `_unique_id` is optional. A `failure` that is not a JSON string is
    /// refused (oslo's client would crash on it).
    public static func decode(_ message: JSONObject, limits: JSONLimits = .default) throws(WireError) -> RPCReply {
        guard let msgIDValue = message["_msg_id"] else {
            throw WireError(.missingField, "reply has no '_msg_id', so it cannot be matched to a call")
        }
        let msgID = try requireString(msgIDValue, field: "_msg_id", maxCharacters: WireLimits.maxIDCharacters)
        var failure: RPCFailure?
        if let failureValue = message["failure"], !failureValue.isNull {
            guard case .string(let text) = failureValue else {
                throw WireError(
                    .badField,
                    "reply 'failure' is a JSON \(failureValue.typeName); oslo sends it as a JSON-encoded string")
            }
            failure = try RPCFailure.decode(fromJSONString: text, limits: limits)
        }
        var ending = false
        if let endingValue = message["ending"], !endingValue.isNull {
            guard case .bool(let flag) = endingValue else {
                throw WireError(.badField, "reply 'ending' is a JSON \(endingValue.typeName); it must be a boolean")
            }
            ending = flag
        }
        let uniqueID = try optionalString(
            message["_unique_id"], field: "_unique_id", maxCharacters: WireLimits.maxIDCharacters)
        return RPCReply(
            msgID: msgID, result: message["result"] ?? .null, failure: failure, ending: ending, uniqueID: uniqueID)
    }

    /// A reply that only tells the caller the server is still working.
    public var isHeartbeat: Bool { !ending && failure == nil && result.isNull }
}

/// Client-side state of one call: folds its reply messages into the outcome the way oslo's `ReplyWaiter`
/// does. The last non-null result (or failure) seen is returned when a message with `ending: true` arrives,
/// which also accepts the legacy pair `{result: R, ending: false}` + `{result: null, ending: true}`.
public struct RPCCallState: Sendable {
    public enum Event: Sendable, Hashable {
        /// A heartbeat: restart the call-monitor timer.
        case heartbeat
        /// A non-final message carrying a result (legacy pair); keep waiting.
        case pending
        case finished(Result<JSONValue, RPCFailure>)
    }

    private var outcome: Result<JSONValue, RPCFailure>?

    public init() {}

    public mutating func receive(_ reply: RPCReply) -> Event {
        if let failure = reply.failure {
            outcome = .failure(failure)
        } else if !reply.result.isNull {
            outcome = .success(reply.result)
        } else if !reply.ending {
            return .heartbeat
        }
        guard reply.ending else { return .pending }
        return .finished(outcome ?? .success(.null))
    }
}

/// When to send call-monitor heartbeats.
public enum CallMonitor {
    /// oslo's watchdog: nothing when `_timeout` is null or 0; otherwise `int(_timeout) / 2` seconds (Python
    /// true division), and nothing when that is below 1 s (so `_timeout: 1` gets no heartbeats, `3` every 1.5 s).
    public static func heartbeatInterval(callMonitorTimeout: Int?) -> Duration? {
        guard let timeout = callMonitorTimeout, timeout >= 2 else { return nil }
        return .seconds(timeout) / 2
    }
}

/// Remembers the last `capacity` `_unique_id`s seen, like oslo's per-listener cache of 16.
public struct DuplicateFilter: Sendable {
    public let capacity: Int
    private var ring: [String] = []
    private var next = 0
    private var seen: Set<String> = []

    public init(capacity: Int = 16) {
        self.capacity = max(1, capacity)
        ring.reserveCapacity(self.capacity)
    }

    /// Checks and records in one step: true when `uniqueID` was among the last `capacity` recorded ids.
    /// A missing id is never a duplicate (and is not recorded).
    public mutating func isDuplicate(_ uniqueID: String?) -> Bool {
        guard let uniqueID else { return false }
        if seen.contains(uniqueID) { return true }
        record(uniqueID)
        return false
    }

    /// Whether `uniqueID` is among the remembered ids, without recording it. Lets a caller record only once
    /// the work is done, so a redelivery after a failed attempt is not mistaken for a duplicate.
    public func contains(_ uniqueID: String?) -> Bool {
        guard let uniqueID else { return false }
        return seen.contains(uniqueID)
    }

    public mutating func record(_ uniqueID: String) {
        guard !seen.contains(uniqueID) else { return }
        if ring.count < capacity {
            ring.append(uniqueID)
        } else {
            seen.remove(ring[next])
            ring[next] = uniqueID
        }
        next = (next + 1) % capacity
        seen.insert(uniqueID)
    }
}
