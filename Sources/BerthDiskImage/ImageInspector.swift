import BerthCore

/// What an image is, decided from its bytes alone, before anything else touches it.
public struct ImageInspection: Sendable, Hashable {
    public let format: ImageFormat
    /// Bytes the image occupies as a disk (the qcow2 virtual size, or the raw file size).
    public let virtualSize: UInt64
    public let fileSize: UInt64
    /// The table walk's findings for a qcow2 image.
    public let qcow2: QCOW2Summary?
    /// The file that was inspected; a later step refuses a file that changed since.
    public let identity: ImageFileIdentity
}

/// The one inspector every path that takes an image runs first: local upload, Glance download, VM boot,
/// snapshot and bare-metal deploy (the model is OpenStack's `format_inspector`, added after CVE-2024-32498).
/// It reads metadata only (headers and tables, never the whole image) and refuses, with `InvalidImage`, an
/// image that could make QEMU or the writer read a host file, crash, or write outside its target.
public enum ImageInspector {
    /// What the image is about to become; the checks grow with what the target needs.
    public enum Target: Sendable, Hashable {
        /// A file QEMU opens: a VM's base image or a snapshot in the catalog.
        case virtualMachine
        /// A node's disk of `sizeBytes` (nil: the disk's current size is checked by the writer).
        case bareMetalDisk(sizeBytes: UInt64, sectorSize: Int)
    }

    public static func inspect(path: String, for target: Target) throws(BerthError) -> ImageInspection {
        try inspect(try ImageSourceFile(path: path), for: target)
    }

    static func inspect(_ file: ImageSourceFile, for target: Target) throws(BerthError) -> ImageInspection {
        guard file.size > 0 else {
            throw .invalidImage("image file \(file.path) is empty; upload the image data")
        }
        let header = try file.readBytes(
            count: Int(min(UInt64(ImageFormat.probeBytes), file.size)), at: 0, what: "the header")
        let format = try ImageFormat.detect(header: header)
        var virtualSize = file.size
        var summary: QCOW2Summary?
        if case .qcow2 = format {
            let image = try QCOW2Image(file: file)
            virtualSize = image.virtualSize
            if case .bareMetalDisk(let diskSize, _) = target { try checkFits(virtualSize, diskSize, file.path, format) }
            summary = try image.validate()
        }
        if case .bareMetalDisk(let diskSize, _) = target { try checkFits(virtualSize, diskSize, file.path, format) }
        return ImageInspection(
            format: format, virtualSize: virtualSize, fileSize: file.size, qcow2: summary, identity: file.identity)
    }

    private static func checkFits(_ virtualSize: UInt64, _ diskSize: UInt64, _ path: String, _ format: ImageFormat)
        throws(BerthError)
    {
        guard virtualSize <= diskSize else {
            throw .invalidImage(
                "image \(path) needs \(virtualSize) bytes (\(format) virtual size), the disk has \(diskSize); pick a "
                    + "node with a bigger disk or a smaller image")
        }
    }
}
