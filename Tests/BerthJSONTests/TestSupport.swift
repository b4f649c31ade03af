import BerthJSON

/// The error `JSONCodec.parse` throws for `bytes`, or nil when it parses.
func parseError(_ bytes: [UInt8], limits: JSONLimits = .default) -> JSONError? {
    do {
        _ = try JSONCodec.parse(bytes, limits: limits)
        return nil
    } catch {
        return error
    }
}

func parseError(_ text: String, limits: JSONLimits = .default) -> JSONError? {
    parseError(Array(text.utf8), limits: limits)
}

func nested(_ depth: Int, open: String = "[", close: String = "]", inner: String = "1") -> String {
    String(repeating: open, count: depth) + inner + String(repeating: close, count: depth)
}
