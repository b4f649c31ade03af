import BerthCore

/// Adds a config partition at the end of a disk whose image brought none (DESIGN §6 step 3).
///
/// On GPT the partition is typed Microsoft basic data (what a FAT partition is on GPT) and named
/// `config-2`, so Berth's own finder recognises it by name on a redeploy.
///
/// On MBR it is typed 0x99, not a FAT type such as 0x0E: cloud-init (and Ironic's agent) find the config
/// drive by its filesystem label through blkid, which ignores the partition type, so the type only matters to
/// whoever looks for the partition *before* it holds a filesystem. 0x99 is that contract (DESIGN §6 and the
/// original Ironic proposal), it lets a redeploy find the partition even when its filesystem is damaged, and
/// it keeps operating systems that mount by type (Windows) from giving the metadata partition a drive letter.
public enum ConfigPartitionCreator {
    /// 64 MiB, as Ironic makes it: room for any config drive, negligible on a bare-metal disk.
    public static let partitionBytes: UInt64 = 64 << 20
    /// Partitions start on a 1 MiB boundary, as parted and sgdisk align them, which suits any erase block.
    public static let alignmentBytes: UInt64 = 1 << 20
    public static let gptName = "config-2"
    public static let mbrType: UInt8 = 0x99

    public static func create(diskPath: String, table: PartitionTable) throws(BerthError) -> ConfigPartition {
        let disk = try PartitionDiskFile(path: diskPath, writable: true)
        let partition = try create(on: disk, table: table)
        try disk.synchronize()
        return partition
    }

    static func create(on disk: PartitionDiskFile, table: PartitionTable) throws(BerthError) -> ConfigPartition {
        let partition = try place(in: table, diskPath: disk.path)
        switch table {
        case .none:
            preconditionFailure("place(in:) refuses a disk without a partition table")
        case .gpt(let gpt):
            let entry = GPTPartitionEntry(
                number: partition.number, typeGUID: .microsoftBasicData, uniqueGUID: .random(),
                firstLBA: partition.firstLBA, lastLBA: partition.firstLBA + partition.sectorCount - 1, attributes: 0,
                name: gptName)
            try rewriteGPTAtDiskEnd(on: disk, table: gpt, adding: entry)
        case .mbr(let mbr):
            try writeMBRSlot(partition, on: disk, table: mbr)
        }
        return partition
    }

    /// Where the config partition goes, or why it cannot be added, without writing: the deploy plan asks this
    /// of the image before the image is written, the config step of the disk after.
    static func place(in table: PartitionTable, diskPath: String) throws(BerthError) -> ConfigPartition {
        switch table {
        case .none:
            throw .deployFailed(
                "\(diskPath) has no partition table, so there is nowhere to add the config drive partition; "
                    + "deploy a partitioned (GPT or MBR) whole-disk image")
        case .gpt(let gpt):
            return try placeGPT(gpt, diskPath: diskPath)
        case .mbr(let mbr):
            return try placeMBR(mbr, diskPath: diskPath)
        }
    }

    /// Where a partition of `partitionBytes` goes when the free space ends at `endLBA` (inclusive): as late
    /// as possible with an aligned start.
    static func placement(endLBA: UInt64, sectorSize: Int) -> (first: UInt64, count: UInt64)? {
        let count = partitionBytes / UInt64(sectorSize)
        let alignment = alignmentBytes / UInt64(sectorSize)
        guard endLBA + 1 >= count else { return nil }
        return ((endLBA + 1 - count) / alignment * alignment, count)
    }

    // MARK: GPT

    /// The config partition's place on a GPT disk once the backup table is moved to the disk's real end (an
    /// image smaller than the disk left it in the middle) and the usable area grown to match.
    static func placeGPT(_ table: GPTTable, diskPath: String) throws(BerthError) -> ConfigPartition {
        let sectorSize = table.sectorSize
        let header = table.header
        let entrySectors = header.entrySectors(sectorSize: sectorSize)
        let backupEntriesLBA = table.diskSectors - 1 - entrySectors
        let lastUsable = backupEntriesLBA - 1

        guard let slot = table.firstFreeSlot else {
            throw .deployFailed(
                "all \(header.entryCount) GPT entries of \(diskPath) are in use, so no config partition can be "
                    + "added; give the image a `config-2` partition or leave an entry free")
        }
        let lastUsed = table.partitions.map(\.lastLBA).max() ?? (header.firstUsableLBA - 1)
        guard let (firstLBA, count) = placement(endLBA: lastUsable, sectorSize: sectorSize),
            firstLBA > lastUsed, firstLBA >= header.firstUsableLBA
        else {
            throw noRoom(diskPath: diskPath, sectorSize: sectorSize, lastUsed: lastUsed, endLBA: lastUsable)
        }
        return ConfigPartition(
            number: slot, firstLBA: firstLBA, sectorCount: count, sectorSize: sectorSize, match: .created)
    }

    /// Moves the backup GPT of an image written to a bigger disk to the disk's real end and grows the usable
    /// area to match, as `sgdisk -e` (and Ironic's agent after every whole-disk image) does. A no-op when the
    /// backup is already there. Returns true when it moved the table.
    @discardableResult
    static func relocateBackupGPT(on disk: PartitionDiskFile, table: GPTTable) throws(BerthError) -> Bool {
        guard table.header.alternateLBA != table.diskSectors - 1 else { return false }
        try rewriteGPTAtDiskEnd(on: disk, table: table, adding: nil)
        return true
    }

    /// Writes the GPT (with `entry` added, if any) so that its backup sits at the disk's last sector.
    ///
    /// Write order keeps a valid table on disk at every step: the new backup first (nothing points at it
    /// yet), then the primary (which now points at the new backup), and only then the old backup is wiped.
    static func rewriteGPTAtDiskEnd(
        on disk: PartitionDiskFile, table: GPTTable, adding entry: GPTPartitionEntry?
    ) throws(BerthError) {
        let sectorSize = table.sectorSize
        let header = table.header
        let entrySectors = header.entrySectors(sectorSize: sectorSize)
        let backupLBA = table.diskSectors - 1
        let backupEntriesLBA = backupLBA - entrySectors
        let lastUsable = backupEntriesLBA - 1
        let lastUsed = table.partitions.map(\.lastLBA).max() ?? (header.firstUsableLBA - 1)

        var entries = table.entryArray
        if let entry {
            let start = (entry.number - 1) * Int(header.entrySize)
            entries.replaceSubrange(start..<start + Int(header.entrySize), with: entry.serialized())
        }
        entries.append(contentsOf: [UInt8](repeating: 0, count: max(0, Int(entrySectors) * sectorSize - entries.count)))
        let entriesCRC = PartitionCRC32.checksum(entries[0..<Int(header.entryCount) * Int(header.entrySize)])

        var primary = header
        primary.alternateLBA = backupLBA
        primary.lastUsableLBA = lastUsable
        primary.entriesCRC32 = entriesCRC
        var backup = primary
        backup.currentLBA = backupLBA
        backup.alternateLBA = 1
        backup.entriesLBA = backupEntriesLBA

        let sector = UInt64(sectorSize)
        try disk.write(entries, at: backupEntriesLBA * sector)
        try disk.write(backup.serialized(sectorSize: sectorSize), at: backupLBA * sector)
        try disk.synchronize()
        try disk.write(entries, at: primary.entriesLBA * sector)
        try disk.write(primary.serialized(sectorSize: sectorSize), at: sector)
        try growProtectiveMBR(on: disk, sectorSize: sectorSize, diskSectors: table.diskSectors)
        try disk.synchronize()
        // A stale "EFI PART" left mid-disk could be taken for a table by recovery tools; it is past every
        // image partition (it was the image's last sector), so clearing it touches no data.
        let oldBackup = header.alternateLBA
        if oldBackup != backupLBA, oldBackup > lastUsed, oldBackup > 1, oldBackup < table.diskSectors {
            try disk.write([UInt8](repeating: 0, count: sectorSize), at: oldBackup * sector)
        }
    }

    /// A pure protective MBR covers the whole disk (or 2^32-1 sectors); the image's covered only the image.
    /// A hybrid MBR is left alone: its 0xEE slot deliberately covers only part of the disk.
    private static func growProtectiveMBR(on disk: PartitionDiskFile, sectorSize: Int, diskSectors: UInt64)
        throws(BerthError)
    {
        var sector0 = try disk.read(at: 0, count: sectorSize)
        guard let slots = MBRTable.primarySlots(sector0), slots.count == 1, let slot = slots.first,
            slot.type == MBRTable.protectiveType, slot.firstLBA == 1
        else { return }
        let count = min(diskSectors - 1, 0xFFFF_FFFF)
        let base = 446 + 16 * (slot.number - 1)
        PartitionBytes.put32(UInt32(count), into: &sector0, at: base + 12)
        sector0.replaceSubrange((base + 5)..<(base + 8), with: chs(lba: count))
        try disk.write(sector0, at: 0)
    }

    // MARK: MBR

    static func placeMBR(_ table: MBRTable, diskPath: String) throws(BerthError) -> ConfigPartition {
        let sectorSize = table.sectorSize
        guard let slot = table.freePrimarySlots.first else {
            throw .deployFailed(
                "MBR has no free primary partition slot for the config drive; the image on \(diskPath) uses all "
                    + "four primary slots and Berth does not add logical partitions — use a GPT image or leave a "
                    + "slot free (or give the image a partition of type 0x99 or labelled config-2)")
        }
        // MBR fields are 32-bit sector numbers: 2 TiB with 512-byte sectors, 16 TiB with 4096.
        let addressable = min(table.diskSectors, 0xFFFF_FFFF)
        let lastUsed = table.partitions.map(\.lastLBA).max() ?? 0
        guard let (firstLBA, count) = placement(endLBA: addressable - 1, sectorSize: sectorSize), firstLBA > lastUsed
        else {
            throw noRoom(
                diskPath: diskPath, sectorSize: sectorSize, lastUsed: lastUsed, endLBA: addressable - 1, mbr: true)
        }
        return ConfigPartition(
            number: slot, firstLBA: firstLBA, sectorCount: count, sectorSize: sectorSize, match: .created)
    }

    private static func writeMBRSlot(_ partition: ConfigPartition, on disk: PartitionDiskFile, table: MBRTable)
        throws(BerthError)
    {
        let firstLBA = partition.firstLBA
        let count = partition.sectorCount
        var sector0 = table.bootSector
        let base = 446 + 16 * (partition.number - 1)
        sector0[base] = 0
        sector0.replaceSubrange((base + 1)..<(base + 4), with: chs(lba: firstLBA))
        sector0[base + 4] = mbrType
        sector0.replaceSubrange((base + 5)..<(base + 8), with: chs(lba: firstLBA + count - 1))
        PartitionBytes.put32(UInt32(firstLBA), into: &sector0, at: base + 8)
        PartitionBytes.put32(UInt32(count), into: &sector0, at: base + 12)
        try disk.write(sector0, at: 0)
    }

    /// Cylinder/head/sector for the 255-head, 63-sector geometry every current tool assumes; past what CHS
    /// can express (about 8 GiB) the conventional 1023/254/63 "use the LBA fields" marker.
    static func chs(lba: UInt64) -> [UInt8] {
        let cylinder = lba / (255 * 63)
        guard cylinder <= 1023 else { return [0xFE, 0xFF, 0xFF] }
        let head = UInt8((lba / 63) % 255)
        let sector = UInt8(lba % 63 + 1)
        return [head, sector | UInt8((cylinder >> 2) & 0xC0), UInt8(cylinder & 0xFF)]
    }

    private static func noRoom(
        diskPath: String, sectorSize: Int, lastUsed: UInt64, endLBA: UInt64, mbr: Bool = false
    ) -> BerthError {
        let free = endLBA > lastUsed ? (endLBA - lastUsed) * UInt64(sectorSize) : 0
        let limit = mbr ? " within the MBR's 32-bit sector limit" : ""
        return .deployFailed(
            "no room for a 64 MiB config partition at the end of \(diskPath): the image's partitions end at "
                + "LBA \(lastUsed) and only \(free >> 20) MiB is free after them\(limit); use a bigger disk, an image "
                + "that leaves 65 MiB free at the end, or give the image a `config-2` partition")
    }
}
