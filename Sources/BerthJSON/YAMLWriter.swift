import BerthJSONValue

/// A JSON value written as a YAML block document, as `openstack … -f yaml` prints records: a mapping per
/// record, a sequence of them for a list. Every value the writer gets is read back (by PyYAML's `safe_load`,
/// libyaml, any YAML 1.1 or 1.2 reader) as the same JSON value, whatever the strings hold: names come from the
/// catalog, and Glance's are anyone's.
///
/// A string is written plain only when it cannot be read as anything else: it starts with a letter, holds
/// only letters, digits, spaces inside and `_-./@+`, and is not one of YAML's null or boolean words. Anything
/// else is double-quoted, with every character YAML may not carry as it is (control characters, line breaks
/// of every kind, the byte-order mark) escaped, so a document is one line per key and nothing moves the
/// terminal's cursor.
public enum YAMLWriter {
    /// The document for `value`, ending in a newline.
    public static func document(_ value: JSONValue) -> String {
        var lines: [String] = []
        write(value, indent: "", into: &lines)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Implicit keys longer than this are an error to YAML readers (the spec's limit is 1024 characters,
    /// `: ` included); longer keys are written as explicit `? key` entries.
    static let longestImplicitKey = 1000

    /// Appends `value` as a block node whose lines start with `indent`; a scalar or an empty collection
    /// is one line.
    private static func write(_ value: JSONValue, indent: String, into lines: inout [String]) {
        switch value {
        case .object(let object) where !object.isEmpty:
            for (key, member) in object {
                let keyText = scalar(.string(key))
                if keyText.unicodeScalars.count > longestImplicitKey {
                    lines.append(indent + "? " + keyText)
                    writeValue(member, after: indent + ":", indent: indent, into: &lines)
                } else {
                    writeValue(member, after: indent + keyText + ":", indent: indent, into: &lines)
                }
            }
        case .array(let items) where !items.isEmpty:
            for item in items {
                if let inline = inline(item) {
                    lines.append(indent + "- " + inline)
                } else {
                    // A nested collection starts on the dash's line: "- id: …" then "  name: …".
                    var nested: [String] = []
                    write(item, indent: indent + "  ", into: &nested)
                    nested[0] = indent + "- " + nested[0].dropFirst(indent.count + 2)
                    lines += nested
                }
            }
        default:
            lines.append(indent + inline(value)!)
        }
    }

    /// A mapping's value: on the key's line when it is inline, else as a block indented under it.
    private static func writeValue(_ value: JSONValue, after prefix: String, indent: String, into lines: inout [String])
    {
        if let inline = inline(value) {
            lines.append(prefix + " " + inline)
        } else {
            lines.append(prefix)
            write(value, indent: indent + "  ", into: &lines)
        }
    }

    /// The one-line form of a scalar or an empty collection; nil for a collection with members.
    private static func inline(_ value: JSONValue) -> String? {
        switch value {
        case .object(let object): object.isEmpty ? "{}" : nil
        case .array(let items): items.isEmpty ? "[]" : nil
        default: scalar(value)
        }
    }

    /// A scalar as YAML reads it back: the JSON spelling for null, booleans and integers; a float always with a
    /// dot and a signed exponent (YAML 1.1 reads `1e+300` as a string); strings plain or double-quoted.
    static func scalar(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let number): return String(number)
        case .double(let number): return float(number)
        case .string(let text): return isPlain(text) ? text : doubleQuoted(text)
        case .array, .object: preconditionFailure("a collection is not a scalar")
        }
    }

    private static func float(_ number: Double) -> String {
        if number.isNaN { return ".nan" }
        if number.isInfinite { return number < 0 ? "-.inf" : ".inf" }
        let text = String(number)  // the shortest spelling that reads back exactly: 0.1, 1e-05, 1e+300
        guard !text.contains(".") else { return text }
        guard let exponent = text.firstIndex(of: "e") else { return text + ".0" }
        return text[..<exponent] + ".0" + text[exponent...]
    }

    /// Words YAML 1.1 (PyYAML) or 1.2 reads as null or a boolean, compared without case.
    private static let reservedWords: Set<String> = ["null", "true", "false", "yes", "no", "y", "n", "on", "off"]

    static func isPlain(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, isLetter(first), text.unicodeScalars.last != " ",
            !reservedWords.contains(text.lowercased())
        else {
            return false
        }
        return text.unicodeScalars.allSatisfy {
            isLetter($0) || ("0"..."9").contains($0) || "_-./@+ ".unicodeScalars.contains($0)
        }
    }

    /// A letter that is safe unquoted: ASCII, or beyond Latin-1 (where YAML's line breaks U+0085, U+2028 and
    /// U+2029 and the byte-order mark are not letters).
    private static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isAlphabetic && (scalar.isASCII || scalar.value >= 0xA0)
    }

    static func doubleQuoted(_ text: String) -> String {
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case "\0": quoted += "\\0"
            case _ where isPrintable(scalar): quoted.unicodeScalars.append(scalar)
            case _ where scalar.value <= 0xFF: quoted += "\\x" + hex(scalar.value, digits: 2)
            case _ where scalar.value <= 0xFFFF: quoted += "\\u" + hex(scalar.value, digits: 4)
            default: quoted += "\\U" + hex(scalar.value, digits: 8)
            }
        }
        return quoted + "\""
    }

    /// YAML's printable characters less its line breaks (U+0085, U+2028, U+2029) and the byte-order mark.
    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x2028, 0x2029, 0xFEFF: false
        case 0x20...0x7E, 0xA0...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: true
        default: false
        }
    }

    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}
