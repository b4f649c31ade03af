import BerthJSON
import Testing

@testable import BerthWire

@Suite("RPC requests")
struct RPCRequestTests {
    static let requestCaptures = [
        "rpc_call_request.json", "rpc_call_request_any_server.json", "rpc_call_request_call_monitor.json",
        "rpc_call_request_namespace.json", "rpc_call_request_unroutable.json", "rpc_call_request_version_2_0.json",
        "rpc_cast_topic.json", "rpc_fanout_cast.json",
    ]

    static let expectedContext: JSONObject = [
        "user": "u-1234", "project_id": "p-5678", "system_scope": nil, "project": "p-5678", "domain": nil,
        "user_domain": nil, "project_domain": nil, "is_admin": false, "read_only": false, "show_deleted": false,
        "auth_token": nil, "request_id": "req-11111111-2222-3333-4444-555555555555",
        "global_request_id": "req-gggggggg-2222-3333-4444-555555555555", "resource_uuid": nil,
        "roles": ["member", "reader"], "user_identity": "u-1234 p-5678 - - -", "is_admin_project": true,
    ]

    @Test("captured requests decode with every field and the whole context", arguments: requestCaptures)
    func decodeCapture(name: String) throws {
        let inner = try OsloEnvelope.unwrap(try Fixture.bodyRaw(name))
        let request = try RPCRequest.decode(inner)
        #expect(request.method == inner["method"]?.stringValue)
        #expect(.object(request.args) == inner["args"])
        #expect(request.namespace == inner["namespace"]?.stringValue)
        #expect(request.version.description == inner["version"]?.stringValue ?? "1.0")
        #expect(request.msgID == inner["_msg_id"]?.stringValue)
        #expect(request.replyQueue == inner["_reply_q"]?.stringValue)
        #expect(request.uniqueID == inner["_unique_id"]?.stringValue)
        #expect(request.isCall == (inner["_msg_id"] != nil))
        #expect(request.context == Self.expectedContext)
        #expect(request.context.keys == Self.expectedContext.keys)
        // Re-encoding gives back the captured dict, key for key and in oslo's order.
        #expect(request.encode() == inner)
        #expect(request.encode().keys == inner.keys)
    }

    @Test("the call capture in detail")
    func callDetail() throws {
        let request = try RPCRequest.decode(try OsloEnvelope.unwrap(try Fixture.bodyRaw("rpc_call_request.json")))
        #expect(request.method == "boot_instance")
        #expect(request.args["instance"]?["flavor"]?["ram_mb"] == 2048)
        #expect(request.requestedVersion == RPCVersion(major: 1, minor: 0))
        #expect(request.msgID == "c5da5edb1a54420d8d27cee75739f67f")
        #expect(request.replyQueue == "reply_c21836d68e964c46be1ad8c39dbef13b")
        #expect(request.callMonitorTimeout == nil)
        #expect(request.uniqueID == "c154f00539ad46cabd63572dd6c84304")
        #expect(request.isCall)
    }

    @Test("casts and fanouts are not calls")
    func casts() throws {
        for name in ["rpc_cast_topic.json", "rpc_fanout_cast.json"] {
            let request = try RPCRequest.decode(try OsloEnvelope.unwrap(try Fixture.bodyRaw(name)))
            #expect(!request.isCall)
            #expect(request.method == "note")
            #expect(request.replyQueue == nil)
            #expect(RPCRequest.replyAddress(of: request.encode()) == nil)
        }
    }

    @Test("call monitor and namespace captures")
    func monitorAndNamespace() throws {
        let monitor = try RPCRequest.decode(
            try OsloEnvelope.unwrap(try Fixture.bodyRaw("rpc_call_request_call_monitor.json")))
        #expect(monitor.callMonitorTimeout == 2)
        #expect(monitor.args == ["seconds": 3])
        let namespaced = try RPCRequest.decode(
            try OsloEnvelope.unwrap(try Fixture.bodyRaw("rpc_call_request_namespace.json")))
        #expect(namespaced.namespace == "other")
        #expect(namespaced.encode().keys.prefix(4) == ["method", "args", "namespace", "version"])
    }

    @Test("absent args and version take oslo's defaults")
    func defaults() throws {
        let request = try RPCRequest.decode(["method": "ping"])
        #expect(request.args.isEmpty)
        #expect(request.version == .oneZero)
        #expect(request.requestedVersion == nil)
        #expect(request.encode().keys == ["method", "args"])
    }

    @Test("an empty namespace is kept and fails routing as in oslo")
    func emptyNamespace() throws {
        let request = try RPCRequest.decode(["method": "ping", "namespace": ""])
        #expect(request.namespace == "")
        let route = RPCDispatcher(endpoints: [RPCEndpoint(methods: ["ping"])]).route(request)
        #expect(route == .fail(.unsupportedVersion(.oneZero, method: "ping")))
    }

    @Test("a float _timeout is truncated like Python's int()")
    func floatTimeout() throws {
        let request = try RPCRequest.decode(["method": "m", "_msg_id": "a", "_reply_q": "q", "_timeout": 2.9])
        #expect(request.callMonitorTimeout == 2)
    }

    struct Invalid: CustomTestStringConvertible, Sendable {
        var label: String
        var message: JSONObject
        var code: WireError.Code
        var mentions: String
        var replyable: Bool
        var testDescription: String { label }
    }

    static let call: JSONObject = ["_msg_id": "m1", "_reply_q": "reply_1"]
    static func with(_ base: JSONObject, _ extra: JSONObject) -> JSONObject {
        var merged = base
        for (key, value) in extra { merged[key] = value }
        return merged
    }

    static let invalid: [Invalid] = [
        Invalid(label: "no method", message: call, code: .missingField, mentions: "'method'", replyable: true),
        Invalid(
            label: "method not a string", message: with(call, ["method": 5]), code: .badField,
            mentions: "'method' is a JSON integer", replyable: true),
        Invalid(
            label: "empty method", message: with(call, ["method": ""]), code: .badField, mentions: "'method' is empty",
            replyable: true),
        Invalid(
            label: "method too long", message: with(call, ["method": .string(String(repeating: "m", count: 256))]),
            code: .badField, mentions: "limit is 255", replyable: true),
        Invalid(
            label: "args a list", message: with(call, ["method": "m", "args": [1]]), code: .badField,
            mentions: "'args' is a JSON array", replyable: true),
        Invalid(
            label: "namespace a number", message: with(call, ["method": "m", "namespace": 1]), code: .badField,
            mentions: "'namespace'", replyable: true),
        Invalid(
            label: "bad version", message: with(call, ["method": "m", "version": "one"]), code: .badField,
            mentions: "\"X.Y\"", replyable: true),
        Invalid(
            label: "version a number", message: with(call, ["method": "m", "version": 1.0]), code: .badField,
            mentions: "'version' is a JSON number", replyable: true),
        Invalid(
            label: "_timeout a string", message: with(call, ["method": "m", "_timeout": "5"]), code: .badField,
            mentions: "'_timeout'", replyable: true),
        Invalid(
            label: "_unique_id too long",
            message: with(call, ["method": "m", "_unique_id": .string(String(repeating: "u", count: 65))]),
            code: .badField, mentions: "limit is 64", replyable: true),
        Invalid(
            label: "_msg_id without _reply_q", message: ["method": "m", "_msg_id": "m1"], code: .missingField,
            mentions: "'_reply_q'", replyable: false),
        Invalid(
            label: "_reply_q too long",
            message: ["method": "m", "_msg_id": "m1", "_reply_q": .string(String(repeating: "q", count: 256))],
            code: .badField, mentions: "'_reply_q'", replyable: false),
        Invalid(
            label: "_msg_id too long",
            message: ["method": "m", "_msg_id": .string(String(repeating: "i", count: 65)), "_reply_q": "q"],
            code: .badField, mentions: "'_msg_id'", replyable: false),
        Invalid(
            label: "_msg_id a number", message: ["method": "m", "_msg_id": 7, "_reply_q": "q"], code: .badField,
            mentions: "'_msg_id' is a JSON integer", replyable: false),
    ]

    @Test("invalid requests are refused; the reply address survives when it is itself valid", arguments: invalid)
    func invalidRequest(_ case_: Invalid) {
        #expect {
            _ = try RPCRequest.decode(case_.message)
        } throws: { error in
            guard let error = error as? WireError else { return false }
            return error.code == case_.code && error.message.contains(case_.mentions)
        }
        let address = RPCRequest.replyAddress(of: case_.message)
        #expect((address != nil) == case_.replyable)
        if case_.replyable {
            #expect(address?.msgID == "m1")
            #expect(address?.replyQueue == "reply_1")
        }
    }

    @Test("encode writes a call in oslo's key order, _timeout null when unset")
    func encodeCall() {
        let request = RPCRequest(
            method: "boot_instance", args: ["instance": ["uuid": "i-1"]], namespace: nil,
            version: RPCVersion(major: 1, minor: 0), msgID: "abc", replyQueue: "reply_x", callMonitorTimeout: nil,
            uniqueID: "u", context: ["request_id": "req-1", "roles": ["member"]])
        let message = request.encode()
        #expect(
            message.keys == [
                "method", "args", "version", "_msg_id", "_reply_q", "_timeout", "_unique_id", "_context_request_id",
                "_context_roles",
            ])
        #expect(message["_timeout"] == .null)
        #expect(message["version"] == "1.0")
    }
}
