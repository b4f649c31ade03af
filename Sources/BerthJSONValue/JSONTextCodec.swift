/// JSON text to `JSONValue` and back. BerthJSON's `JSONCodec` (json-c) is the one the worker uses; a module that
/// links no C library (BerthCore) takes it from its caller for the few JSON documents Glance stores as string
/// properties (`boot_options`, `block_device_mapping`), so the rules stay pure and the parser stays the one that
/// enforces `JSONLimits` on every other JSON input.
public protocol JSONTextCodec {
    /// Refuses text over `limits` before reading it, as every other JSON input is refused.
    static func parse(_ text: String, limits: JSONLimits) throws(JSONError) -> JSONValue
    static func serializeString(_ value: JSONValue) -> String
}
