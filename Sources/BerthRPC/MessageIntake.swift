import BerthAMQP
import BerthJSON
import BerthWire
import Synchronization

/// What to do with one delivery on an RPC queue, decided before any work starts. Pure, so every way a
/// message can be wrong is tested without a broker.
public enum MessageDisposition: Sendable, Equatable {
    /// A valid request for a method we serve.
    case dispatch(RPCRequest, method: String)
    /// A valid request the dispatcher refuses (NoSuchMethod, UnsupportedVersion): answer it and ack.
    /// A cast has nobody to answer, so only the log sees it, as with oslo.
    case refuse(RPCRequest, RPCFailure)
    /// A message oslo's `_unique_id` filter has already seen on this worker: ack and drop, as oslo does.
    case duplicate(uniqueID: String)
    /// Cannot be decoded or validated: dead-letter it with the reason, and when it was a call whose reply
    /// address could still be read, answer the caller with an `InvalidRequest` failure.
    case deadLetter(reason: String, reply: ReplyAddress?)
}

public struct ReplyAddress: Sendable, Equatable {
    public var msgID: String
    public var replyQueue: String

    public init(msgID: String, replyQueue: String) {
        self.msgID = msgID
        self.replyQueue = replyQueue
    }

    init(_ address: (msgID: String, replyQueue: String)) {
        self.init(msgID: address.msgID, replyQueue: address.replyQueue)
    }
}

/// The intake rules of an RPC server: content type, size, envelope, request fields, duplicates, dispatch.
///
/// Called by every delivery task at once, so only the duplicate filter is shared state, behind its own lock:
/// decoding the envelope and the request (most of the work) runs outside it. (One lock around the whole
/// classification was contended at K = 32: ~10 % of a ping's CPU in the lock's slow path, issue 23.)
public final class MessageIntake: Sendable {
    public let dispatcher: RPCDispatcher
    public let limits: JSONLimits
    private let duplicates: Mutex<DuplicateFilter>

    public init(dispatcher: RPCDispatcher, limits: JSONLimits, duplicateWindow: Int = 16) {
        self.dispatcher = dispatcher
        self.limits = limits
        self.duplicates = Mutex(DuplicateFilter(capacity: duplicateWindow))
    }

    /// - Parameter redelivered: the broker's flag. A redelivered message is never a duplicate: its first
    ///   attempt was not acked, so the caller is still waiting for the answer.
    public func classify(contentType: String?, body: [UInt8], redelivered: Bool) -> MessageDisposition {
        guard body.count <= limits.maxBytes else {
            return refuseOversized(size: UInt64(body.count), reply: nil)
        }
        let message: JSONObject
        do {
            message = try OsloEnvelope.unwrap(body, limits: limits)
        } catch {
            return .deadLetter(reason: error.message, reply: nil)
        }
        let address = RPCRequest.replyAddress(of: message).map(ReplyAddress.init)
        if let problem = WireError.contentType(contentType) {
            return .deadLetter(reason: problem.message, reply: address)
        }
        let request: RPCRequest
        do {
            request = try RPCRequest.decode(message)
        } catch {
            return .deadLetter(reason: error.message, reply: address)
        }
        if let uniqueID = request.uniqueID {
            let seen = duplicates.withLock { filter in
                // Check and record in one hold of the lock: two copies arriving at once, one is the duplicate.
                if !redelivered && filter.contains(uniqueID) { return true }
                filter.record(uniqueID)
                return false
            }
            if seen { return .duplicate(uniqueID: uniqueID) }
        }
        switch dispatcher.route(request) {
        case .dispatch(let method): return .dispatch(request, method: method)
        case .fail(let failure): return .refuse(request, failure)
        }
    }

    /// A body over the limit, which the broker client read and dropped without keeping it: dead-letter it,
    /// and answer the caller when the scan of the passing bytes found where to.
    public func refuseOversized(size: UInt64, reply: ReplyAddress?) -> MessageDisposition {
        .deadLetter(
            reason: "message body is \(size) bytes; the limit is \(limits.maxBytes) bytes "
                + "(raise it with berth worker --max-message-bytes)",
            reply: reply)
    }
}

/// The broker client shows the scanner every byte of a body over `--max-message-bytes` as it drops it.
extension OsloEnvelopeScanner: AMQPBodyScanner {}
