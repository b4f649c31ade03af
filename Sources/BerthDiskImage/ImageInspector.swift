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
    /// For a bare-metal disk with a config drive: the partition the config step will write, found in the
    /// image's own table or where it will be added.
    public let configPartition: ConfigPartition?
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
        /// A node's disk of `sizeBytes`. The image's partition table must be sane, and with `configDrive` it
        /// must have (or have room for) the config partition, as the config step will need after the write.
        case bareMetalDisk(sizeBytes: UInt64, sectorSize: Int, configDrive: Bool = true)
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
        var qcow2: QCOW2Image?
        if case .qcow2 = format { qcow2 = try QCOW2Image(file: file) }
        let virtualSize = qcow2?.virtualSize ?? file.size
        guard case .bareMetalDisk(let diskSize, let sectorSize, let configDrive) = target else {
            return ImageInspection(
                format: format, virtualSize: virtualSize, fileSize: file.size, qcow2: try qcow2?.validate(),
                identity: file.identity, configPartition: nil)
        }
        // First, before any table is walked: a small file claiming a huge disk is refused at once.
        try checkFits(virtualSize, diskSize, file.path, format)
        // The writer inflates every compressed cluster anyway; doing it here refuses a corrupt one before the
        // disk is touched.
        let summary = try qcow2?.validate(inflatingCompressed: true)
        let configPartition = try checkPartitions(
            ImageVirtualDisk(file: file, qcow2: qcow2), diskSectors: diskSize / UInt64(sectorSize),
            sectorSize: sectorSize, configDrive: configDrive)
        return ImageInspection(
            format: format, virtualSize: virtualSize, fileSize: file.size, qcow2: summary, identity: file.identity,
            configPartition: configPartition)
    }

    /// Reads the image's partition table as the node's disk will hold it and makes the config step's decision
    /// (find the config partition or place a new one). The partition code says DeployFailed because it also
    /// judges a written disk; here the image is at fault, so the refusal is InvalidImage.
    private static func checkPartitions(
        _ disk: ImageVirtualDisk, diskSectors: UInt64, sectorSize: Int, configDrive: Bool
    ) throws(BerthError) -> ConfigPartition? {
        do {
            let table = try PartitionTable.read(from: disk, sectorSize: sectorSize, diskSectors: diskSectors)
            return configDrive ? try ConfigPartitionFinder.findOrPlace(in: table, disk: disk) : nil
        } catch  where error.kind == .deployFailed {
            throw .invalidImage(error.message)
        }
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
