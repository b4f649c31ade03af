import Glibc

/// Finds a call's reply address (`_msg_id`, `_reply_q`) in a message body too large to keep, as the body
/// streams past a frame at a time, in constant memory.
///
/// A refused call must still get its failure reply, or a stock oslo caller waits out its whole timeout. The
/// address cannot be looked for in a prefix alone: an oslo `RPCClient` writes `method` and `args` first and
/// `_msg_id`, `_reply_q` after them, so in an oversized call they sit behind megabytes of arguments. So every
/// byte is followed, by two tokenizers that track only what the address needs: the envelope's top level, whose
/// `oslo.message` string is decoded on the fly into the second, which follows the message dict's top level.
/// A legacy (1.0) body, the message dict without an envelope, is read by the first alone.
///
/// Nothing here can trap or grow: hostile bytes at worst end the scan early, without an address.
public struct OsloEnvelopeScanner: Sendable {
    private static let addressKeys: [[UInt8]] = [Array("_msg_id".utf8), Array("_reply_q".utf8)]
    private var envelope = TopLevelTracker(captured: addressKeys, streamed: Array(OsloEnvelope.messageKey.utf8))
    private var message = TopLevelTracker(captured: addressKeys, streamed: nil)

    public init() {}

    /// True once the address is found or the body cannot hold one, so the rest need not be looked at.
    public var isFinished: Bool {
        envelope.isFinished || message.isFinished || replyAddress != nil
    }

    /// The reply address, when the body so far holds a sane one (an id of at most 64 characters and a queue
    /// name of at most 255 bytes, printable ASCII, as `RPCRequest` accepts them).
    public var replyAddress: (msgID: String, replyQueue: String)? {
        Self.address(message) ?? Self.address(envelope)
    }

    /// Follows the next bytes of the body. (Whether the address is complete is left to `isFinished`, asked
    /// between chunks: asking per byte would cost more than the scan.)
    public mutating func scan(_ bytes: UnsafeRawBufferPointer) {
        var index = bytes.startIndex
        var skipper = StringSkipper(bytes)
        while index < bytes.endIndex, !envelope.isFinished, !message.isFinished {
            // The bulk of a big body is the inside of some string, where only '\' and '"' mean anything.
            if envelope.isSkippingString || (envelope.isStreamingString && message.isSkippingString) {
                index = skipper.nextSpecial(from: index)
                guard index < bytes.endIndex else { return }
            }
            if let decoded = envelope.feed(bytes[index]) { message.feed(decoded) }
            index += 1
        }
    }

    private static func address(_ tracker: TopLevelTracker) -> (msgID: String, replyQueue: String)? {
        guard let msgID = tracker.values[0], let replyQueue = tracker.values[1],
            msgID.count <= WireLimits.maxIDCharacters, replyQueue.count <= WireLimits.maxQueueNameBytes
        else { return nil }
        return (String(decoding: msgID, as: UTF8.self), String(decoding: replyQueue, as: UTF8.self))
    }
}

/// Finds the next '\' or '"' in a buffer with `memchr`, remembering where each was last found so that a
/// buffer dense with one of them is still scanned once, not once per occurrence.
private struct StringSkipper {
    private let bytes: UnsafeRawBufferPointer
    private var nextBackslash = -1
    private var nextQuote = -1

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    mutating func nextSpecial(from index: Int) -> Int {
        if nextBackslash < index { nextBackslash = find(UInt8(ascii: "\\"), from: index) }
        if nextQuote < index { nextQuote = find(UInt8(ascii: "\""), from: index) }
        return min(nextBackslash, nextQuote)
    }

    private func find(_ byte: UInt8, from index: Int) -> Int {
        guard index < bytes.count, let base = bytes.baseAddress else { return bytes.count }
        guard let found = memchr(base + index, Int32(byte), bytes.count - index) else { return bytes.count }
        return base.distance(to: UnsafeRawPointer(found))
    }
}

/// Follows the top level of one JSON object byte by byte: captures the string values of some keys (decoded,
/// printable ASCII, at most 255 bytes, else dropped) and passes on the decoded bytes of one key's string value.
/// It checks only what it needs; anything that cannot be JSON ends it.
struct TopLevelTracker: Sendable {
    private enum Role: Sendable {
        case key
        case captured(Int)
        case streamed
        case skipped
    }

    private enum Escape: Sendable {
        case none
        case backslash
        case unicode(digits: Int, value: UInt32)
    }

    private static let maximumDepth = 4096
    private static let maximumValueBytes = 255

    private let captured: [[UInt8]]
    private let streamed: [UInt8]?
    /// The captured values, in the order of `captured`; nil while absent, or when the last one was unusable.
    private(set) var values: [[UInt8]?]
    private(set) var isFinished = false

    private var depth = 0
    private var inString = false
    private var escape = Escape.none
    private var expectingKey = false
    private var role = Role.skipped
    private var key: [UInt8] = []
    /// The key whose value comes next, once its ':' is seen; nil when the key is not one we follow.
    private var pendingKey: [UInt8]?
    private var value: [UInt8] = []
    private var valueUsable = true

    init(captured: [[UInt8]], streamed: [UInt8]?) {
        self.captured = captured
        self.streamed = streamed
        self.values = Array(repeating: nil, count: captured.count)
        key.reserveCapacity(Self.maximumValueBytes)
    }

    /// Inside a string whose bytes matter to nobody, with no escape under way.
    var isSkippingString: Bool {
        guard inString, case .none = escape, case .skipped = role else { return false }
        return true
    }

    /// Inside the streamed string, with no escape under way (so raw bytes pass on as they are).
    var isStreamingString: Bool {
        guard inString, case .none = escape, case .streamed = role else { return false }
        return true
    }

    /// Takes the next byte; returns it decoded when it belongs to the streamed string's value.
    @discardableResult
    mutating func feed(_ byte: UInt8) -> UInt8? {
        guard !isFinished else { return nil }
        if inString { return feedString(byte) }
        switch byte {
        case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
            break
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth > 0 || byte == UInt8(ascii: "{") else { return finish() }
            guard depth < Self.maximumDepth else { return finish() }
            depth += 1
            expectingKey = depth == 1
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            depth -= 1
            if depth <= 0 { return finish() }
        case UInt8(ascii: ","):
            if depth == 1 { expectingKey = true }
        case UInt8(ascii: ":"):
            if depth == 1 { expectingKey = false }
        case UInt8(ascii: "\""):
            guard depth > 0 else { return finish() }
            startString()
        default:
            // Numbers, true, false, null: a key's value that is not a string is no value we follow.
            guard depth > 0 else { return finish() }
            if depth == 1 { pendingKey = nil }
        }
        return nil
    }

    private mutating func startString() {
        inString = true
        escape = .none
        if depth > 1 {
            role = .skipped
        } else if expectingKey {
            role = .key
            key.removeAll(keepingCapacity: true)
        } else if let pendingKey, let index = captured.firstIndex(of: pendingKey) {
            role = .captured(index)
            value.removeAll(keepingCapacity: true)
            valueUsable = true
        } else if let pendingKey, pendingKey == streamed {
            role = .streamed
        } else {
            role = .skipped
        }
    }

    private mutating func feedString(_ byte: UInt8) -> UInt8? {
        switch escape {
        case .none:
            if byte == UInt8(ascii: "\\") {
                escape = .backslash
                return nil
            }
            if byte == UInt8(ascii: "\"") {
                endString()
                return nil
            }
            return take(byte)
        case .backslash:
            escape = .none
            let decoded: UInt8
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded = byte
            case UInt8(ascii: "b"): decoded = 0x08
            case UInt8(ascii: "f"): decoded = 0x0C
            case UInt8(ascii: "n"): decoded = 0x0A
            case UInt8(ascii: "r"): decoded = 0x0D
            case UInt8(ascii: "t"): decoded = 0x09
            case UInt8(ascii: "u"):
                escape = .unicode(digits: 0, value: 0)
                return nil
            default: return finish()
            }
            return take(decoded)
        case .unicode(let digits, let value):
            guard let digit = Self.hexValue(byte) else { return finish() }
            let next = value << 4 | UInt32(digit)
            guard digits == 3 else {
                escape = .unicode(digits: digits + 1, value: next)
                return nil
            }
            escape = .none
            // Only ASCII matters to the structure of the inner JSON; anything else stands in as one
            // non-ASCII byte, which no captured value may contain.
            return take(next < 0x80 ? UInt8(next) : 0x80)
        }
    }

    private mutating func take(_ byte: UInt8) -> UInt8? {
        switch role {
        case .key:
            if key.count <= Self.maximumValueBytes { key.append(byte) }
        case .captured:
            guard valueUsable else { return nil }
            if value.count < Self.maximumValueBytes, (0x20...0x7E).contains(byte) {
                value.append(byte)
            } else {
                valueUsable = false
            }
        case .streamed:
            return byte
        case .skipped:
            break
        }
        return nil
    }

    private mutating func endString() {
        inString = false
        switch role {
        case .key:
            pendingKey = captured.contains(key) || key == streamed ? key : nil
        case .captured(let index):
            values[index] = valueUsable && !value.isEmpty ? value : nil
            pendingKey = nil
        case .streamed:
            pendingKey = nil
        case .skipped:
            if depth == 1 { pendingKey = nil }
        }
        role = .skipped
    }

    private mutating func finish() -> UInt8? {
        isFinished = true
        return nil
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
