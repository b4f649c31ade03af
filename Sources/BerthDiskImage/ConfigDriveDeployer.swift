import BerthCore

/// Where the config drive went.
public struct ConfigDriveReport: Sendable, Hashable {
    /// The kernel's partition number (`sda<number>`).
    public var partitionNumber: Int
    /// Byte offset and size of the partition on the disk.
    public var offset: UInt64
    public var size: UInt64
    /// True when the image had no config partition and Berth added one.
    public var created: Bool
    public var match: ConfigPartition.Match
}

/// DESIGN §6 steps 3 and 4: after the image is on the disk, find (or add) the config partition and write
/// a config-drive-v2 vfat filesystem labelled `config-2` into it.
public enum ConfigDriveDeployer {
    public static func write(diskPath: String, sectorSize: Int = 512, content: ConfigDriveContent) throws(BerthError)
        -> ConfigDriveReport
    {
        let disk = try PartitionDiskFile(path: diskPath, writable: true)
        // The kernel still holds the table from before the image was written; BLKRRPART makes it current
        // (files are parsed directly, so this is a no-op for them).
        try disk.rereadPartitionTable()
        let table = try PartitionTable.read(from: disk, sectorSize: sectorSize)
        let partition: ConfigPartition
        if let found = try ConfigPartitionFinder.find(in: table, disk: disk) {
            partition = found
            if case .gpt(let gpt) = table {
                // An image smaller than the disk left its backup GPT mid-disk: put it at the end, as `sgdisk -e`.
                try ConfigPartitionCreator.relocateBackupGPT(on: disk, table: gpt)
            }
        } else {
            partition = try ConfigPartitionCreator.create(on: disk, table: table)
        }

        let writer = FATImageWriter(label: ConfigPartitionFinder.label, sectorSize: sectorSize)
        try writer.write(
            files: content.files(), to: disk, offset: partition.offset, size: partition.size,
            hiddenSectors: partition.firstLBA)
        try disk.synchronize()
        if partition.match == .created {
            // Best effort: the node reboots into the new table anyway, and everything is already on disk, so
            // a busy device here is no reason to fail the deploy.
            try? disk.rereadPartitionTable()
        }
        return ConfigDriveReport(
            partitionNumber: partition.number, offset: partition.offset, size: partition.size,
            created: partition.match == .created, match: partition.match)
    }
}
