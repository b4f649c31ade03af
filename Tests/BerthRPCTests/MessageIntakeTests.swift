import BerthJSON
import BerthWire
import Testing

@testable import BerthRPC

/// Every way an RPC delivery can be wrong, decided without a broker.
struct MessageIntakeTests {
    static let dispatcher = RPCDispatcher(endpoints: [
        RPCEndpoint(namespace: nil, version: .oneZero, methods: ["ping", "describe_host"]),
        RPCEndpoint(namespace: "berth.debug", version: .oneZero, methods: ["sleep"]),
    ])

    func intake(maxBytes: Int = 1 << 20) -> MessageIntake {
        MessageIntake(dispatcher: Self.dispatcher, limits: JSONLimits(maxBytes: maxBytes, maxDepth: 32))
    }

    func call(_ method: String, extra: JSONObject = [:], uniqueID: String = OsloIDs.uuid4Hex()) -> [UInt8] {
        var message: JSONObject = [
            "method": .string(method), "args": .object([:]), "version": "1.0", "_msg_id": "m1", "_reply_q": "reply_q1",
            "_timeout": .null, "_unique_id": .string(uniqueID), "_context_request_id": "req-1",
        ]
        for (key, value) in extra { message[key] = value }
        return OsloEnvelope.wrap(message)
    }

    @Test func validCallIsDispatched() {
        let intake = intake()
        let disposition = intake.classify(contentType: "application/json", body: call("ping"), redelivered: false)
        guard case .dispatch(let request, let method) = disposition else {
            Issue.record("expected dispatch, got \(disposition)")
            return
        }
        #expect(method == "ping")
        #expect(request.msgID == "m1")
        #expect(request.context["request_id"] == "req-1")
    }

    @Test func unknownMethodIsRefusedWithNoSuchMethod() {
        let intake = intake()
        let disposition = intake.classify(contentType: "application/json", body: call("nope"), redelivered: false)
        guard case .refuse(_, let failure) = disposition else {
            Issue.record("expected refuse, got \(disposition)")
            return
        }
        #expect(failure.className == "NoSuchMethod")
        #expect(failure.module == "oslo_messaging.rpc.dispatcher")
    }

    @Test func wrongVersionIsRefusedWithUnsupportedVersion() {
        let intake = intake()
        let disposition = intake.classify(
            contentType: "application/json", body: call("ping", extra: ["version": "2.0"]), redelivered: false)
        guard case .refuse(_, let failure) = disposition else {
            Issue.record("expected refuse, got \(disposition)")
            return
        }
        #expect(failure.className == "UnsupportedVersion")
        #expect(failure.message == "Endpoint does not support RPC version 2.0. Attempted method: ping")
    }

    @Test func wrongContentTypeIsDeadLetteredButTheCallerIsAnswered() {
        let intake = intake()
        let disposition = intake.classify(contentType: "text/plain", body: call("ping"), redelivered: false)
        guard case .deadLetter(let reason, let reply) = disposition else {
            Issue.record("expected dead letter, got \(disposition)")
            return
        }
        #expect(reason.contains("text/plain"))
        #expect(reply == ReplyAddress(msgID: "m1", replyQueue: "reply_q1"))
    }

    @Test(arguments: [
        ("not JSON", Array("hello".utf8)),
        ("invalid UTF-8", [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]),
        ("truncated", Array(#"{"oslo.version": "2.0", "oslo.message": "{\"method\""#.utf8)),
        ("envelope 3.0", Array(#"{"oslo.version": "3.0", "oslo.message": "{}"}"#.utf8)),
        ("inner not an object", Array(#"{"oslo.version": "2.0", "oslo.message": "[1, 2]"}"#.utf8)),
        ("deeply nested", Array((String(repeating: "[", count: 50) + String(repeating: "]", count: 50)).utf8)),
        ("no method", Array(#"{"oslo.version": "2.0", "oslo.message": "{\"args\": {}}"}"#.utf8)),
    ])
    func undecodableMessagesAreDeadLettered(name: String, body: [UInt8]) {
        let intake = intake()
        let disposition = intake.classify(contentType: "application/json", body: body, redelivered: false)
        guard case .deadLetter(let reason, _) = disposition else {
            Issue.record("\(name): expected dead letter, got \(disposition)")
            return
        }
        #expect(!reason.isEmpty, "\(name)")
    }

    @Test func oversizedBodyIsDeadLetteredWithoutParsing() {
        let intake = intake(maxBytes: 1024)
        let body = [UInt8](repeating: 0x20, count: 8 << 20)
        let disposition = intake.classify(contentType: "application/json", body: body, redelivered: false)
        guard case .deadLetter(let reason, let reply) = disposition else {
            Issue.record("expected dead letter, got \(disposition)")
            return
        }
        #expect(reason.contains("8388608 bytes"))
        #expect(reply == nil)
    }

    @Test func aCallOverTheLimitIsAnsweredWithTheLimitAndHowToRaiseIt() {
        let address = ReplyAddress(msgID: "m1", replyQueue: "reply_q1")
        let disposition = intake(maxBytes: 1 << 20).refuseOversized(size: 60_000_000, reply: address)
        #expect(
            disposition
                == .deadLetter(
                    reason: "message body is 60000000 bytes; the limit is 1048576 bytes "
                        + "(raise it with berth worker --max-message-bytes)",
                    reply: address))
    }

    @Test func badArgsTypeIsAnsweredAndDeadLettered() {
        let intake = intake()
        let disposition = intake.classify(
            contentType: "application/json", body: call("ping", extra: ["args": "not an object"]), redelivered: false)
        guard case .deadLetter(_, let reply) = disposition else {
            Issue.record("expected dead letter, got \(disposition)")
            return
        }
        #expect(reply?.msgID == "m1")
    }

    @Test func duplicateUniqueIDIsDroppedUnlessRedelivered() {
        let intake = intake()
        let body = call("ping", uniqueID: "u-1")
        guard case .dispatch = intake.classify(contentType: "application/json", body: body, redelivered: false) else {
            Issue.record("first delivery must dispatch")
            return
        }
        #expect(
            intake.classify(contentType: "application/json", body: body, redelivered: false) == .duplicate(uniqueID: "u-1"))
        // A redelivery was never acked, so its caller still waits: run it again (methods are idempotent).
        guard case .dispatch = intake.classify(contentType: "application/json", body: body, redelivered: true) else {
            Issue.record("a redelivered message must dispatch again")
            return
        }
    }

    /// Delivery tasks classify at once, outside any lock but the duplicate filter's: of many copies arriving
    /// together exactly one is dispatched.
    @Test func concurrentCopiesDispatchOnce() async {
        let intake = intake()
        let body = call("ping", uniqueID: "u-concurrent")
        let dispatched = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    if case .dispatch = intake.classify(contentType: "application/json", body: body, redelivered: false) {
                        return true
                    }
                    return false
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(dispatched == 1)
    }
}
