import BerthCore
import BerthDiskImage

#if canImport(Glibc)
    import Glibc
#endif

/// Image data judged by `ImageInspector`, the one inspector every path runs (local upload, Glance upload and
/// download, snapshot, VM boot, bare-metal deploy), and checked against the `disk_format` the caller declared. A
/// mismatch matters: a qcow2 file stored as raw boots as garbage, and a raw guest disk that merely starts with a
/// qcow2 header and is opened as qcow2 lets its author pick a backing file on the host.
public enum ImageDataInspection {
    /// The image's virtual size (nil for a format whose size Berth does not read), or why the data at `path` may
    /// not be stored or booted as `format`.
    public static func inspect(path: String, declared format: String) throws(CatalogError) -> Int64? {
        // A kernel or ramdisk is handed to QEMU as a file (-kernel, -initrd), never opened as a disk; a ramdisk is
        // often gzip or zstd, which the disk inspector rightly refuses as a disk. Only the qcow2 rule applies.
        if format == "aki" || format == "ari" {
            if try startsWithQCOW2Magic(path) { throw qcow2Declared(as: format) }
            return nil
        }
        let inspection: ImageInspection
        do {
            inspection = try ImageInspector.inspect(path: path, for: .virtualMachine)
        } catch {
            throw catalogError(error)
        }
        switch (format, inspection.format) {
        case ("qcow2", .qcow2):
            return Int64(clamping: inspection.virtualSize)
        case ("qcow2", _):
            throw .invalidImage(
                "disk_format is qcow2 but the data does not start with a qcow2 header (magic QFI\\xfb); declare "
                    + "its real format (raw?) or convert it with `qemu-img convert -O qcow2`")
        case (_, .qcow2):
            throw qcow2Declared(as: format)
        default:
            return format == "raw" || format == "iso" ? Int64(clamping: inspection.virtualSize) : nil
        }
    }

    /// The inspector's refusal in the catalog's terms, its message unchanged: VM boot and bare-metal deploy
    /// refuse an image with the same words. An image that cannot be read is the catalog's failure, not the image's.
    public static func catalogError(_ error: BerthError) -> CatalogError {
        switch error.kind {
        case .invalidImage: .invalidImage(error.message)
        default: .unavailable(error.message)
        }
    }

    private static func qcow2Declared(as format: String) -> CatalogError {
        .invalidImage(
            "the data is a qcow2 file but disk_format says \(format); declare disk_format qcow2 (a qcow2 file "
                + "opened as \(format) exposes its header to the guest)")
    }

    private static let qcow2Magic: [UInt8] = [0x51, 0x46, 0x49, 0xfb]  // "QFI\xfb"

    private static func startsWithQCOW2Magic(_ path: String) throws(CatalogError) -> Bool {
        let file = try Files.open(path, O_RDONLY, action: "open")
        defer { file.closeQuietly() }
        var head = [UInt8](repeating: 0, count: qcow2Magic.count)
        let got = try head.withUnsafeMutableBytes { buffer in
            Result { () throws(CatalogError) -> Int in try Files.readFull(file, into: buffer, action: "read") }
        }.get()
        return got == qcow2Magic.count && head == qcow2Magic
    }
}
