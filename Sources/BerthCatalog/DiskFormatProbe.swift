/// What the first bytes of image data say about its format, checked against the `disk_format` the caller
/// declared. A mismatch matters: a qcow2 file stored as raw boots as garbage, and a raw guest disk that
/// merely starts with a qcow2 header and is opened as qcow2 lets its author pick a backing file on the host.
enum DiskFormatProbe {
    /// Bytes the probe needs from the start of the data.
    static let headerBytes = 104
    static let qcow2Magic: [UInt8] = [0x51, 0x46, 0x49, 0xfb]  // "QFI\xfb"

    struct QCOW2Header: Equatable {
        var version: UInt32
        var virtualSize: Int64
        var hasBackingFile: Bool
        var hasExternalDataFile: Bool
        var isEncrypted: Bool
    }

    static func isQCOW2(_ head: [UInt8]) -> Bool { head.starts(with: qcow2Magic) }

    static func qcow2Header(_ head: [UInt8]) -> QCOW2Header? {
        guard isQCOW2(head), head.count >= 72 else { return nil }
        func bigEndian(_ offset: Int, _ width: Int) -> UInt64 {
            head[offset..<offset + width].reduce(0) { $0 << 8 | UInt64($1) }
        }
        let version = UInt32(bigEndian(4, 4))
        // Version 3 headers carry feature bits at 72; bit 2 of the incompatible ones is "external data file".
        let incompatible = version >= 3 && head.count >= 80 ? bigEndian(72, 8) : 0
        return QCOW2Header(
            version: version,
            virtualSize: Int64(clamping: bigEndian(24, 8)),
            hasBackingFile: bigEndian(8, 8) != 0,
            hasExternalDataFile: incompatible & 0b100 != 0,
            isEncrypted: bigEndian(32, 4) != 0)
    }

    /// The image's virtual size for a declared format whose data starts with `head`, or why the data does
    /// not fit the declaration.
    static func virtualSize(declared format: String, head: [UInt8], size: Int64) throws(CatalogError) -> Int64? {
        if format == "qcow2" {
            guard let header = qcow2Header(head) else {
                throw .invalidImage(
                    "disk_format is qcow2 but the data does not start with a qcow2 header (magic QFI\\xfb); declare "
                        + "its real format (raw?) or convert it with `qemu-img convert -O qcow2`")
            }
            guard header.version == 2 || header.version == 3 else {
                throw .invalidImage(
                    "the data is qcow2 version \(header.version); only versions 2 and 3 are supported. Convert it "
                        + "with `qemu-img convert -O qcow2 -o compat=1.1`")
            }
            guard !header.hasBackingFile, !header.hasExternalDataFile else {
                throw .invalidImage(
                    "the qcow2 data refers to another file (backing file or external data file), which would be "
                        + "read from the worker host; flatten it with `qemu-img convert -O qcow2` first")
            }
            guard !header.isEncrypted else {
                throw .invalidImage(
                    "the qcow2 data is encrypted, which Berth cannot boot; upload a decrypted copy")
            }
            return header.virtualSize
        }
        if isQCOW2(head) {
            throw .invalidImage(
                "the data is a qcow2 file but disk_format says \(format); declare disk_format qcow2 (a qcow2 file "
                    + "opened as \(format) exposes its header to the guest)")
        }
        return format == "raw" || format == "iso" ? size : nil
    }
}
