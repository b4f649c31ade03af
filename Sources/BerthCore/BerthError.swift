/// An error of Berth's RPC API (DESIGN §3). `className` is the failure class a client sees
/// (`berth.exceptions.<className>`); `message` says what was wrong and what to change, because the caller
/// of a cast only ever reads it in a notification and cannot ask back.
public struct BerthError: Error, Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The RPC failure classes. Raw values are the Python class names and must not change: clients match on them.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case invalidRequest = "InvalidRequest"
        case imageNotFound = "ImageNotFound"
        case volumeNotFound = "VolumeNotFound"
        case invalidImage = "InvalidImage"
        case invalidMetadata = "InvalidMetadata"
        case hostIncompatible = "HostIncompatible"
        case instanceExists = "InstanceExists"
        case instanceNotFound = "InstanceNotFound"
        case nodeNotFound = "NodeNotFound"
        case buildFailed = "BuildFailed"
        case deployFailed = "DeployFailed"
        case snapshotFailed = "SnapshotFailed"
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The failure class name on the wire (`InvalidImage`, ...).
    public var className: String { kind.rawValue }

    public var description: String { "\(className): \(message)" }
}

extension BerthError {
    public static func invalidRequest(_ message: String) -> BerthError { BerthError(.invalidRequest, message) }
    public static func invalidImage(_ message: String) -> BerthError { BerthError(.invalidImage, message) }
    public static func invalidMetadata(_ message: String) -> BerthError { BerthError(.invalidMetadata, message) }
    public static func hostIncompatible(_ message: String) -> BerthError { BerthError(.hostIncompatible, message) }
    public static func buildFailed(_ message: String) -> BerthError { BerthError(.buildFailed, message) }
    public static func deployFailed(_ message: String) -> BerthError { BerthError(.deployFailed, message) }
    public static func snapshotFailed(_ message: String) -> BerthError { BerthError(.snapshotFailed, message) }

    public static func imageNotFound(_ imageID: String) -> BerthError {
        BerthError(
            .imageNotFound,
            "image \(quoted(imageID)) is not in the catalog; check the id with `berth images list` or upload the image")
    }

    public static func volumeNotFound(_ volumeID: String) -> BerthError {
        BerthError(
            .volumeNotFound,
            "volume \(quoted(volumeID)) is not in the catalog; check the id with `berth volumes list`")
    }

    public static func instanceNotFound(_ uuid: String) -> BerthError {
        BerthError(.instanceNotFound, "no instance \(uuid) exists on this host; check the uuid and the host")
    }

    public static func nodeNotFound(_ node: String, known: [String]) -> BerthError {
        let list = known.isEmpty ? "none" : known.sorted().joined(separator: ", ")
        return BerthError(
            .nodeNotFound,
            "node \(quoted(node)) is not in this worker's bare-metal inventory (known nodes: \(list)); "
                + "pick one of them or add the node to the inventory")
    }

    /// A boot with a uuid that already exists with a different spec. `differences` names what differs, so the
    /// caller can tell a genuine clash from a retry that changed something by mistake.
    public static func instanceExists(_ uuid: String, differences: [String]) -> BerthError {
        let detail = differences.isEmpty ? "" : " (\(differences.joined(separator: "; ")))"
        return BerthError(
            .instanceExists,
            "instance \(uuid) already exists with a different spec\(detail); delete it first or boot with a new uuid")
    }
}

/// A value in an error message: JSON-style quotes, control characters escaped, long values cut, so a
/// message stays one readable line whatever the input held.
func quoted(_ text: String, limit: Int = 64) -> String {
    var result = "\""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit {
            result += "…"
            break
        }
        count += 1
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\t": result += "\\t"
        case "\r": result += "\\r"
        default:
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                result += "\\u" + hex4(scalar.value)
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}

func hex4(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}

/// `U+000A (line feed)` — how messages name an offending character.
func describeCharacter(_ scalar: Unicode.Scalar) -> String {
    let names: [UInt32: String] = [
        0x00: "NUL", 0x07: "bell", 0x08: "backspace", 0x09: "tab", 0x0A: "line feed", 0x0B: "vertical tab",
        0x0C: "form feed", 0x0D: "carriage return", 0x1B: "escape", 0x7F: "DEL",
    ]
    let code = "U+" + hex4(scalar.value)
    if let name = names[scalar.value] { return "\(code) (\(name))" }
    if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) { return "\(code) (control character)" }
    return code
}

/// Control characters: C0, DEL and C1. None of them belongs in a name, a command line or an XML attribute.
func isControl(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
}
