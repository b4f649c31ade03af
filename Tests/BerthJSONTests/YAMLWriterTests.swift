import Testing

@testable import BerthJSON

@Suite("YAML documents (berth -f yaml)")
struct YAMLWriterTests {
    /// Each string and how it must be written: plain only when no YAML reader could take it for anything else.
    static let strings: [(String, String)] = [
        ("cirros", "cirros"),
        ("cirros 0.6.2 x86_64", "cirros 0.6.2 x86_64"),
        ("Debian-12/amd64_v1.qcow2", "Debian-12/amd64_v1.qcow2"),
        ("été 日本語", "été 日本語"),
        ("", "\"\""),
        (" leading", "\" leading\""),
        ("trailing ", "\"trailing \""),
        ("key: value", "\"key: value\""),
        ("a #comment", "\"a #comment\""),
        ("#start", "\"#start\""),
        ("yes", "\"yes\""), ("No", "\"No\""), ("ON", "\"ON\""), ("off", "\"off\""), ("y", "\"y\""),
        ("true", "\"true\""), ("False", "\"False\""), ("null", "\"null\""), ("~", "\"~\""),
        ("42", "\"42\""), ("0x1F", "\"0x1F\""), ("1e3", "\"1e3\""), (".inf", "\".inf\""), ("-1", "\"-1\""),
        ("2026-12-07", "\"2026-12-07\""), ("1:20", "\"1:20\""), ("<<", "\"<<\""), ("=", "\"=\""),
        ("- item", "\"- item\""), ("[x]", "\"[x]\""), ("{x}", "\"{x}\""), ("&anchor", "\"&anchor\""),
        ("*alias", "\"*alias\""), ("!tag", "\"!tag\""), ("|", "\"|\""), (">", "\">\""), ("%x", "\"%x\""),
        ("@x", "\"@x\""), ("`x", "\"`x\""), ("x, y", "\"x, y\""),
        ("say \"hi\"", "\"say \\\"hi\\\"\""),
        ("back\\slash", "\"back\\\\slash\""),
        ("two\nlines\r\n", "\"two\\nlines\\r\\n\""),
        ("tab\there", "\"tab\\there\""),
        ("nul\u{0}bell\u{7}esc\u{1B}del\u{7F}", "\"nul\\0bell\\x07esc\\x1Bdel\\x7F\""),
        ("nel\u{85}ls\u{2028}ps\u{2029}bom\u{FEFF}", "\"nel\\x85ls\\u2028ps\\u2029bom\\uFEFF\""),
        ("emoji 😀", "\"emoji 😀\""),
    ]

    @Test("strings are plain or double-quoted with escapes", arguments: strings)
    func string(text: String, written: String) {
        #expect(YAMLWriter.scalar(.string(text)) == written)
    }

    @Test(
        "numbers, booleans and null read back as themselves",
        arguments: [
            (JSONValue.null, "null"), (.bool(true), "true"), (.bool(false), "false"),
            (.int(-9_007_199_254_740_993), "-9007199254740993"), (.double(0.5), "0.5"), (.double(2), "2.0"),
            (.double(1e300), "1.0e+300"),
            (.double(1e-7), "1.0e-07"), (.double(.infinity), ".inf"), (.double(-.infinity), "-.inf"),
            (.double(.nan), ".nan"),
        ])
    func number(value: JSONValue, written: String) {
        #expect(YAMLWriter.scalar(value) == written)
    }

    @Test("a list of records is a sequence of mappings, as openstack prints it")
    func listOfRecords() {
        let records: JSONValue = [["id": "a1", "size": 3], ["id": "b2", "size": nil]]
        #expect(YAMLWriter.document(records) == "- id: a1\n  size: 3\n- id: b2\n  size: null\n")
    }

    @Test("nested collections are indented under their key; empty ones are inline")
    func nested() {
        let record: JSONValue = [
            "properties": ["os_type": "linux", "hw": ["disk_bus": "virtio"]], "tags": ["a", ["b", "c"]],
            "none": [], "empty": [:],
        ]
        #expect(
            YAMLWriter.document(record) == """
                properties:
                  os_type: linux
                  hw:
                    disk_bus: virtio
                tags:
                  - a
                  - - b
                    - c
                none: []
                empty: {}

                """)
        #expect(YAMLWriter.document([]) == "[]\n")
        #expect(YAMLWriter.document([:]) == "{}\n")
    }

    @Test("keys are quoted as values are, and a key too long for a YAML reader is explicit")
    func keys() {
        #expect(YAMLWriter.document(["a: b": "yes"]) == "\"a: b\": \"yes\"\n")
        let long = String(repeating: "k", count: YAMLWriter.longestImplicitKey + 1)
        #expect(YAMLWriter.document([long: 1]) == "? \(long)\n: 1\n")
        #expect(YAMLWriter.document([long: ["x": 1]]) == "? \(long)\n:\n  x: 1\n")
    }
}
