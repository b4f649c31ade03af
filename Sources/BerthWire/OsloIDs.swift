import Foundation

/// Identifiers in the formats oslo.messaging writes them.
public enum OsloIDs {
    /// `uuid.uuid4().hex`: 32 lower-case hex digits, used for `_msg_id`, `_unique_id` and queue suffixes.
    /// Every reply and event gets one, so it is spelled from the uuid's bytes directly: going through
    /// `uuidString` and Foundation's `replacingOccurrences` cost several percent of a worker's CPU.
    public static func uuid4Hex() -> String {
        let bytes = UUID().uuid
        return withUnsafeBytes(of: bytes) { raw in
            String(unsafeUninitializedCapacity: 32) { out in
                for (index, byte) in raw.enumerated() {
                    out[2 * index] = hexDigits[Int(byte >> 4)]
                    out[2 * index + 1] = hexDigits[Int(byte & 0x0F)]
                }
                return 32
            }
        }
    }

    /// `str(uuid.uuid4())`: lower-case with dashes, used for a notification's `message_id`.
    public static func uuid4() -> String {
        UUID().uuidString.lowercased()
    }

    /// Name of a client's reply queue, as oslo names it.
    public static func replyQueueName() -> String {
        "reply_" + uuid4Hex()
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
