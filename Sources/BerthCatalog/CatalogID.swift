import Foundation

/// A record id that is safe to use as a file name: a canonical UUID, lowercased.
///
/// Ids arrive from the bus and the command line; only this type turns them into path components, so a
/// value such as `../../etc/passwd` never reaches `open(2)`.
struct CatalogID: Sendable, Hashable, CustomStringConvertible {
    let value: String

    /// Accepts the canonical 8-4-4-4-12 hex form in either case; nothing else (no braces, `urn:uuid:`,
    /// or dash-less form), so every record has exactly one spelling on disk.
    init?(_ text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return nil }
        for (offset, byte) in bytes.enumerated() {
            switch offset {
            case 8, 13, 18, 23:
                guard byte == UInt8(ascii: "-") else { return nil }
            default:
                let isHex = (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x66)
                guard isHex else { return nil }
            }
        }
        value = text.lowercased()
    }

    private init(minted: String) { value = minted }

    /// A fresh random (version 4) id.
    static func mint() -> CatalogID { CatalogID(minted: UUID().uuidString.lowercased()) }

    var description: String { value }

    /// For messages: an id that failed validation, shortened and with control characters escaped so a
    /// hostile value cannot forge log lines.
    static func quoted(_ text: String) -> String {
        let shown = text.count > 64 ? String(text.prefix(64)) + "…" : text
        return "\""
            + shown.unicodeScalars.map {
                $0.properties.generalCategory == .control
                    ? $0.escaped(asASCII: true) : String($0)
            }.joined() + "\""
    }
}
