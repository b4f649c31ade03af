@_exported import BerthJSONValue
import CJSONC

/// Bytes to `JSONValue` and back, through json-c. Nothing outside this file sees a json-c pointer.
///
/// Parsing is strict (RFC 8259 plus what json-c's strict mode still tolerates, such as raw control
/// characters inside strings) and rejects NaN and Infinity, which Python's `json.dumps` writes for
/// non-finite floats but no other JSON reader accepts.
///
/// Known json-c limits: object keys end at an embedded NUL (`"a\u0000b"` becomes `"a"`; NUL inside
/// string values is kept), and integers beyond the 64-bit range saturate instead of failing.
public enum JSONCodec: JSONTextCodec {
    // MARK: Parsing

    public static func parse(_ bytes: [UInt8], limits: JSONLimits = .default) throws(JSONError) -> JSONValue {
        try checkSize(bytes.count, limits: limits)
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(JSONError) -> JSONValue in try parseSized(buffer, limits: limits) }
        }
        return try result.get()
    }

    public static func parse(_ text: String, limits: JSONLimits = .default) throws(JSONError) -> JSONValue {
        try checkSize(text.utf8.count, limits: limits)
        var text = text
        let result = text.withUTF8 { buffer in
            Result { () throws(JSONError) -> JSONValue in
                try parseSized(UnsafeRawBufferPointer(buffer), limits: limits)
            }
        }
        return try result.get()
    }

    /// Parses bytes owned by someone else (an AMQP frame buffer); nothing refers to them afterwards.
    public static func parse(
        _ buffer: UnsafeRawBufferPointer, limits: JSONLimits = .default
    ) throws(JSONError) -> JSONValue {
        try checkSize(buffer.count, limits: limits)
        return try parseSized(buffer, limits: limits)
    }

    private static func checkSize(_ count: Int, limits: JSONLimits) throws(JSONError) {
        // json-c takes the length as an `int`, whatever the configured limit.
        let ceiling = min(limits.maxBytes, Int(Int32.max))
        guard count <= ceiling else {
            throw JSONError(
                code: .tooLarge,
                message: "JSON body is \(count) bytes; the limit is \(ceiling) bytes. Send a smaller message "
                    + "or raise JSONLimits.maxBytes")
        }
    }

    private static func parseSized(_ buffer: UnsafeRawBufferPointer, limits: JSONLimits) throws(JSONError) -> JSONValue
    {
        guard buffer.contains(where: { !isJSONWhitespace($0) }) else {
            throw JSONError(
                code: .syntax,
                message: "JSON body is empty\(buffer.isEmpty ? "" : " (only whitespace)"); expected one JSON value")
        }
        // json-c's own check lets overlong forms, UTF-16 surrogates and code points past U+10FFFF
        // through; checking first also gives every encoding error the same exact offset.
        if let bad = firstInvalidUTF8(buffer) {
            throw JSONError(
                code: .invalidUTF8,
                message: "JSON body is not valid UTF-8 at byte \(bad) (near \(snippet(buffer, around: bad))); "
                    + "the publisher must send UTF-8 text")
        }
        guard let tokener = JSONTokener(maxDepth: limits.effectiveDepth) else {
            throw JSONError(
                code: .tooDeep,
                message: "json-c could not allocate a parser for depth \(limits.effectiveDepth); "
                    + "lower JSONLimits.maxDepth")
        }
        var tree = tokener.feed(buffer)
        switch tokener.error {
        case json_tokener_success:
            let end = tokener.parseEnd
            if let extra = buffer[end...].firstIndex(where: { !isJSONWhitespace($0) }) {
                throw trailingBytes(buffer, at: extra)
            }
        case json_tokener_continue:
            // json-c cannot know a bare number or literal has ended until it sees one more byte; a space
            // ends it without changing the meaning of any complete document.
            tree = withUnsafeBytes(of: UInt8(ascii: " ")) { tokener.feed($0) }
            guard tokener.error == json_tokener_success else {
                throw JSONError(
                    code: .truncated,
                    message: "JSON body ends in the middle of a value after \(buffer.count) bytes "
                        + "(near \(snippet(buffer, around: buffer.count))); the message was cut off or the "
                        + "publisher wrote an incomplete document")
            }
        default:
            throw classify(tokener.error, buffer: buffer, at: tokener.parseEnd, limits: limits)
        }
        return try value(of: tree.root)
    }

    private static func trailingBytes(_ buffer: UnsafeRawBufferPointer, at offset: Int) -> JSONError {
        let what = buffer[offset] == 0 ? "a NUL byte" : "more data"
        return JSONError(
            code: .syntax,
            message: "JSON value ends before byte \(offset) but \(what) follows "
                + "(near \(snippet(buffer, around: offset))); a body must hold exactly one JSON value")
    }

    private static func classify(
        _ error: json_tokener_error, buffer: UnsafeRawBufferPointer, at offset: Int, limits: JSONLimits
    ) -> JSONError {
        let near = snippet(buffer, around: offset)
        switch error {
        case json_tokener_error_depth:
            return JSONError(
                code: .tooDeep,
                message: "JSON nesting exceeds \(limits.effectiveDepth) levels at byte \(offset) (near \(near)); "
                    + "flatten the document or raise JSONLimits.maxDepth")
        case json_tokener_error_parse_utf8_string:
            // The body is valid UTF-8 (checked before parsing); json-c says this for non-ASCII outside strings.
            return JSONError(
                code: .syntax,
                message: "unexpected non-ASCII character at byte \(offset) outside a string (near \(near))")
        case json_tokener_error_parse_eof:
            // We always pass the length, so json-c only sees "end of data" early when it meets a NUL byte.
            let nul = buffer[...min(offset, buffer.count - 1)].firstIndex(of: 0) ?? offset
            return JSONError(
                code: .syntax,
                message: "raw NUL byte at byte \(nul) (near \(snippet(buffer, around: nul))); inside strings NUL "
                    + "must be written as \\u0000")
        default:
            let reason = json_tokener_error_desc(error).map { String(cString: $0) } ?? "invalid JSON"
            return JSONError(code: .syntax, message: "JSON syntax error at byte \(offset): \(reason) (near \(near))")
        }
    }

    // MARK: json-c tree to JSONValue

    /// Depth is bounded by the tokener's limit, so the recursion is too.
    private static func value(of object: OpaquePointer?) throws(JSONError) -> JSONValue {
        guard let object else { return .null }
        switch json_object_get_type(object) {
        case json_type_null:
            return .null
        case json_type_boolean:
            return .bool(json_object_get_boolean(object) != 0)
        case json_type_int:
            let signed = json_object_get_int64(object)
            if signed == .max {
                // json-c keeps integers above Int64.max as uint64 and saturates get_int64.
                let unsigned = json_object_get_uint64(object)
                if unsigned > UInt64(Int64.max) { return .double(Double(unsigned)) }
            }
            return .int(signed)
        case json_type_double:
            let number = json_object_get_double(object)
            guard number.isFinite else {
                let text = json_object_get_string(object).map { String(cString: $0) } ?? "\(number)"
                throw JSONError(
                    code: .syntax,
                    message: "number \(text) is not finite; JSON has no NaN or Infinity, so the publisher "
                        + "must send null or a string for it")
            }
            return .double(number)
        case json_type_string:
            // The explicit length keeps an escaped \u0000 and whatever follows it.
            let length = Int(json_object_get_string_len(object))
            let bytes = UnsafeRawBufferPointer(start: json_object_get_string(object), count: length)
            return .string(String(decoding: bytes, as: UTF8.self))
        case json_type_array:
            let count = json_object_array_length(object)
            var elements: [JSONValue] = []
            elements.reserveCapacity(count)
            for index in 0..<count {
                elements.append(try value(of: json_object_array_get_idx(object, index)))
            }
            return .array(elements)
        case json_type_object:
            var members = JSONObject()
            var iterator = json_object_iter_begin(object)
            var end = json_object_iter_end(object)
            while json_object_iter_equal(&iterator, &end) == 0 {
                let key = String(cString: json_object_iter_peek_name(&iterator))
                members[key] = try value(of: json_object_iter_peek_value(&iterator))
                json_object_iter_next(&iterator)
            }
            return .object(members)
        default:
            throw JSONError(code: .syntax, message: "json-c returned an unknown value type; this is a bug in BerthJSON")
        }
    }

    // MARK: Serialising

    /// Compact JSON text (no spaces), keys in `JSONObject` order, non-ASCII written as UTF-8, `/` not
    /// escaped. Non-finite doubles have no JSON form and are written as `null`, as JavaScript does;
    /// use `JSONValueEncoder` to have them rejected instead.
    public static func serialize(_ value: JSONValue) -> [UInt8] {
        JSONCTree(owning: makeObject(value)).render()
    }

    public static func serializeString(_ value: JSONValue) -> String {
        String(decoding: serialize(value), as: UTF8.self)
    }

    /// Returns one reference the caller must hand to a parent (which takes it) or to a `JSONCTree`.
    private static func makeObject(_ value: JSONValue) -> OpaquePointer? {
        switch value {
        case .null:
            return nil
        case .bool(let flag):
            return allocated(json_object_new_boolean(flag ? 1 : 0))
        case .int(let number):
            return allocated(json_object_new_int64(number))
        case .double(let number):
            guard number.isFinite else { return nil }
            // Swift's shortest round-trip form ("0.1", "1e-07") rather than json-c's "%.17g".
            return allocated(number.description.withCString { json_object_new_double_s(number, $0) })
        case .string(let text):
            var text = text
            return text.withUTF8 { utf8 in
                precondition(utf8.count <= Int(Int32.max), "json-c strings are limited to 2 GiB")
                guard let base = utf8.baseAddress else { return allocated(json_object_new_string("")) }
                return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) {
                    allocated(json_object_new_string_len($0, Int32(utf8.count)))
                }
            }
        case .array(let elements):
            let array = allocated(json_object_new_array_ext(Int32(clamping: elements.count)))
            for element in elements {
                json_object_array_add(array, makeObject(element))
            }
            return array
        case .object(let members):
            let object = allocated(json_object_new_object())
            for (key, member) in members {
                // json_object_object_add copies the key and takes the member's reference.
                json_object_object_add(object, key, makeObject(member))
            }
            return object
        }
    }

    private static func allocated(_ object: OpaquePointer?) -> OpaquePointer {
        guard let object else { fatalError("json-c could not allocate a JSON value (out of memory)") }
        return object
    }

    // MARK: Helpers

    private static func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    /// Offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629: no overlong
    /// forms, no surrogates, nothing above U+10FFFF), or nil for valid text.
    static func firstInvalidUTF8(_ buffer: UnsafeRawBufferPointer) -> Int? {
        var index = 0
        while index < buffer.count {
            let lead = buffer[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            let length: Int
            var secondRange: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: (length, secondRange) = (3, 0xA0...0xBF)
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: (length, secondRange) = (3, 0x80...0x9F)
            case 0xF0: (length, secondRange) = (4, 0x90...0xBF)
            case 0xF1...0xF3: length = 4
            case 0xF4: (length, secondRange) = (4, 0x80...0x8F)
            default: return index
            }
            guard index + length <= buffer.count, secondRange.contains(buffer[index + 1]) else { return index }
            for continuation in buffer[(index + 2)..<(index + length)] where continuation & 0xC0 != 0x80 {
                return index
            }
            index += length
        }
        return nil
    }

    /// A short excerpt around `offset` for error messages, with non-printable bytes escaped so the
    /// message stays one readable line.
    static func snippet(_ buffer: UnsafeRawBufferPointer, around offset: Int) -> String {
        let lower = max(0, offset - 16)
        let upper = min(buffer.count, offset + 16)
        var text = lower > 0 ? "…" : ""
        for byte in buffer[lower..<upper] {
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
        }
        if upper < buffer.count { text += "…" }
        return "`\(text)`"
    }
}
