import CJSONC

/// The one owner of a json-c tree: whoever holds it holds one reference, released in `deinit`.
/// A `nil` root is JSON null, which json-c represents as a NULL pointer.
final class JSONCTree {
    let root: OpaquePointer?

    init(owning root: OpaquePointer?) {
        self.root = root
    }

    deinit {
        if let root { json_object_put(root) }
    }

    /// The tree as JSON text without whitespace, copied out because json-c keeps the rendered string
    /// inside the object and frees it with the tree.
    func render() -> [UInt8] {
        var length = 0
        let flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE
        guard let text = json_object_to_json_string_length(root, flags, &length) else {
            fatalError("json-c could not render a JSON document (out of memory)")
        }
        return Array(UnsafeRawBufferPointer(start: text, count: length))
    }
}

/// The one owner of a `json_tokener`, freed in `deinit`. Strict and UTF-8 validating; one instance
/// parses exactly one document.
final class JSONTokener {
    private let tokener: UnsafeMutablePointer<json_tokener>

    init?(maxDepth: Int) {
        guard let tokener = json_tokener_new_ex(Int32(clamping: maxDepth)) else { return nil }
        json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8)
        self.tokener = tokener
    }

    deinit {
        json_tokener_free(tokener)
    }

    /// Feeds bytes to json-c. The result owns whatever json-c returned, including partial results
    /// never produced on error (json-c frees those itself).
    func feed(_ bytes: UnsafeRawBufferPointer) -> JSONCTree {
        precondition(bytes.count <= Int(Int32.max), "json-c takes an int length")
        guard let base = bytes.baseAddress else {
            return JSONCTree(owning: nil)
        }
        let root = base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
            json_tokener_parse_ex(tokener, $0, Int32(bytes.count))
        }
        return JSONCTree(owning: root)
    }

    var error: json_tokener_error { json_tokener_get_error(tokener) }

    /// Offset of the first byte not consumed by the last `feed`, relative to that call's buffer.
    var parseEnd: Int { Int(json_tokener_get_parse_end(tokener)) }
}
