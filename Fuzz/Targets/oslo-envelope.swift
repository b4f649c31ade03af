import BerthJSON
import BerthWire

/// AMQP bodies as the worker and its RPC client decode them: the oslo 2.0 envelope (or a legacy message
/// dict), then the message as an RPC request, a reply and a notification. A request that decodes must survive
/// Berth's own encoding: encode, wrap, unwrap and decode give a request that encodes the same. (Not the same
/// request: a cast's `_timeout` is read but, meaning nothing without a reply, not written.)
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let message = try? OsloEnvelope.unwrap(fuzzBytes(data, size)) else { return 0 }
    _ = RPCRequest.replyAddress(of: message)
    _ = try? RPCReply.decode(message)
    _ = try? OsloNotification.decode(message)
    guard let request = try? RPCRequest.decode(message) else { return 0 }
    let again: RPCRequest
    do {
        again = try RPCRequest.decode(OsloEnvelope.unwrap(OsloEnvelope.wrap(request.encode())))
    } catch {
        fuzzViolation("a request Berth encoded does not decode again: \(error)")
    }
    if again.encode() != request.encode() { fuzzViolation("a request decodes differently after Berth encoded it") }
    return 0
}
