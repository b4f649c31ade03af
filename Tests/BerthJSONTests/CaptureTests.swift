import BerthJSON
import Foundation
import Testing

/// Real oslo.messaging 18.3.1 traffic captured from RabbitMQ's firehose (copied from
/// shared/wire/captures). Kept in a dot-directory because SwiftPM warns about undeclared
/// non-source files in a target and this package declares no resources.
enum Captures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent(".fixtures", isDirectory: true)

    static let names = [
        "rpc_call_request", "rpc_reply_success", "rpc_reply_failure_builtin_exception", "notification_info",
        "notification_v1_no_envelope",
    ]

    static func load(_ name: String) throws -> JSONValue {
        let url = directory.appendingPathComponent("\(name).json")
        let data = try Data(contentsOf: url)
        return try JSONCodec.parse([UInt8](data))
    }
}

@Suite("Captured oslo.messaging traffic")
struct CaptureTests {
    @Test("each capture parses, and its raw AMQP body parses to the recorded body", arguments: Captures.names)
    func bodyRaw(name: String) throws {
        let capture = try Captures.load(name)
        #expect(capture["oslo_messaging_version"] == "18.3.1")
        #expect(capture["properties"]?["content_type"] == "application/json")

        let raw = try #require(capture["body_raw"]?.stringValue)
        let body = try JSONCodec.parse(raw)
        #expect(body == capture["body"])
        // The body is exactly what Python wrote, so our compact form must differ only in whitespace.
        #expect(try JSONCodec.parse(JSONCodec.serialize(body)) == body)

        guard let inner = body["oslo.message"]?.stringValue else {
            // oslo.messaging's v1 notifications carry the message without the 2.0 envelope.
            #expect(body["oslo.version"] == nil)
            #expect(body["event_type"] == "compute.instance.create.end")
            return
        }
        #expect(body["oslo.version"] == "2.0")
        #expect(body.objectValue?.keys == ["oslo.version", "oslo.message"])
        let message = try JSONCodec.parse(inner)
        #expect(message == capture["body_oslo_message_parsed"])
    }

    @Test("an RPC call keeps oslo's key order and its fields")
    func rpcCall() throws {
        let capture = try Captures.load("rpc_call_request")
        let body = try JSONCodec.parse(try #require(capture["body_raw"]?.stringValue))
        let message = try JSONCodec.parse(try #require(body["oslo.message"]?.stringValue))
        let keys = try #require(message.objectValue?.keys)
        #expect(
            Array(keys.prefix(7)) == ["method", "args", "version", "_msg_id", "_reply_q", "_timeout", "_unique_id"])
        #expect(message["method"] == "boot_instance")
        #expect(message["args"]?["instance"]?["flavor"]?["vcpus"] == 2)
        #expect(message["_timeout"] == .null)
        #expect(message["_context_roles"] == ["member", "reader"])
        #expect(message["_context_is_admin_project"] == true)
        #expect(capture["properties"]?["expiration"] == "60000")
    }

    @Test("a failure reply's nested JSON string parses too")
    func failureReply() throws {
        let capture = try Captures.load("rpc_reply_failure_builtin_exception")
        let body = try JSONCodec.parse(try #require(capture["body_raw"]?.stringValue))
        let message = try JSONCodec.parse(try #require(body["oslo.message"]?.stringValue))
        #expect(message["result"] == .null)
        let failure = try JSONCodec.parse(try #require(message["failure"]?.stringValue))
        #expect(failure == capture["failure_parsed"])
        #expect(failure["class"] == "ValueError")
        #expect(failure["args"] == ["boot failed: no valid host", 42])
        #expect(failure["tb"]?.arrayValue?.first == "Traceback (most recent call last):\n")
    }

    @Test("captures decode into Codable models")
    func codableFromCapture() throws {
        struct Flavor: Codable, Equatable {
            var vcpus: Int32
            var ram_mb: UInt32
        }
        struct Instance: Codable {
            var uuid: String
            var image_id: String
            var flavor: Flavor
        }
        struct Args: Codable { var instance: Instance }
        struct Call: Codable {
            var method: String
            var args: Args
            var version: String
            var _msg_id: String
            var _reply_q: String?
            var _timeout: Double?
            var _context_roles: [String]
            var _context_domain: String?
        }
        let capture = try Captures.load("rpc_call_request")
        let call = try JSONValueDecoder().decode(Call.self, from: try #require(capture["body_oslo_message_parsed"]))
        #expect(call.method == "boot_instance")
        #expect(call.args.instance.flavor == Flavor(vcpus: 2, ram_mb: 2048))
        #expect(call._timeout == nil)
        #expect(call._reply_q?.hasPrefix("reply_") == true)
    }

    @Test("parsing and serialising in parallel shares no json-c state")
    func concurrent() async throws {
        let raws = try Captures.names.map { try #require(try Captures.load($0)["body_raw"]?.stringValue) }
        let expected = try raws.map { try JSONCodec.parse($0) }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for round in 0..<64 {
                let index = round % raws.count
                let raw = raws[index]
                let want = expected[index]
                group.addTask {
                    let value = try JSONCodec.parse(raw)
                    return try JSONCodec.parse(JSONCodec.serialize(value)) == want && value == want
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }
}
