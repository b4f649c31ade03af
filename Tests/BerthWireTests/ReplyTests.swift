import BerthJSON
import Testing

@testable import BerthWire

@Suite("Replies, call monitor, duplicates")
struct ReplyTests {
    static func inner(_ name: String) throws -> JSONObject {
        try OsloEnvelope.unwrap(try Fixture.bodyRaw(name))
    }

    /// Same keys in the same order and the same values, except the per-message `_unique_id`.
    static func sameShape(_ built: JSONObject, _ captured: JSONObject) -> Bool {
        var lhs = built
        var rhs = captured
        guard lhs.keys == rhs.keys, lhs["_unique_id"]?.stringValue?.count == 32 else { return false }
        lhs["_unique_id"] = nil
        rhs["_unique_id"] = nil
        return lhs == rhs
    }

    @Test(
        "a success reply has the captured shape",
        arguments: [
            "rpc_reply_success.json", "pika_responder_reply_success.json", "rpc_reply_final_after_heartbeats.json",
        ])
    func success(name: String) throws {
        let captured = try Self.inner(name)
        let msgID = try #require(captured["_msg_id"]?.stringValue)
        let built = RPCReply.result(try #require(captured["result"]), msgID: msgID)
        #expect(Self.sameShape(built, captured))
    }

    @Test(
        "a heartbeat has the captured shape",
        arguments: ["rpc_reply_heartbeat.json", "pika_responder_reply_heartbeat.json"])
    func heartbeat(name: String) throws {
        let captured = try Self.inner(name)
        let built = RPCReply.heartbeat(msgID: try #require(captured["_msg_id"]?.stringValue))
        #expect(Self.sameShape(built, captured))
        #expect(try RPCReply.decode(built).isHeartbeat)
    }

    @Test(
        "failure replies round-trip through the captured failure strings",
        arguments: [
            "rpc_reply_failure_builtin_exception.json", "rpc_reply_failure_namespace_mismatch.json",
            "rpc_reply_failure_no_such_method.json", "rpc_reply_failure_non_allowed_module.json",
            "rpc_reply_failure_unsupported_version.json", "pika_responder_reply_failure.json",
        ])
    func failureRoundTrip(name: String) throws {
        let capture = try Fixture.capture(name)
        let captured = try Self.inner(name)
        let reply = try RPCReply.decode(captured)
        let failure = try #require(reply.failure)
        let parsed = try #require(capture["failure_parsed"]?.objectValue)
        #expect(failure.encode() == parsed)
        #expect(failure.encode().keys == parsed.keys)
        #expect(reply.ending)
        #expect(reply.result == .null)
        let built = RPCReply.failure(failure, msgID: reply.msgID)
        #expect(built.keys == captured.keys)
        #expect(built["result"] == .null)
        // The failure travels as a string that parses back to the same exception.
        let string = try #require(built["failure"]?.stringValue)
        #expect(try RPCFailure.decode(fromJSONString: string) == failure)
    }

    @Test("Berth failures use berth.exceptions and an oslo-shaped traceback without host paths")
    func berthFailure() throws {
        let failure = RPCFailure.berth("ImageNotFound", "image img-9 not found; check the id with `berth images list`")
        let encoded = failure.encode()
        #expect(encoded.keys == ["class", "module", "message", "tb", "args", "kwargs"])
        #expect(encoded["module"] == "berth.exceptions")
        #expect(encoded["args"] == [.string(failure.message)])
        #expect(encoded["kwargs"] == .object([:]))
        #expect(failure.traceback.first == "Traceback (most recent call last):\n")
        #expect(failure.traceback.last == "berth.exceptions.ImageNotFound: \(failure.message)\n")
        #expect(!failure.traceback.joined().contains("/"))
        let reply = RPCReply.failure(failure, msgID: "m1")
        #expect(reply.keys == ["result", "failure", "ending", "_msg_id", "_unique_id"])
        #expect(reply["ending"] == true)
        #expect(RPCFailure.berthClasses.contains("BuildFailed"))
    }

    @Test("a builtin exception's traceback line has no module prefix, like Python's")
    func builtinTraceback() {
        let failure = RPCFailure(className: "ValueError", module: "builtins", message: "bad")
        #expect(failure.traceback.last == "ValueError: bad\n")
    }

    @Test("_Remote suffixes are removed before sending")
    func remoteSuffix() {
        let failure = RPCFailure(className: "NotFound_Remote", module: "nova.exception_Remote", message: "x")
        #expect(failure.encode()["class"] == "NotFound")
        #expect(failure.encode()["module"] == "nova.exception")
    }

    @Test("a minimal failure (class, module, message) decodes")
    func minimalFailure() throws {
        let failure = try RPCFailure.decode(
            fromJSONString: #"{"class": "KeyError", "module": "builtins", "message": "minimal"}"#)
        #expect(failure.className == "KeyError")
        #expect(failure.traceback.isEmpty)
        #expect(failure.args.isEmpty)
        #expect(failure.remoteText == "minimal\n")
    }

    @Test("reply decode tolerates a missing _unique_id and refuses a failure object")
    func replyDecodeEdges() throws {
        let reply = try RPCReply.decode(["result": 1, "failure": nil, "ending": true, "_msg_id": "m"])
        #expect(reply.uniqueID == nil)
        #expect(reply.result == 1)
        #expect(throws: WireError.self) {
            try RPCReply.decode(["result": nil, "failure": ["class": "X"], "ending": true, "_msg_id": "m"])
        }
        #expect(throws: WireError.self) { try RPCReply.decode(["result": 1, "ending": true]) }
    }

    @Test("the call state follows oslo's client: heartbeats, legacy pair, final reply")
    func callState() throws {
        var state = RPCCallState()
        let beat1 = state.receive(try RPCReply.decode(RPCReply.heartbeat(msgID: "m")))
        let beat2 = state.receive(try RPCReply.decode(RPCReply.heartbeat(msgID: "m")))
        let final = state.receive(try RPCReply.decode(RPCReply.result(["slept": 3], msgID: "m")))
        #expect(beat1 == .heartbeat && beat2 == .heartbeat)
        #expect(final == .finished(.success(["slept": 3])))

        var legacy = RPCCallState()
        let first = RPCReply(msgID: "m", result: "R", failure: nil, ending: false, uniqueID: nil)
        let second = RPCReply(msgID: "m", result: nil, failure: nil, ending: true, uniqueID: nil)
        let pending = legacy.receive(first)
        let finished = legacy.receive(second)
        #expect(pending == .pending)
        #expect(finished == .finished(.success("R")))

        var failed = RPCCallState()
        let failure = RPCFailure.berth("BuildFailed", "no space")
        let failedEvent = failed.receive(try RPCReply.decode(RPCReply.failure(failure, msgID: "m")))
        #expect(failedEvent == .finished(.failure(failure)))

        var empty = RPCCallState()
        let emptyEvent = empty.receive(second)
        #expect(emptyEvent == .finished(.success(.null)))
    }

    @Test(
        "call-monitor heartbeat interval is int(_timeout)/2 seconds, none below 1 s",
        arguments: [
            (nil, nil), (0, nil), (1, nil), (-4, nil), (2, Duration.seconds(1)), (3, Duration.milliseconds(1500)),
            (60, Duration.seconds(30)),
        ] as [(Int?, Duration?)])
    func heartbeatInterval(timeout: Int?, interval: Duration?) {
        #expect(CallMonitor.heartbeatInterval(callMonitorTimeout: timeout) == interval)
    }

    @Test("duplicate filter remembers the last 16 ids")
    func duplicates() {
        var filter = DuplicateFilter()
        var seen: [Bool] = []
        for id in ["n", "n"] { seen.append(filter.isDuplicate(id == "n" ? nil : id)) }
        seen.append(filter.isDuplicate("a"))
        seen.append(filter.isDuplicate("a"))
        #expect(seen == [false, false, false, true])
        var fresh: [Bool] = []
        for index in 0..<15 { fresh.append(filter.isDuplicate("id\(index)")) }
        #expect(fresh.allSatisfy { !$0 })
        // 16 remembered: "a" and id0...id14. id15 evicts "a"; "a" then evicts id0.
        var after: [Bool] = []
        for id in ["a", "id15", "a", "id15"] { after.append(filter.isDuplicate(id)) }
        #expect(after == [true, false, false, true])
        #expect(!filter.contains("id0"))
        #expect(filter.contains("id1"))
    }

    @Test("contains does not record")
    func containsOnly() {
        var filter = DuplicateFilter(capacity: 2)
        #expect(!filter.contains("x"))
        let first = filter.isDuplicate("x")
        filter.record("y")
        filter.record("z")
        #expect(!first)
        #expect(!filter.contains("x"))
        #expect(filter.contains("y") && filter.contains("z"))
    }
}
