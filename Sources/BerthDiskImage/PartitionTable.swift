import BerthCore

/// The partition table on a disk, as the Linux kernel of the deployed node will see it: GPT when sector 0
/// holds a protective (or hybrid) MBR with a 0xEE slot, DOS/MBR when it holds a plain DOS table, none
/// otherwise (an empty disk or a partitionless filesystem).
public enum PartitionTable: Sendable, Hashable {
    case gpt(GPTTable)
    case mbr(MBRTable)
    case none

    /// Sector sizes a disk can have: 512 (and 512e) or 4096 (4Kn).
    public static let supportedSectorSizes: Set<Int> = [512, 4096]

    /// Reads the table of a disk file or block device. On a block device the kernel is first asked to
    /// re-read the table (BLKRRPART) so it matches the freshly written image; a file is simply parsed.
    /// Throws `DeployFailed` for a table that cannot be validated, since anything written on top of it could
    /// land on the image's data.
    public static func read(path: String, sectorSize: Int = 512) throws(BerthError) -> PartitionTable {
        let disk = try PartitionDiskFile(path: path, writable: false)
        try disk.rereadPartitionTable()
        return try read(from: disk, sectorSize: sectorSize)
    }

    static func read(from disk: PartitionDiskFile, sectorSize: Int) throws(BerthError) -> PartitionTable {
        guard supportedSectorSizes.contains(sectorSize) else {
            throw .invalidRequest("sector size \(sectorSize) is not supported; use 512 or 4096")
        }
        if let deviceSize = disk.deviceSectorSize(), deviceSize != sectorSize {
            throw .deployFailed(
                "\(disk.path) has \(deviceSize)-byte logical sectors but \(sectorSize) was requested; "
                    + "set the node's sector size to \(deviceSize)")
        }
        return try read(
            from: disk as any PartitionSectorReader, sectorSize: sectorSize,
            diskSectors: disk.byteCount / UInt64(sectorSize))
    }

    /// Reads the table from any sectors: the node's disk, or an image as it will lie on a disk of
    /// `diskSectors` (the deploy plan, before anything is written).
    static func read(from disk: any PartitionSectorReader, sectorSize: Int, diskSectors: UInt64) throws(BerthError)
        -> PartitionTable
    {
        guard diskSectors >= 3 else { return .none }
        let sector0 = try disk.read(at: 0, count: sectorSize)
        let primaries = MBRTable.primarySlots(sector0)
        let protective = primaries?.contains { $0.type == MBRTable.protectiveType } ?? false
        let headerSector = try disk.read(at: UInt64(sectorSize), count: sectorSize)
        let hasGPTSignature = Array(headerSector[0..<8]) == GPTHeader.signature

        if protective {
            if !hasGPTSignature {
                throw missingGPTHeader(disk: disk, sectorSize: sectorSize, diskSectors: diskSectors)
            }
            return .gpt(try GPTTable.read(from: disk, sectorSize: sectorSize, diskSectors: diskSectors))
        }
        if hasGPTSignature {
            // Linux only honours a GPT behind a protective MBR (without the `gpt` boot option), so the booted
            // node would not see a partition added to this table and cloud-init would never find it.
            throw .deployFailed(
                "\(disk.path) has a GPT header but no protective MBR (no 0xEE partition in sector 0), so the "
                    + "node's kernel would ignore the GPT; fix the image (`sgdisk -v` reports it, gdisk repairs it)")
        }
        guard let primaries else { return .none }
        return .mbr(
            try MBRTable.read(
                from: disk, bootSector: sector0, primaries: primaries, sectorSize: sectorSize,
                diskSectors: diskSectors))
    }

    /// A protective MBR with no header at LBA 1: most often the wrong sector size, which is worth saying.
    private static func missingGPTHeader(disk: any PartitionSectorReader, sectorSize: Int, diskSectors: UInt64)
        -> BerthError
    {
        let other = sectorSize == 512 ? 4096 : 512
        if let sector = try? disk.read(at: UInt64(other), count: 8), sector == GPTHeader.signature {
            return .deployFailed(
                "\(disk.path) holds a GPT for \(other)-byte sectors, not \(sectorSize); "
                    + "set the node's sector size to \(other)")
        }
        var note = "and no backup header on the last sector"
        if let sector = try? disk.read(at: (diskSectors - 1) * UInt64(sectorSize), count: sectorSize),
            case .success = GPTHeader.parse(sector)
        {
            note = "but the backup header on the last sector is valid, so `gdisk` can rebuild the primary"
        }
        return .deployFailed(
            "\(disk.path) has a protective MBR but no GPT header at LBA 1 (\(sectorSize)-byte sectors), \(note); "
                + "Berth does not write into a table it cannot validate: repair the disk or rebuild the image")
    }
}
