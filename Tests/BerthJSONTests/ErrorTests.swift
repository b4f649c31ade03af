import BerthJSON
import Testing

@Suite("Limits and malformed input")
struct ErrorTests {
    @Test("nesting deeper than maxDepth is tooDeep", arguments: [("[", "]"), ("{\"k\":", "}")])
    func tooDeep(open: String, close: String) throws {
        let error = try #require(parseError(nested(50, open: open, close: close)))
        #expect(error.code == .tooDeep)
        #expect(error.message.contains("32"))
    }

    @Test(
        "maxDepth counts levels as json-c does: a value inside N containers is at level N+1", arguments: [1, 2, 5, 32])
    func depthBoundary(depth: Int) throws {
        let limits = JSONLimits(maxBytes: 1 << 20, maxDepth: depth)
        #expect(parseError(nested(depth - 1), limits: limits) == nil)
        #expect(parseError(nested(depth - 1, inner: "[]"), limits: limits) == nil)
        #expect(parseError(nested(depth), limits: limits)?.code == .tooDeep)
        #expect(parseError(nested(depth - 1, inner: "[1]"), limits: limits)?.code == .tooDeep)
    }

    @Test("an absurd maxDepth is clamped rather than trusted")
    func depthCeiling() throws {
        let limits = JSONLimits(maxBytes: 1 << 20, maxDepth: .max)
        #expect(parseError(nested(JSONLimits.depthCeiling - 1), limits: limits) == nil)
        #expect(parseError(nested(JSONLimits.depthCeiling), limits: limits)?.code == .tooDeep)
        let zero = JSONLimits(maxBytes: 10, maxDepth: 0)
        #expect(parseError("1", limits: zero) == nil)
        #expect(parseError("[1]", limits: zero)?.code == .tooDeep)
    }

    @Test("a body over maxBytes is tooLarge, decided by size alone")
    func tooLarge() throws {
        // Not JSON at all: were it parsed, the error would be syntax, not tooLarge.
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: 8 << 20)
        let error = try #require(parseError(body))
        #expect(error.code == .tooLarge)
        #expect(error.message.contains("JSON body is 8388608 bytes; the limit is 4194304 bytes"))
        let small = JSONLimits(maxBytes: 4, maxDepth: 32)
        #expect(parseError("[1,2]", limits: small)?.code == .tooLarge)
        #expect(parseError("[12]", limits: small) == nil)
        #expect(throws: JSONError.self) { try JSONCodec.parse("\"12345\"", limits: small) }
    }

    @Test(
        "invalid UTF-8 is invalidUTF8",
        arguments: [
            [0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xC3], [0x22, 0xED, 0xA0, 0x80, 0x22],
            [0x22, 0xF8, 0x88, 0x80, 0x80, 0x80, 0x22], [0x7B, 0x22, 0xC0, 0xAF, 0x22, 0x3A, 0x31, 0x7D],
        ] as [[UInt8]])
    func invalidUTF8(bytes: [UInt8]) throws {
        #expect(parseError(bytes)?.code == .invalidUTF8)
    }

    @Test("valid non-ASCII outside a string is a syntax error, not a UTF-8 one")
    func nonASCIIOutsideString() {
        #expect(parseError("[é]")?.code == .syntax)
        #expect(parseError("\u{FEFF}[1]")?.code == .syntax)
    }

    @Test(
        "input that stops early is truncated",
        arguments: [
            #"{"a": [1,"#, "[", "{", #"{"a""#, #"{"a":"#, #""abc"#, #""esc\"#, #""\u00"#, "tru", "nul", "-", "1e",
            "-1e+",
            #"[1, 2"#,
        ])
    func truncated(text: String) throws {
        let error = try #require(parseError(text))
        #expect(error.code == .truncated)
    }

    @Test(
        "anything after the value is a syntax error",
        arguments: [
            "[1] x", "{} {}", "1 2", "[1]]", "true false", #""a" "b""#, "null,", "{}\u{0}", "1\u{0}",
            "[1]\u{0}garbage",
        ])
    func trailing(text: String) throws {
        #expect(parseError(text)?.code == .syntax)
    }

    @Test("whitespace after the value is fine", arguments: ["[1] ", "1\n", "{}\r\n\t ", "\"x\"   "])
    func trailingWhitespace(text: String) {
        #expect(parseError(text) == nil)
    }

    @Test("empty or blank input is a syntax error", arguments: ["", " ", "\n\t\r "])
    func empty(text: String) throws {
        let error = try #require(parseError(text))
        #expect(error.code == .syntax)
        #expect(error.message.contains("empty"))
    }

    @Test(
        "malformed documents are syntax errors",
        arguments: [
            "[1,]", "{\"a\":1,}", "[01]", "+1", ".5", "0x10", "TRUE", "/* c */ 1", "{a: 1}", "{1: 2}", "[1 2]",
            "{\"a\" 1}", "\"\\x\"", "[\"a\u{0}b\"]", "\u{0}", "}",
        ])
    func syntax(text: String) throws {
        #expect(parseError(text)?.code == .syntax)
    }

    @Test("NaN and Infinity are rejected", arguments: ["NaN", "Infinity", "-Infinity", "[1e400]", "{\"x\": NaN}"])
    func nonFinite(text: String) throws {
        let error = try #require(parseError(text))
        #expect(error.code == .syntax)
        #expect(error.message.contains("not finite"))
    }

    @Test("messages say where")
    func messagesCarryOffsets() throws {
        let syntax = try #require(parseError(#"{"a": [1, 2,, 3]}"#))
        #expect(syntax.message.contains("byte 12"))
        let utf8 = try #require(parseError([0x5B, 0x22, 0x6F, 0x6B, 0x22, 0x2C, 0x22, 0xFF, 0x22, 0x5D]))
        #expect(utf8.message.contains("byte 7"))
        let nul = try #require(parseError("[\"a\u{0}\"]"))
        #expect(nul.message.contains("NUL"))
        #expect(nul.description.hasPrefix("syntax: "))
    }

    @Test("hostile inputs never crash")
    func fuzz() throws {
        var generator = SplitMix64(seed: 0x5EED)
        let alphabet = Array(#"{}[]:,"\ 0123456789.eE+-truefalsnu"#.utf8) + [0x00, 0xFF, 0xC3, 0xA9, 0x0A]
        for _ in 0..<3000 {
            let length = Int(generator.next() % 40)
            let bytes = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            if let value = try? JSONCodec.parse(bytes) {
                #expect(try JSONCodec.parse(JSONCodec.serialize(value)) == value)
            }
        }
    }
}

/// Deterministic, so a failing fuzz case reproduces.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
