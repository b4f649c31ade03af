import BerthJSON
import Testing

@testable import BerthWire

@Suite("Dispatch")
struct DispatchTests {
    /// The captures' server: one endpoint, namespace none, version 1.0.
    static let dispatcher = RPCDispatcher(endpoints: [
        RPCEndpoint(methods: ["boot_instance", "note", "slow", "fail", "_private"])
    ])

    static func request(_ name: String) throws -> RPCRequest {
        try RPCRequest.decode(try OsloEnvelope.unwrap(try Fixture.bodyRaw(name)))
    }

    static func capturedFailure(_ name: String) throws -> RPCFailure {
        let reply = try RPCReply.decode(try OsloEnvelope.unwrap(try Fixture.bodyRaw(name)))
        return try #require(reply.failure)
    }

    @Test(
        "version and namespace mismatches fail exactly as oslo's dispatcher did",
        arguments: [
            ("rpc_call_request_version_2_0.json", "rpc_reply_failure_unsupported_version.json"),
            ("rpc_call_request_namespace.json", "rpc_reply_failure_namespace_mismatch.json"),
        ])
    func unsupportedVersion(requestName: String, replyName: String) throws {
        let request = try Self.request(requestName)
        let captured = try Self.capturedFailure(replyName)
        guard case .fail(let failure) = Self.dispatcher.route(request) else {
            Issue.record("expected a failure for \(requestName)")
            return
        }
        #expect(failure.className == captured.className)
        #expect(failure.module == captured.module)
        #expect(failure.message == captured.message)
        #expect(failure.args == captured.args)
        #expect(failure.kwargs == captured.kwargs)
        #expect(failure.traceback.last == captured.traceback.last)
        // And the reply built from it has the captured reply's shape.
        let reply = RPCReply.failure(failure, msgID: try #require(request.msgID))
        let capturedReply = try OsloEnvelope.unwrap(try Fixture.bodyRaw(replyName))
        #expect(reply.keys == capturedReply.keys)
        #expect(reply["_msg_id"] == capturedReply["_msg_id"])
    }

    @Test("an unknown method is NoSuchMethod with oslo's wording")
    func noSuchMethod() throws {
        let captured = try Self.capturedFailure("rpc_reply_failure_no_such_method.json")
        let request = RPCRequest(method: "no_such_method", msgID: "m", replyQueue: "q")
        #expect(Self.dispatcher.route(request) == .fail(.noSuchMethod("no_such_method")))
        guard case .fail(let failure) = Self.dispatcher.route(request) else { return }
        #expect(failure.className == captured.className)
        #expect(failure.module == captured.module)
        #expect(failure.message == captured.message)
        #expect(failure.args == captured.args)
        #expect(failure.kwargs == captured.kwargs)
        #expect(failure.traceback.last == captured.traceback.last)
    }

    @Test("captured calls and casts to existing methods dispatch")
    func dispatches() throws {
        for name in [
            "rpc_call_request.json", "rpc_call_request_any_server.json", "rpc_call_request_call_monitor.json",
            "rpc_cast_topic.json", "rpc_fanout_cast.json",
        ] {
            let request = try Self.request(name)
            #expect(Self.dispatcher.route(request) == .dispatch(request.method), "\(name)")
        }
    }

    @Test("methods starting with an underscore are never dispatched")
    func privateMethod() {
        let route = Self.dispatcher.route(RPCRequest(method: "_private"))
        #expect(route == .fail(.noSuchMethod("_private")))
    }

    @Test("the first endpoint with the method wins; a later namespace can serve what the first lacks")
    func severalEndpoints() {
        let dispatcher = RPCDispatcher(endpoints: [
            RPCEndpoint(version: RPCVersion(major: 1, minor: 3), methods: ["boot_instance"]),
            RPCEndpoint(namespace: "baseapi", version: RPCVersion(major: 1, minor: 1), methods: ["ping"]),
        ])
        #expect(
            dispatcher.route(RPCRequest(method: "boot_instance", version: .init(major: 1, minor: 2)))
                == .dispatch(
                    "boot_instance"))
        #expect(dispatcher.route(RPCRequest(method: "ping", namespace: "baseapi")) == .dispatch("ping"))
        #expect(
            dispatcher.route(RPCRequest(method: "ping"))
                == .fail(.noSuchMethod("ping")))
        #expect(
            dispatcher.route(RPCRequest(method: "ping", namespace: "baseapi", version: .init(major: 1, minor: 2)))
                == .fail(.unsupportedVersion(RPCVersion(major: 1, minor: 2), method: "ping")))
        #expect(dispatcher.endpoint(for: RPCRequest(method: "ping", namespace: "baseapi"))?.namespace == "baseapi")
    }

    struct Compatibility: Sendable, CustomTestStringConvertible {
        var endpoint: String
        var requested: String
        var compatible: Bool
        var testDescription: String { "endpoint \(endpoint) / request \(requested) → \(compatible)" }
    }

    @Test(
        "oslo's version compatibility rule",
        arguments: [
            Compatibility(endpoint: "1.0", requested: "1.0", compatible: true),
            Compatibility(endpoint: "1.0", requested: "1.5", compatible: false),
            Compatibility(endpoint: "1.0", requested: "2.0", compatible: false),
            Compatibility(endpoint: "2.0", requested: "1.0", compatible: false),
            Compatibility(endpoint: "1.5", requested: "1.2", compatible: true),
            Compatibility(endpoint: "1.5", requested: "1.5.1", compatible: false),
            Compatibility(endpoint: "1.5.2", requested: "1.5.1", compatible: true),
            Compatibility(endpoint: "1.5.2", requested: "1.5.2", compatible: true),
            Compatibility(endpoint: "1.5.2", requested: "1.5.3", compatible: false),
            Compatibility(endpoint: "1.5", requested: "1.4.9", compatible: true),
            Compatibility(endpoint: "1.5.0", requested: "1.5", compatible: true),
        ])
    func compatibility(_ row: Compatibility) throws {
        let endpoint = try #require(RPCVersion(row.endpoint))
        let requested = try #require(RPCVersion(row.requested))
        #expect(endpoint.accepts(requested) == row.compatible)
    }

    @Test("version parsing and formatting", arguments: ["1.0", "2.13", "1.5.2", "0.0"])
    func versionRoundTrip(text: String) throws {
        #expect(try #require(RPCVersion(text)).description == text)
    }

    @Test("malformed versions are rejected", arguments: ["", "1", "1.", ".1", "1.0.0.0", "a.b", "-1.0", "1.0 ", "１.0"])
    func badVersion(text: String) {
        #expect(RPCVersion(text) == nil)
    }
}
