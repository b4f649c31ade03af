import BerthJSON
import Testing

@Suite("Parsing")
struct ParseTests {
    @Test(
        "scalars at top level",
        arguments: [
            ("null", JSONValue.null), ("true", .bool(true)), ("false", .bool(false)), ("0", .int(0)), ("-0", .int(0)),
            ("42", .int(42)), ("-17", .int(-17)), ("1.5", .double(1.5)), ("2.0", .double(2)), ("-0.25", .double(-0.25)),
            ("1e3", .double(1000)), ("1E-2", .double(0.01)), ("\"x\"", .string("x")), (" \n\t 7 \r\n", .int(7)),
        ] as [(String, JSONValue)])
    func scalar(text: String, expected: JSONValue) throws {
        #expect(try JSONCodec.parse(text) == expected)
    }

    @Test(
        "64-bit integer edges",
        arguments: [
            ("9223372036854775807", JSONValue.int(.max)),
            ("-9223372036854775808", .int(.min)),
            ("9223372036854775808", .double(9_223_372_036_854_775_808)),
            ("18446744073709551615", .double(Double(UInt64.max))),
            ("4294967296", .int(4_294_967_296)),
        ] as [(String, JSONValue)])
    func bigIntegers(text: String, expected: JSONValue) throws {
        #expect(try JSONCodec.parse(text) == expected)
    }

    @Test(
        "string escapes",
        arguments: [
            (#""a\"b""#, "a\"b"), (#""back\\slash""#, "back\\slash"), (#""sl\/ash""#, "sl/ash"),
            (#""\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t"), (#""\u00e9t\u00E9""#, "été"), (#""\ud83d\ude00""#, "😀"),
            (#""nul\u0000inside""#, "nul\u{0}inside"), (#""\u0000""#, "\u{0}"), ("\"été 😀 日本\"", "été 😀 日本"),
            (#""\u001f""#, "\u{1f}"),
        ])
    func escapes(text: String, expected: String) throws {
        let value = try JSONCodec.parse(text)
        #expect(value == .string(expected))
        #expect(value.stringValue?.utf8.count == expected.utf8.count)
    }

    @Test("a lone surrogate escape becomes U+FFFD instead of failing")
    func loneSurrogate() throws {
        #expect(try JSONCodec.parse(#""\ud800x""#) == .string("\u{FFFD}x"))
    }

    @Test("object keys keep document order, not hash order")
    func keyOrder() throws {
        let keys = (0..<40).map { "k\(($0 * 7919) % 1000)" }
        let text = "{" + keys.enumerated().map { "\"\($1)\": \($0)" }.joined(separator: ", ") + "}"
        let object = try #require(try JSONCodec.parse(text).objectValue)
        #expect(object.keys == keys)
        #expect(Array(object.map(\.key)) == keys)
        #expect(object["k0"] == .int(0))
    }

    @Test("a duplicate key keeps its first position and its last value, as Python does")
    func duplicateKeys() throws {
        let object = try #require(try JSONCodec.parse(#"{"a": 1, "b": 2, "a": 3}"#).objectValue)
        #expect(object.keys == ["a", "b"])
        #expect(object["a"] == .int(3))
    }

    @Test("nested structures")
    func nestedStructures() throws {
        let value = try JSONCodec.parse(#"{"a": [1, {"b": null}, [], {}], "c": {"d": [true, "e"]}}"#)
        let expected: JSONValue = ["a": [1, ["b": nil], [], [:]], "c": ["d": [true, "e"]]]
        #expect(value == expected)
    }

    @Test("all three overloads agree")
    func overloads() throws {
        let text = #"{"x": [1, 2.5, "three"]}"#
        let bytes = Array(text.utf8)
        let fromBytes = try JSONCodec.parse(bytes)
        let fromString = try JSONCodec.parse(text)
        let fromBuffer = try bytes.withUnsafeBytes { buffer throws(JSONError) in try JSONCodec.parse(buffer) }
        #expect(fromBytes == fromString)
        #expect(fromBytes == fromBuffer)
    }

    @Test("what Python's json.dumps writes parses in strict mode")
    func pythonOutput() throws {
        // json.dumps({"s": "é\u2028/\x00", "f": 1e-07, "big": 10**18, "neg": -1.5e+300, "l": [], "o": {}})
        let text =
            #"{"s": "\u00e9\u2028/\u0000", "f": 1e-07, "big": 1000000000000000000, "neg": -1.5e+300, "l": [], "o": {}}"#
        let value = try JSONCodec.parse(text)
        #expect(value["s"] == .string("é\u{2028}/\u{0}"))
        #expect(value["f"] == .double(1e-07))
        #expect(value["big"] == .int(1_000_000_000_000_000_000))
        #expect(value["neg"] == .double(-1.5e300))
        #expect(value["l"] == .array([]))
        #expect(value["o"] == .object([:]))
    }
}
