import BerthJSON
import Testing

@testable import BerthWire

/// The reply address of a body too large to keep, found while it streams past: the same answer as decoding the
/// whole body, in any chunking, and never a trap or a forged address on hostile bytes.
@Suite struct EnvelopeScannerTests {
    typealias Address = (msgID: String, replyQueue: String)

    static func scan(_ body: [UInt8], chunk: Int = 131_072) -> OsloEnvelopeScanner {
        var scanner = OsloEnvelopeScanner()
        var start = 0
        while start < body.count, !scanner.isFinished {
            let end = min(body.count, start + chunk)
            body[start..<end].withUnsafeBytes { scanner.scan($0) }
            start = end
        }
        return scanner
    }

    static func same(_ found: Address?, _ expected: Address?) -> Bool {
        found?.msgID == expected?.msgID && found?.replyQueue == expected?.replyQueue
    }

    /// A call in a stock oslo `RPCClient`'s key order: the address comes after the arguments.
    static func call(args: JSONObject, msgID: String = "9f1c0b5d3c2a4e6f8a7b6c5d4e3f2a1b") -> [UInt8] {
        OsloEnvelope.wrap([
            "method": "boot_instance", "args": .object(args), "version": "1.0", "_msg_id": .string(msgID),
            "_reply_q": "reply_0123456789abcdef0123456789abcdef", "_timeout": .null, "_unique_id": "u1",
            "_context_request_id": "req-1",
        ])
    }

    static let address: Address = ("9f1c0b5d3c2a4e6f8a7b6c5d4e3f2a1b", "reply_0123456789abcdef0123456789abcdef")

    static let calls = [
        "rpc_call_request.json", "rpc_call_request_any_server.json", "rpc_call_request_call_monitor.json",
        "rpc_call_request_namespace.json", "rpc_call_request_version_2_0.json", "rpc_cast_topic.json",
        "rpc_fanout_cast.json", "notification_info.json", "notification_v1_no_envelope.json",
    ]

    @Test("every captured body gives the address its decoded message has", arguments: calls)
    func capturesMatchTheDecoder(name: String) throws {
        let body = try Fixture.bodyRaw(name)
        let expected = RPCRequest.replyAddress(of: try OsloEnvelope.unwrap(body))
        for chunk in [1, 3, 64, body.count] {
            #expect(Self.same(Self.scan(body, chunk: chunk).replyAddress, expected), "chunk \(chunk)")
        }
    }

    @Test func theAddressBehindMegabytesOfArgumentsIsFound() {
        let body = Self.call(args: ["user_data": .string(String(repeating: "A\"b\\c\n", count: 200_000))])
        #expect(body.count > 1_000_000)
        #expect(Self.same(Self.scan(body).replyAddress, Self.address))
    }

    @Test func aLegacyBodyWithoutEnvelopeIsRead() {
        let body = Array(#"{"method": "ping", "args": {}, "_msg_id": "m1", "_reply_q": "reply_q1"}"#.utf8)
        #expect(Self.same(Self.scan(body).replyAddress, ("m1", "reply_q1")))
    }

    @Test func lookalikesInsideTheArgumentsAreNotTaken() {
        let fake: JSONObject = ["_msg_id": "fake", "_reply_q": "reply_fake"]
        let args: JSONObject = [
            "nested": .object(fake), "list": .array([.object(fake)]),
            "text": .string(#"{"_msg_id": "fake", "_reply_q": "reply_fake"}"#), "_msg_id": "also-fake",
        ]
        #expect(Self.same(Self.scan(Self.call(args: args)).replyAddress, Self.address))
        let castWithLookalikes = OsloEnvelope.wrap(["method": "ping", "args": .object(args)])
        #expect(Self.scan(castWithLookalikes).replyAddress == nil)
    }

    @Test func escapedKeysAreDecodedLikeAnyJSONReader() {
        let inner = #"{"method": "ping", "\u005fmsg_id": "m\u0031", "_reply_q": "reply_q1"}"#
        let body = JSONCodec.serialize(.object(["oslo.version": "2.0", "oslo.message": .string(inner)]))
        #expect(Self.same(Self.scan(body).replyAddress, ("m1", "reply_q1")))
    }

    @Test func unusableValuesGiveNoAddress() {
        for msgID in [String(repeating: "a", count: 65), "line\nbreak", "ünïcode", ""] {
            #expect(Self.scan(Self.call(args: [:], msgID: msgID)).replyAddress == nil, "\(msgID.debugDescription)")
        }
        let numeric = Array(#"{"_msg_id": 7, "_reply_q": "reply_q1"}"#.utf8)
        #expect(Self.scan(numeric).replyAddress == nil)
    }

    @Test func everyTruncationGivesTheRightAddressOrNone() {
        let body = Self.call(args: ["name": "vm-1"])
        for length in 0...body.count {
            let found = Self.scan(Array(body[..<length])).replyAddress
            #expect(found == nil || Self.same(found, Self.address))
        }
    }

    @Test func theScanStopsOnceTheAddressIsKnown() {
        let early = Array(#"{"_msg_id": "m1", "_reply_q": "reply_q1", "args": {"padding": "#.utf8)
        #expect(Self.scan(early).isFinished)
        #expect(!Self.scan(Array(early.dropLast(30))).isFinished)
    }

    @Test func hostileBytesEndTheScanWithoutATrap() {
        var generator = SeededGenerator(seed: 0x6265_7274_6821)
        let alphabet = Array(#"{}[]":,\u0123456789abcdefnrt _msg_idreply_q oslo.message"#.utf8) + [0, 0x80, 0xFF]
        for _ in 0..<2000 {
            let length = Int.random(in: 0...300, using: &generator)
            let body = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            _ = Self.scan(body, chunk: Int.random(in: 1...64, using: &generator)).replyAddress
        }
        let deep = [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000)
        #expect(Self.scan([UInt8(ascii: "{"), UInt8(ascii: "\"")] + Array(#"a": "#.utf8) + deep).isFinished)
        let deepInside = Array(#"{"oslo.message": ""#.utf8) + [UInt8](repeating: UInt8(ascii: "{"), count: 100_000)
        #expect(Self.scan(deepInside).replyAddress == nil)
    }
}

/// SplitMix64: the same "random" bodies on every run, so a failure can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
