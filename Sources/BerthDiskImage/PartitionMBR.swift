import BerthCore

/// One MBR partition: a primary slot (1...4) or a logical partition (5...) inside an extended one.
public struct MBRPartitionEntry: Sendable, Hashable {
    /// The kernel's partition number: 1...4 for primary slots, 5... for logical partitions in chain order.
    public var number: Int
    public var type: UInt8
    public var bootable: Bool
    public var firstLBA: UInt64
    public var sectorCount: UInt64

    public var isLogical: Bool { number > 4 }
    /// An extended partition: a container for logical partitions, never a filesystem.
    public var isExtended: Bool { MBRTable.extendedTypes.contains(type) }
    public var lastLBA: UInt64 { firstLBA + max(sectorCount, 1) - 1 }
}

/// A DOS partition table. Logical partitions are listed (so nothing is placed over them) but never written.
public struct MBRTable: Sendable, Hashable {
    public var sectorSize: Int
    public var diskSectors: UInt64
    public var diskSignature: UInt32
    /// Used primary slots and logical partitions, by number.
    public var partitions: [MBRPartitionEntry]
    /// Sector 0 as read, so a rewrite keeps the boot code and anything else outside the four slots.
    var bootSector: [UInt8]

    static let extendedTypes: Set<UInt8> = [0x05, 0x0F, 0x85]
    static let protectiveType: UInt8 = 0xEE
    /// A chain longer than this is a loop or garbage, not a table a tool wrote.
    static let logicalLimit = 128

    /// Primary slots (1...4) with type 0.
    public var freePrimarySlots: [Int] {
        (1...4).filter { slot in !partitions.contains { $0.number == slot } }
    }

    /// Parses the four primary slots of a sector 0. nil when the sector holds no DOS table: no 0x55AA
    /// signature or a slot whose status byte is neither 0x00 nor 0x80, which is what a filesystem boot sector
    /// (a partitionless "superfloppy") looks like there.
    static func primarySlots(_ sector: [UInt8]) -> [MBRPartitionEntry]? {
        guard sector.count >= 512, sector[510] == 0x55, sector[511] == 0xAA else { return nil }
        var slots: [MBRPartitionEntry] = []
        for slot in 0..<4 {
            let base = 446 + 16 * slot
            let status = sector[base]
            guard status == 0 || status == 0x80 else { return nil }
            let type = sector[base + 4]
            let start = UInt64(PartitionBytes.u32(sector, base + 8))
            let count = UInt64(PartitionBytes.u32(sector, base + 12))
            if type == 0 { continue }
            slots.append(
                MBRPartitionEntry(
                    number: slot + 1, type: type, bootable: status == 0x80, firstLBA: start, sectorCount: count))
        }
        return slots
    }

    static func read(
        from disk: any PartitionSectorReader, bootSector: [UInt8], primaries: [MBRPartitionEntry], sectorSize: Int,
        diskSectors: UInt64
    ) throws(BerthError) -> MBRTable {
        var partitions = primaries
        for entry in primaries {
            guard entry.sectorCount > 0, entry.firstLBA > 0, entry.firstLBA + entry.sectorCount <= diskSectors else {
                throw .deployFailed(
                    "MBR partition \(entry.number) of \(disk.path) spans sectors \(entry.firstLBA)+\(entry.sectorCount)"
                        + ", outside the disk's \(diskSectors) \(sectorSize)-byte sectors; the image is larger than "
                        + "the disk, the sector size is wrong, or the table is corrupt")
            }
        }
        if let extended = primaries.first(where: { $0.isExtended }) {
            let found = try logicals(in: extended, disk: disk, sectorSize: sectorSize)
            // A logical partition outside its container could be the config partition: the config drive would
            // then be written wherever the image says, even terabytes past the disk's end.
            for logical in found
            where logical.sectorCount == 0 || logical.firstLBA <= extended.firstLBA
                || logical.firstLBA + logical.sectorCount > extended.firstLBA + extended.sectorCount
            {
                throw .deployFailed(
                    "MBR logical partition \(logical.number) of \(disk.path) spans sectors "
                        + "\(logical.firstLBA)+\(logical.sectorCount), outside its extended partition "
                        + "\(extended.number) (sectors \(extended.firstLBA)+\(extended.sectorCount)); the table is "
                        + "corrupt — repair it (fdisk) or rebuild the image")
            }
            partitions += found
        }
        try checkNoOverlap(partitions, disk: disk)
        return MBRTable(
            sectorSize: sectorSize, diskSectors: diskSectors, diskSignature: PartitionBytes.u32(bootSector, 440),
            partitions: partitions, bootSector: bootSector)
    }

    /// Two partitions sharing sectors (other than an extended partition and its logical ones) would have the
    /// config drive written over the other's data.
    private static func checkNoOverlap(_ partitions: [MBRPartitionEntry], disk: any PartitionSectorReader)
        throws(BerthError)
    {
        for (index, first) in partitions.enumerated() {
            for second in partitions[(index + 1)...] {
                guard first.firstLBA <= second.lastLBA, second.firstLBA <= first.lastLBA else { continue }
                if first.isExtended && second.isLogical || second.isExtended && first.isLogical { continue }
                throw .deployFailed(
                    "MBR partitions \(first.number) and \(second.number) of \(disk.path) overlap (sectors "
                        + "\(first.firstLBA)-\(first.lastLBA) and \(second.firstLBA)-\(second.lastLBA)); the table is "
                        + "corrupt — repair it (fdisk) or rebuild the image")
            }
        }
    }

    /// Walks the chain of extended boot records. Logical starts are relative to their EBR, links to the
    /// start of the extended partition.
    private static func logicals(in extended: MBRPartitionEntry, disk: any PartitionSectorReader, sectorSize: Int)
        throws(BerthError) -> [MBRPartitionEntry]
    {
        var found: [MBRPartitionEntry] = []
        var ebr = extended.firstLBA
        var visited: Set<UInt64> = []
        while found.count < logicalLimit, !visited.contains(ebr) {
            visited.insert(ebr)
            let sector = try disk.read(at: ebr * UInt64(sectorSize), count: sectorSize)
            guard let slots = primarySlots(sector) else { break }
            if let logical = slots.first(where: { $0.number == 1 }), !logical.isExtended {
                found.append(
                    MBRPartitionEntry(
                        number: 5 + found.count, type: logical.type, bootable: logical.bootable,
                        firstLBA: ebr + logical.firstLBA, sectorCount: logical.sectorCount))
            }
            guard let link = slots.first(where: { $0.number == 2 && $0.isExtended }) else { break }
            ebr = extended.firstLBA + link.firstLBA
            guard ebr < extended.firstLBA + extended.sectorCount else { break }
        }
        return found
    }
}
