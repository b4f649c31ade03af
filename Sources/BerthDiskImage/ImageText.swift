/// Text taken from an image for a message (a qcow2 backing-file name, say): printable ASCII only, other bytes
/// escaped, cut short, so a name in an image can neither forge a log line nor flood a reply.
enum ImageText {
    static func quoted(_ bytes: [UInt8], limit: Int = 64) -> String {
        var text = "\""
        for byte in bytes.prefix(limit) {
            switch byte {
            case UInt8(ascii: "\n"): text += "\\n"
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): text += "\\" + String(Unicode.Scalar(byte))
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
        }
        return text + (bytes.count > limit ? "\"... (\(bytes.count) bytes)" : "\"")
    }
}
