import BerthJSON
import Foundation

/// A notification in oslo's `messagingv2` format (the dict inside the envelope; `messaging` v1 sends the same
/// dict bare).
public struct OsloNotification: Sendable, Hashable {
    public enum Priority: String, Sendable, Hashable, CaseIterable {
        case audit, debug, info, warn, error, critical, sample

        /// The body's `priority` value.
        public var wireValue: String { rawValue.uppercased() }
        /// The routing-key suffix and queue-name suffix.
        public var routingSuffix: String { rawValue }

        /// Reads a body's priority case-insensitively, as oslo's listener does; "warning" is oslo's alias.
        public init?(wireValue: String) {
            let lowered = wireValue.lowercased()
            if lowered == "warning" {
                self = .warn
            } else if let priority = Priority(rawValue: lowered) {
                self = priority
            } else {
                return nil
            }
        }
    }

    /// uuid4 with dashes, lower case.
    public var messageID: String
    public var publisherID: String
    public var eventType: String
    public var priority: Priority
    public var payload: JSONValue
    public var timestamp: Date
    /// uuid4 hex, no dashes.
    public var uniqueID: String?
    /// Written as `_context_<key>`. An empty context writes no keys, which is also what oslo sends for a plain
    /// dict context.
    public var context: JSONObject

    public init(
        messageID: String = OsloIDs.uuid4(), publisherID: String, eventType: String, priority: Priority,
        payload: JSONValue, timestamp: Date = Date(), uniqueID: String? = OsloIDs.uuid4Hex(), context: JSONObject = [:]
    ) {
        self.messageID = messageID
        self.publisherID = publisherID
        self.eventType = eventType
        self.priority = priority
        self.payload = payload
        self.timestamp = timestamp
        self.uniqueID = uniqueID
        self.context = context
    }

    /// The routing key (and default queue name) for `topic`, e.g. "notifications.info".
    public func routingKey(topic: String) -> String { "\(topic).\(priority.routingSuffix)" }

    /// The dict an oslo `Notifier` writes, in its key order.
    public func encode() -> JSONObject {
        var message: JSONObject = [
            "message_id": .string(messageID),
            "publisher_id": .string(publisherID),
            "event_type": .string(eventType),
            "priority": .string(priority.wireValue),
            "payload": payload,
            "timestamp": .string(PythonDateTime.format(timestamp)),
        ]
        if let uniqueID { message["_unique_id"] = .string(uniqueID) }
        for (key, value) in context { message[RPCRequest.contextPrefix + key] = value }
        return message
    }

    /// Decodes a notification dict (listener side). Dispatch follows the body's priority, not the routing key.
    public static func decode(_ message: JSONObject) throws(WireError) -> OsloNotification {
        func required(_ key: String) throws(WireError) -> String {
            guard let value = message[key] else {
                throw WireError(.missingField, "notification has no '\(key)'")
            }
            return try requireString(value, field: key, maxBytes: 255)
        }
        let messageID = try required("message_id")
        let publisherID = try required("publisher_id")
        let eventType = try required("event_type")
        let priorityText = try required("priority")
        guard let priority = Priority(wireValue: priorityText) else {
            throw WireError(
                .badField,
                "notification priority '\(priorityText)' is not one of "
                    + Priority.allCases.map(\.wireValue).joined(separator: ", "))
        }
        let timestampText = try required("timestamp")
        guard let timestamp = PythonDateTime.parse(timestampText) else {
            throw WireError(
                .badField,
                "notification timestamp '\(timestampText)' is not in Python's str(datetime) form "
                    + "'YYYY-MM-DD HH:MM:SS[.ffffff]'")
        }
        let uniqueID = try optionalString(
            message["_unique_id"], field: "_unique_id", maxCharacters: WireLimits.maxIDCharacters)
        var context = JSONObject()
        for (key, value) in message where key.hasPrefix(RPCRequest.contextPrefix) {
            context[String(key.dropFirst(RPCRequest.contextPrefix.count))] = value
        }
        return OsloNotification(
            messageID: messageID, publisherID: publisherID, eventType: eventType, priority: priority,
            payload: message["payload"] ?? .null, timestamp: timestamp, uniqueID: uniqueID, context: context)
    }
}

/// Python's `str(datetime)` for a naive UTC datetime: "2026-11-22 13:13:38.678233", and without the
/// fraction when the microseconds are 0. Computed by hand so no locale or calendar setting can change it.
public enum PythonDateTime {
    public static func format(_ date: Date) -> String {
        let totalMicros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        let micros = Int64(totalMicros)
        var seconds = micros / 1_000_000
        var fraction = micros % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = civil(fromDays: days)
        var text =
            "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2)) "
            + "\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
        if fraction != 0 { text += "." + pad(fraction, 6) }
        return text
    }

    /// Parses "YYYY-MM-DD HH:MM:SS" with an optional ".f" to ".ffffff" fraction, as UTC.
    public static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count == 19 || (bytes.count >= 21 && bytes.count <= 26) else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for index in range {
                let byte = bytes[index]
                guard byte >= 0x30, byte <= 0x39 else { return nil }
                value = value * 10 + Int64(byte - 0x30)
            }
            return value
        }
        guard bytes[4] == 0x2D, bytes[7] == 0x2D, bytes[10] == 0x20 || bytes[10] == 0x54, bytes[13] == 0x3A,
            bytes[16] == 0x3A,
            let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 60
        else { return nil }
        var micros: Int64 = 0
        if bytes.count > 19 {
            guard bytes[19] == 0x2E, let fraction = number(20..<bytes.count) else { return nil }
            var scale: Int64 = 1
            for _ in 0..<(6 - (bytes.count - 20)) { scale *= 10 }
            micros = fraction * scale
        }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second
        return Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    // Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, days since 1970-01-01).
    private static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
