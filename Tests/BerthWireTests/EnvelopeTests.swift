import BerthJSON
import Testing

@testable import BerthWire

@Suite("Envelope 2.0")
struct EnvelopeTests {
    static let allCaptures = [
        "rpc_call_request.json", "rpc_call_request_any_server.json", "rpc_call_request_call_monitor.json",
        "rpc_call_request_namespace.json", "rpc_call_request_unroutable.json", "rpc_call_request_version_2_0.json",
        "rpc_cast_topic.json", "rpc_fanout_cast.json", "rpc_reply_success.json", "rpc_reply_heartbeat.json",
        "rpc_reply_final_after_heartbeats.json", "rpc_reply_failure_builtin_exception.json",
        "rpc_reply_failure_namespace_mismatch.json", "rpc_reply_failure_no_such_method.json",
        "rpc_reply_failure_non_allowed_module.json", "rpc_reply_failure_unsupported_version.json",
        "notification_info.json", "notification_error.json", "notification_info_dict_context.json",
        "notification_raw_pika.json", "notification_v1_no_envelope.json", "pika_responder_reply_success.json",
        "pika_responder_reply_failure.json", "pika_responder_reply_heartbeat.json",
    ]

    @Test("every captured body unwraps to the message oslo parsed", arguments: allCaptures)
    func unwrapCaptures(name: String) throws {
        let capture = try Fixture.capture(name)
        let message = try OsloEnvelope.unwrap(try Fixture.bodyRaw(name))
        // Legacy (v1) bodies are the message itself; enveloped ones match the capture's parsed inner dict.
        let expected = capture["body_oslo_message_parsed"]?.objectValue ?? capture["body"]?.objectValue
        #expect(message == expected)
        #expect(message.keys == expected?.keys)
        #expect(WireError.contentType(capture["properties"]?["content_type"]?.stringValue) == nil)
    }

    @Test("wrap writes oslo.version then oslo.message, the inner message as a JSON string")
    func wrapShape() throws {
        let message: JSONObject = ["method": "ping", "args": [:], "_unique_id": "u1"]
        let body = OsloEnvelope.wrap(message)
        let outer = try #require(try JSONCodec.parse(body).objectValue)
        #expect(outer.keys == ["oslo.version", "oslo.message"])
        #expect(outer["oslo.version"] == "2.0")
        let inner = try #require(outer["oslo.message"]?.stringValue)
        let parsed = try #require(try JSONCodec.parse(inner).objectValue)
        #expect(parsed.keys == ["method", "args", "_unique_id"])
        #expect(try OsloEnvelope.unwrap(body) == message)
    }

    @Test("a dict without both envelope keys is a legacy message")
    func legacy() throws {
        let body = Array(#"{"method": "ping", "args": {}, "oslo.version": "2.0"}"#.utf8)
        let message = try OsloEnvelope.unwrap(body)
        #expect(message["method"] == "ping")
        #expect(message["oslo.version"] == "2.0")
    }

    struct BadBody: CustomTestStringConvertible, Sendable {
        var label: String
        var body: [UInt8]
        var code: WireError.Code
        var mentions: String
        var testDescription: String { label }
    }

    static let nested50 = String(repeating: "[", count: 50) + String(repeating: "]", count: 50)
    static let innerNested50 =
        #"{"oslo.version": "2.0", "oslo.message": "{\"a\": "# + nested50 + #"}"}"#

    static let badBodies: [BadBody] = [
        BadBody(
            label: "envelope 3.0", body: Array(#"{"oslo.version": "3.0", "oslo.message": "{}"}"#.utf8),
            code: .unsupportedEnvelope, mentions: "'3.0'"),
        BadBody(
            label: "envelope 2.1", body: Array(#"{"oslo.version": "2.1", "oslo.message": "{}"}"#.utf8),
            code: .unsupportedEnvelope, mentions: "'2.1'"),
        BadBody(
            label: "envelope 2.0.1", body: Array(#"{"oslo.version": "2.0.1", "oslo.message": "{}"}"#.utf8),
            code: .unsupportedEnvelope, mentions: "2.0.1"),
        BadBody(
            label: "envelope 1.0", body: Array(#"{"oslo.version": "1.0", "oslo.message": "{}"}"#.utf8),
            code: .unsupportedEnvelope, mentions: "'1.0'"),
        BadBody(
            label: "version not a string", body: Array(#"{"oslo.version": 2, "oslo.message": "{}"}"#.utf8),
            code: .unsupportedEnvelope, mentions: "integer"),
        BadBody(label: "not JSON", body: Array("hello, world".utf8), code: .notJSON, mentions: "not valid JSON"),
        BadBody(label: "empty body", body: [], code: .notJSON, mentions: "message body"),
        BadBody(
            label: "truncated", body: Array(#"{"oslo.version": "2.0", "oslo.message": "{\"meth"#.utf8),
            code: .notJSON, mentions: "message body"),
        BadBody(
            label: "invalid UTF-8", body: Array(#"{"method": ""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),
            code: .invalidUTF8, mentions: "UTF-8"),
        BadBody(label: "body is an array", body: Array("[1, 2]".utf8), code: .badEnvelope, mentions: "array"),
        BadBody(
            label: "inner not a string", body: Array(#"{"oslo.version": "2.0", "oslo.message": {"method": "x"}}"#.utf8),
            code: .badEnvelope, mentions: "JSON-encoded as a string"),
        BadBody(
            label: "inner not an object", body: Array(#"{"oslo.version": "2.0", "oslo.message": "[1, 2]"}"#.utf8),
            code: .badEnvelope, mentions: "decodes to a JSON array"),
        BadBody(
            label: "inner not JSON", body: Array(#"{"oslo.version": "2.0", "oslo.message": "{method"}"#.utf8),
            code: .notJSON, mentions: "'oslo.message' is not valid JSON"),
        BadBody(label: "50-deep body", body: Array(nested50.utf8), code: .tooDeep, mentions: "nested too deeply"),
        BadBody(
            label: "50-deep inner message", body: Array(innerNested50.utf8), code: .tooDeep,
            mentions: "'oslo.message' is nested too deeply"),
    ]

    @Test("malformed bodies fail with a code and an operator-readable message", arguments: badBodies)
    func badBody(_ bad: BadBody) {
        #expect {
            _ = try OsloEnvelope.unwrap(bad.body)
        } throws: { error in
            guard let error = error as? WireError else { return false }
            return error.code == bad.code && error.message.contains(bad.mentions)
        }
    }

    @Test("bodies over the byte limit are refused before parsing")
    func tooLarge() {
        let body = OsloEnvelope.wrap(["method": "ping", "args": ["blob": .string(String(repeating: "x", count: 2048))]])
        #expect {
            _ = try OsloEnvelope.unwrap(body, limits: JSONLimits(maxBytes: 1024, maxDepth: 32))
        } throws: { error in
            (error as? WireError)?.code == .tooLarge
        }
    }

    @Test(
        "only application/json is accepted",
        arguments: [
            ("application/json", true), ("text/plain", false), ("application/json; charset=utf-8", false),
            ("", false),
        ])
    func contentType(value: String, accepted: Bool) {
        #expect((WireError.contentType(value) == nil) == accepted)
    }

    @Test("a message without content_type is refused")
    func missingContentType() throws {
        let error = try #require(WireError.contentType(nil))
        #expect(error.code == .contentType)
        #expect(error.message.contains("application/json"))
    }
}
