/// Writes XML with every text and attribute value escaped, so nothing a user sends (an instance name, a kernel
/// line, metadata) can end an element or add one. Element and attribute names come from Berth's code, never from
/// input, and are checked with a precondition.
///
/// Characters XML 1.0 cannot hold at all (most C0 controls, U+FFFE, U+FFFF) are replaced with U+FFFD so the
/// output is always well-formed; validation upstream refuses them first, with a message, wherever a user could
/// send them.
public struct XMLWriter: Sendable {
    private var output = ""
    private var open: [String] = []
    /// A start tag is written up to its attributes and not yet closed, so an empty element can end with `/>`.
    private var startTagPending = false
    /// Whether the innermost open element has text content, which suppresses indentation inside it.
    private var hasText = false
    private let indentUnit: String

    /// - Parameter indent: spaces per level; 0 writes everything on one line.
    public init(indent: Int = 2) {
        indentUnit = String(repeating: " ", count: indent)
    }

    /// Opens an element. Attributes whose value is nil are left out, which keeps optional ones readable at the
    /// call site.
    public mutating func start(_ name: String, _ attributes: [(String, String?)] = []) {
        precondition(Self.isValidName(name), "XML element name \(name) is not a valid name")
        closePendingStartTag()
        newline(depth: open.count)
        output += "<" + name
        for (key, value) in attributes {
            guard let value else { continue }
            precondition(Self.isValidName(key), "XML attribute name \(key) is not a valid name")
            output += " " + key + "='" + Self.escapeAttribute(value) + "'"
        }
        open.append(name)
        startTagPending = true
        hasText = false
    }

    /// Closes the innermost open element.
    public mutating func end() {
        guard let name = open.popLast() else { preconditionFailure("XMLWriter.end() without an open element") }
        if startTagPending {
            output += "/>"
            startTagPending = false
        } else {
            if !hasText { newline(depth: open.count) }
            output += "</" + name + ">"
        }
        hasText = false
    }

    /// Escaped character data inside the innermost open element.
    public mutating func text(_ text: String) {
        precondition(!open.isEmpty, "XMLWriter.text() outside an element")
        closePendingStartTag()
        output += Self.escapeText(text)
        hasText = true
    }

    /// `<name attr='...'>text</name>`, or `<name attr='...'/>` without text.
    public mutating func element(_ name: String, _ attributes: [(String, String?)] = [], text: String? = nil) {
        start(name, attributes)
        if let text, !text.isEmpty { self.text(text) }
        end()
    }

    /// An element whose children `body` writes.
    public mutating func element(
        _ name: String, _ attributes: [(String, String?)] = [], _ body: (inout XMLWriter) -> Void
    ) {
        start(name, attributes)
        body(&self)
        end()
    }

    /// The document; every element must be closed.
    public var result: String {
        precondition(open.isEmpty, "XMLWriter.result with unclosed elements: \(open.joined(separator: ", "))")
        return output + (indentUnit.isEmpty ? "" : "\n")
    }

    private mutating func closePendingStartTag() {
        if startTagPending {
            output += ">"
            startTagPending = false
        }
    }

    private mutating func newline(depth: Int) {
        guard !indentUnit.isEmpty, !output.isEmpty else { return }
        output += "\n" + String(repeating: indentUnit, count: depth)
    }

    // MARK: Escaping

    /// Whether XML 1.0 can hold the character at all (its `Char` production).
    public static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x9, 0xA, 0xD: true
        case 0x20...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: true
        default: false
        }
    }

    /// Text content. `>` is escaped too, which also breaks up a `]]>` that a reader could take for the end of a
    /// CDATA section, and carriage return is written as a reference because a parser turns a literal one into
    /// a line feed.
    public static func escapeText(_ text: String) -> String {
        escape(text, newlines: false)
    }

    /// Attribute values (always quoted). Tab and line breaks become references: a parser replaces the literal
    /// characters with spaces (attribute-value normalisation), which would change the value on the way back.
    public static func escapeAttribute(_ text: String) -> String {
        escape(text, newlines: true)
    }

    private static func escape(_ text: String, newlines: Bool) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&apos;"
            case "\r": result += "&#13;"
            case "\n" where newlines: result += "&#10;"
            case "\t" where newlines: result += "&#9;"
            default:
                if isAllowed(scalar) {
                    result.unicodeScalars.append(scalar)
                } else {
                    result.unicodeScalars.append("\u{FFFD}")
                }
            }
        }
        return result
    }

    /// ASCII XML names (with a namespace prefix): all Berth and libvirt use.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first != "-", first != ".", !("0"..."9").contains(first) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ".", ":": true
            default: false
            }
        }
    }
}
