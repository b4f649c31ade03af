import Foundation

/// Identifiers in the formats oslo.messaging writes them.
public enum OsloIDs {
    /// `uuid.uuid4().hex`: 32 lower-case hex digits, used for `_msg_id`, `_unique_id` and queue suffixes.
    public static func uuid4Hex() -> String {
        UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
    }

    /// `str(uuid.uuid4())`: lower-case with dashes, used for a notification's `message_id`.
    public static func uuid4() -> String {
        UUID().uuidString.lowercased()
    }

    /// Name of a client's reply queue, as oslo names it.
    public static func replyQueueName() -> String {
        "reply_" + uuid4Hex()
    }
}
