import BerthJSON
import Foundation
import Testing

private struct Flavor: Codable, Equatable {
    var name: String
    var vcpus: Int32
    var ramMB: UInt64
    var ratio: Float
    var tags: [String]
    var extraSpecs: [String: String]
}

private enum State: String, Codable { case active, error }

private struct Server: Codable, Equatable {
    var uuid: String
    var state: State
    var flavor: Flavor
    var host: String?
    var note: String?
    var ports: [[Int8]]
    var metadata: [String: JSONValue]
    var raw: JSONValue
    var weights: [Double?]
    var byIndex: [Int: Bool]
}

private let sample = Server(
    uuid: "inst-0001", state: .active,
    flavor: Flavor(
        name: "m1.small", vcpus: 2, ramMB: 2048, ratio: 0.1, tags: ["a", "é"],
        extraSpecs: ["hw:cpu_policy": "dedicated"]),
    host: "host-a", note: nil, ports: [[1, -2], []], metadata: ["k": [1, "two"], "n": nil],
    raw: ["x": [1.5, nil, "\u{0}"]], weights: [1.0, nil, -2.5], byIndex: [3: true])

@Suite("Codable bridge")
struct CodableTests {
    @Test("a nested model round trips through JSONValue and bytes")
    func roundTrip() throws {
        let value = try JSONValueEncoder().encode(sample)
        #expect(try JSONValueDecoder().decode(Server.self, from: value) == sample)
        let bytes = try JSONCodec.encode(sample)
        #expect(try JSONCodec.decode(Server.self, from: bytes) == sample)
        #expect(try JSONCodec.decode(Server.self, from: try JSONCodec.encodeString(sample)) == sample)
    }

    @Test("keys come out in declaration order; nil optionals are left out")
    func keyOrderAndOmittedNil() throws {
        let object = try #require(try JSONValueEncoder().encode(sample).objectValue)
        #expect(object.keys == ["uuid", "state", "flavor", "host", "ports", "metadata", "raw", "weights", "byIndex"])
        #expect(object["flavor"]?.objectValue?.keys == ["name", "vcpus", "ramMB", "ratio", "tags", "extraSpecs"])
        #expect(object["flavor"]?["ratio"] == .double(0.1))
        #expect(object["weights"] == [1.0, nil, -2.5])
        #expect(object["byIndex"] == ["3": true])
        #expect(object["raw"] == ["x": [1.5, nil, "\u{0}"]])
    }

    @Test("encodeNil writes null; encodeIfPresent skips")
    func explicitNil() throws {
        struct Reply: Encodable {
            var result: String?
            var failure: String?
            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(result, forKey: .result)
                try container.encodeIfPresent(failure, forKey: .failure)
            }
            enum CodingKeys: String, CodingKey { case result, failure }
        }
        #expect(JSONCodec.serializeString(try JSONValueEncoder().encode(Reply())) == #"{"result":null}"#)
        #expect(try JSONValueEncoder().encode(Reply(result: "ok", failure: "no")) == ["result": "ok", "failure": "no"])
    }

    @Test("nested, unkeyed and super containers by hand")
    func handWrittenContainers() throws {
        struct Odd: Codable, Equatable {
            var a: Int
            var list: [String]
            var inner: Int
            enum Keys: String, CodingKey { case a, pair, nested }
            enum Inner: String, CodingKey { case value }
            init(a: Int, list: [String], inner: Int) { (self.a, self.list, self.inner) = (a, list, inner) }
            func encode(to encoder: any Encoder) throws {
                var keyed = encoder.container(keyedBy: Keys.self)
                try keyed.encode(a, forKey: .a)
                var pair = keyed.nestedUnkeyedContainer(forKey: .pair)
                for item in list { try pair.encode(item) }
                var deeper = pair.nestedContainer(keyedBy: Inner.self)
                try deeper.encode(inner, forKey: .value)
                var nested = keyed.nestedContainer(keyedBy: Inner.self, forKey: .nested)
                try nested.encode(inner * 2, forKey: .value)
                var sup = keyed.superEncoder().singleValueContainer()
                try sup.encode("base")
            }
            init(from decoder: any Decoder) throws {
                let keyed = try decoder.container(keyedBy: Keys.self)
                a = try keyed.decode(Int.self, forKey: .a)
                var pair = try keyed.nestedUnkeyedContainer(forKey: .pair)
                var list: [String] = []
                while let item = try? pair.decode(String.self) { list.append(item) }
                self.list = list
                inner = try pair.nestedContainer(keyedBy: Inner.self).decode(Int.self, forKey: .value)
                #expect(pair.isAtEnd)
                #expect(
                    try keyed.nestedContainer(keyedBy: Inner.self, forKey: .nested).decode(Int.self, forKey: .value)
                        == inner * 2)
                #expect(try keyed.superDecoder().singleValueContainer().decode(String.self) == "base")
            }
        }
        let odd = Odd(a: 1, list: ["x", "y"], inner: 7)
        let value = try JSONValueEncoder().encode(odd)
        #expect(value == ["a": 1, "pair": ["x", "y", ["value": 7]], "nested": ["value": 14], "super": "base"])
        #expect(try JSONValueDecoder().decode(Odd.self, from: value) == odd)
    }

    @Test(
        "integers are range-checked and accept whole doubles",
        arguments: [
            (JSONValue.int(255), true), (.int(256), false), (.int(-1), false), (.double(2.0), true),
            (.double(2.5), false),
            (.double(1e300), false), (.string("2"), false), (.bool(true), false),
        ] as [(JSONValue, Bool)])
    func uint8Range(value: JSONValue, accepted: Bool) {
        let decoded = try? JSONValueDecoder().decode(UInt8.self, from: value)
        #expect((decoded != nil) == accepted)
    }

    @Test("Int32 limits")
    func int32() throws {
        #expect(try JSONValueDecoder().decode(Int32.self, from: .int(Int64(Int32.min))) == .min)
        #expect(throws: DecodingError.self) {
            try JSONValueDecoder().decode(Int32.self, from: .int(Int64(Int32.max) + 1))
        }
        #expect(try JSONValueDecoder().decode(Double.self, from: 3) == 3.0)
        #expect(try JSONValueDecoder().decode(UInt64.self, from: .double(9_223_372_036_854_775_808)) == 1 << 63)
    }

    @Test(
        "decoding errors name the path",
        arguments: [
            (#"{"instance": {"flavor": {"vcpus": "2"}}}"#, "instance.flavor.vcpus: expected integer, got string"),
            (#"{"instance": {"flavor": {}}}"#, "instance.flavor.vcpus: missing required key"),
            (#"{"instance": {"flavor": {"vcpus": null}}}"#, "instance.flavor.vcpus: expected integer, got null"),
            (
                #"{"instance": {"flavor": {"vcpus": 300}, "roles": [1]}}"#,
                "instance.flavor.vcpus: integer 300 does not fit in UInt8 (0...255)"
            ),
            (
                #"{"instance": {"flavor": {"vcpus": 1.5}}}"#,
                "instance.flavor.vcpus: expected integer, got number 1.5 with a fraction"
            ),
            (
                #"{"instance": {"flavor": {"vcpus": 2}, "roles": ["a", 3]}}"#,
                "instance.roles[1]: expected string, got integer"
            ),
            (#"{"instance": []}"#, "instance: expected object, got array"),
            (#"[]"#, "(top level): expected object, got array"),
        ])
    func errorPaths(text: String, expected: String) throws {
        struct Flavor: Decodable { var vcpus: UInt8 }
        struct Instance: Decodable {
            var flavor: Flavor
            var roles: [String]?
        }
        struct Request: Decodable { var instance: Instance }
        do {
            _ = try JSONCodec.decode(Request.self, from: text)
            Issue.record("decoded \(text) without error")
        } catch {
            #expect(error is DecodingError)
            #expect(JSONCodingPath.describe(error) == expected)
        }
    }

    @Test("JSONError is reported as such through the helpers")
    func jsonErrorThroughDecode() throws {
        do {
            _ = try JSONCodec.decode([Int].self, from: "[1,")
            Issue.record("expected a JSONError")
        } catch let error as JSONError {
            #expect(error.code == .truncated)
            #expect(JSONCodingPath.describe(error).hasPrefix("truncated: "))
        }
    }

    @Test("non-finite floats and oversized unsigned integers do not encode silently")
    func encodingErrors() {
        struct Box<T: Encodable>: Encodable { var value: T }
        #expect(throws: EncodingError.self) { try JSONValueEncoder().encode(Box(value: Double.nan)) }
        #expect(throws: EncodingError.self) { try JSONValueEncoder().encode([Float.infinity]) }
        #expect(throws: EncodingError.self) { try JSONValueEncoder().encode(Box(value: UInt64.max)) }
        #expect(throws: Never.self) { try JSONValueEncoder().encode(Box(value: UInt64(Int64.max))) }
    }

    @Test("top-level scalars, arrays and JSONValue pass through")
    func topLevel() throws {
        #expect(try JSONValueEncoder().encode(5) == 5)
        #expect(try JSONValueEncoder().encode("s") == "s")
        #expect(try JSONValueEncoder().encode([1, 2]) == [1, 2])
        #expect(try JSONValueEncoder().encode(Optional<Int>.none) == nil)
        let json: JSONValue = ["a": .double(2.0), "b": .int(2)]
        #expect(try JSONValueEncoder().encode(json) == json)
        #expect(try JSONValueDecoder().decode(JSONValue.self, from: json) == json)
        #expect(try JSONValueDecoder().decode(JSONObject.self, from: json) == json.objectValue)
        #expect(try JSONValueDecoder().decode(Int?.self, from: nil) == nil)
        #expect(try JSONValueDecoder().decode([Int?].self, from: [1, nil]) == [1, nil])
    }

    @Test("an Encodable that writes nothing is an error at the top and {} inside")
    func emptyEncodable() throws {
        struct Nothing: Encodable { func encode(to encoder: any Encoder) throws {} }
        struct Holder: Encodable { var nothing = Nothing() }
        #expect(throws: EncodingError.self) { try JSONValueEncoder().encode(Nothing()) }
        #expect(try JSONValueEncoder().encode(Holder()) == ["nothing": [:]])
    }

    @Test("JSONValue also rebuilds itself through Foundation's coders")
    func foreignCoders() throws {
        let json: JSONValue = ["a": [1, 2.5, "x", nil, true, -7], "b": [:], "c": "é\u{0}"]
        let data = try JSONEncoder().encode(Wrapper(inner: json))
        let back = try JSONDecoder().decode(Wrapper.self, from: data)
        #expect(back.inner == json)
        #expect(try JSONCodec.parse([UInt8](data)) == ["inner": json])
    }
}

private struct Wrapper: Codable { var inner: JSONValue }
