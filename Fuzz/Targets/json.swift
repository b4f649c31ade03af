import BerthCore
import BerthJSON

/// Deepest nesting the codec honours at all: the recursion in json-c and in the conversion must survive it.
private let deepest = JSONLimits(maxBytes: 4 << 20, maxDepth: JSONLimits.depthCeiling)

/// JSON intake: the codec with the worker's limits and with the deepest nesting it allows, the round trip
/// (what Berth serialises parses back to the same value), and `boot_instance`'s request decoding with its
/// field limits, on the document itself and on its `instance` member.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    _ = try? JSONCodec.parse(bytes, limits: .default)
    guard let value = try? JSONCodec.parse(bytes, limits: deepest) else { return 0 }
    let text = JSONCodec.serialize(value)
    let again: JSONValue
    do {
        again = try JSONCodec.parse(text, limits: deepest)
    } catch {
        fuzzViolation("serialised JSON does not parse back: \(error)")
    }
    if again != value { fuzzViolation("serialised JSON parses back to a different value") }
    _ = try? BootRequest.decode(value)
    if let instance = value["instance"] { _ = try? BootRequest.decode(instance) }
    return 0
}
