import BerthJSON
import Testing

@Suite("Serialising and round trips")
struct SerializeTests {
    static let roundTripValues: [JSONValue] = [
        nil, true, false, 0, 1, -1, .int(.max), .int(.min), .int(4_294_967_296), .int(-9_007_199_254_740_993),
        0.5, -0.0, 0.1, 1.0, -2.0, 1e-7, 1e300, -1.7976931348623157e308, .double(.leastNonzeroMagnitude), 123456789.125,
        3.0e16,
        "", "plain", "quote \" backslash \\ slash /", "\n\r\t\u{8}\u{c}", "\u{0}", "a\u{0}b\u{0}",
        "\u{1}\u{1f}\u{7f}", "été", "日本語", "emoji 😀👍🏽", "\u{2028}\u{2029}", "\u{FEFF}bom", "\u{10FFFF}",
        [], [nil, 1, "two", 3.5, [[]], [:]],
        [:], ["a": 1, "b": [true, nil], "c": ["d": "e"]], ["": "empty key", "é": "non-ASCII key", "k/ey": "slash"],
        ["nested": [["deep": [["deeper": ["x\u{0}y"]]]]]],
    ]

    @Test("parse(serialize(v)) == v", arguments: roundTripValues)
    func roundTrip(value: JSONValue) throws {
        let bytes = JSONCodec.serialize(value)
        #expect(try JSONCodec.parse(bytes) == value)
        #expect(try JSONCodec.parse(JSONCodec.serializeString(value)) == value)
    }

    @Test(
        "integers stay integers and doubles stay doubles", arguments: [JSONValue.double(2.0), .int(2), .double(1e16)])
    func numberKindSurvives(value: JSONValue) throws {
        let back = try JSONCodec.parse(JSONCodec.serialize(value))
        #expect(back.typeName == value.typeName)
    }

    @Test(
        "compact output in key order",
        arguments: [
            (JSONValue.object(["z": 1, "a": [true, nil], "m": "/"]), #"{"z":1,"a":[true,null],"m":"/"}"#),
            (.double(0.1), "0.1"), (.double(1.0), "1.0"), (.double(1e-7), "1e-07"), (.int(-5), "-5"), (nil, "null"),
            (.string("a\u{0}\n\"é"), #""a\u0000\n\"é""#), ([], "[]"), ([:], "{}"),
        ] as [(JSONValue, String)])
    func exactText(value: JSONValue, expected: String) {
        #expect(JSONCodec.serializeString(value) == expected)
    }

    @Test("non-finite doubles are written as null", arguments: [Double.nan, .infinity, -.infinity])
    func nonFinite(number: Double) {
        #expect(JSONCodec.serializeString(["x": .double(number)]) == #"{"x":null}"#)
    }

    @Test("insertion order of a built object survives a round trip")
    func builtOrder() throws {
        var object = JSONObject()
        for key in ["method", "args", "version", "_msg_id", "_reply_q", "_context_user"] { object[key] = .string(key) }
        object["args"] = nil
        object["args"] = ["late": true]
        let back = try #require(try JSONCodec.parse(JSONCodec.serialize(.object(object))).objectValue)
        #expect(back.keys == ["method", "version", "_msg_id", "_reply_q", "_context_user", "args"])
    }

    @Test("a large document round trips")
    func largeDocument() throws {
        let value = JSONValue.array(
            (0..<5000).map { .object(["i": .int(Int64($0)), "s": .string(String(repeating: "x", count: $0 % 50))]) })
        #expect(try JSONCodec.parse(JSONCodec.serialize(value)) == value)
    }
}
