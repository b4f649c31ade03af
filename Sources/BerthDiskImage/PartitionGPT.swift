import BerthCore

/// A GPT header (UEFI 2.x §5.3.2), primary or backup.
public struct GPTHeader: Sendable, Hashable {
    public var revision: UInt32
    public var headerSize: UInt32
    /// Where this header sits: 1 for the primary, the last sector for the backup.
    public var currentLBA: UInt64
    /// Where the other header sits.
    public var alternateLBA: UInt64
    public var firstUsableLBA: UInt64
    public var lastUsableLBA: UInt64
    public var diskGUID: PartitionGUID
    public var entriesLBA: UInt64
    public var entryCount: UInt32
    public var entrySize: UInt32
    public var entriesCRC32: UInt32

    static let signature: [UInt8] = Array("EFI PART".utf8)

    /// Sectors the entry array fills.
    func entrySectors(sectorSize: Int) -> UInt64 {
        (UInt64(entryCount) * UInt64(entrySize) + UInt64(sectorSize) - 1) / UInt64(sectorSize)
    }

    /// Whether `count` sectors from `lba` lie on a disk of `diskSectors`, without computing a sum that could
    /// overflow.
    static func fits(_ lba: UInt64, _ count: UInt64, _ diskSectors: UInt64) -> Bool {
        lba < diskSectors && count <= diskSectors - lba
    }

    /// Parses and checks one header sector; the error text says what is wrong, for the operator.
    static func parse(_ sector: [UInt8]) -> Result<GPTHeader, GPTDamage> {
        guard Array(sector[0..<8]) == signature else { return .failure(.missing) }
        let size = PartitionBytes.u32(sector, 12)
        guard size >= 92, Int(size) <= sector.count else {
            return .failure(.damaged("header size \(size) is not between 92 and the sector size"))
        }
        var covered = Array(sector[0..<Int(size)])
        let stored = PartitionBytes.u32(covered, 16)
        PartitionBytes.put32(0, into: &covered, at: 16)
        let computed = PartitionCRC32.checksum(covered)
        guard stored == computed else {
            return .failure(
                .damaged("header CRC32 is \(partitionHex(stored)) but the header sums to \(partitionHex(computed))"))
        }
        let header = GPTHeader(
            revision: PartitionBytes.u32(sector, 8), headerSize: size,
            currentLBA: PartitionBytes.u64(sector, 24), alternateLBA: PartitionBytes.u64(sector, 32),
            firstUsableLBA: PartitionBytes.u64(sector, 40), lastUsableLBA: PartitionBytes.u64(sector, 48),
            diskGUID: PartitionGUID(onDisk: Array(sector[56..<72])), entriesLBA: PartitionBytes.u64(sector, 72),
            entryCount: PartitionBytes.u32(sector, 80), entrySize: PartitionBytes.u32(sector, 84),
            entriesCRC32: PartitionBytes.u32(sector, 88))
        // Entry sizes are 128 × 2^n by the specification; anything else is a table no tool wrote.
        guard header.entrySize >= 128, header.entrySize.nonzeroBitCount == 1 else {
            return .failure(.damaged("entry size \(header.entrySize) is not 128 × 2^n"))
        }
        guard header.entryCount >= 1, UInt64(header.entryCount) * UInt64(header.entrySize) <= 4 << 20 else {
            return .failure(.damaged("entry count \(header.entryCount) is outside 1...\((4 << 20) / 128)"))
        }
        // first <= last + 1, written so that last_usable_lba = 2^64-1 cannot overflow.
        guard header.firstUsableLBA == 0 || header.firstUsableLBA - 1 <= header.lastUsableLBA else {
            return .failure(
                .damaged(
                    "first_usable_lba \(header.firstUsableLBA) is after last_usable_lba \(header.lastUsableLBA)"))
        }
        return .success(header)
    }

    /// One sector holding this header, with its CRC computed. Bytes past the 92 the specification defines
    /// are zero, as the specification requires.
    func serialized(sectorSize: Int) -> [UInt8] {
        var sector = [UInt8](repeating: 0, count: sectorSize)
        sector.replaceSubrange(0..<8, with: GPTHeader.signature)
        PartitionBytes.put32(revision, into: &sector, at: 8)
        PartitionBytes.put32(92, into: &sector, at: 12)
        PartitionBytes.put64(currentLBA, into: &sector, at: 24)
        PartitionBytes.put64(alternateLBA, into: &sector, at: 32)
        PartitionBytes.put64(firstUsableLBA, into: &sector, at: 40)
        PartitionBytes.put64(lastUsableLBA, into: &sector, at: 48)
        sector.replaceSubrange(56..<72, with: diskGUID.bytes)
        PartitionBytes.put64(entriesLBA, into: &sector, at: 72)
        PartitionBytes.put32(entryCount, into: &sector, at: 80)
        PartitionBytes.put32(entrySize, into: &sector, at: 84)
        PartitionBytes.put32(entriesCRC32, into: &sector, at: 88)
        PartitionBytes.put32(PartitionCRC32.checksum(sector[0..<92]), into: &sector, at: 16)
        return sector
    }
}

/// Why a GPT header could not be used.
enum GPTDamage: Error, Equatable {
    /// No `EFI PART` signature: there is no header here.
    case missing
    case damaged(String)

    var text: String {
        switch self {
        case .missing: "no \"EFI PART\" signature"
        case .damaged(let reason): reason
        }
    }
}

/// One used GPT entry (a slot whose type GUID is not zero).
public struct GPTPartitionEntry: Sendable, Hashable {
    /// 1-based slot in the entry array: the kernel's partition number (`sda<number>`).
    public var number: Int
    public var typeGUID: PartitionGUID
    public var uniqueGUID: PartitionGUID
    public var firstLBA: UInt64
    public var lastLBA: UInt64
    public var attributes: UInt64
    /// The partition name (UTF-16LE on disk, up to 36 code units).
    public var name: String

    public var sectorCount: UInt64 { lastLBA >= firstLBA ? lastLBA - firstLBA + 1 : 0 }

    static func parse(_ bytes: ArraySlice<UInt8>, number: Int) -> GPTPartitionEntry {
        let entry = Array(bytes)
        var units: [UInt16] = []
        for index in stride(from: 56, to: min(entry.count, 128), by: 2) {
            let unit = PartitionBytes.u16(entry, index)
            if unit == 0 { break }
            units.append(unit)
        }
        return GPTPartitionEntry(
            number: number, typeGUID: PartitionGUID(onDisk: Array(entry[0..<16])),
            uniqueGUID: PartitionGUID(onDisk: Array(entry[16..<32])), firstLBA: PartitionBytes.u64(entry, 32),
            lastLBA: PartitionBytes.u64(entry, 40), attributes: PartitionBytes.u64(entry, 48),
            name: String(decoding: units, as: UTF16.self))
    }

    /// The 128 bytes of this entry; a name longer than 36 UTF-16 code units is cut.
    func serialized() -> [UInt8] {
        var entry = [UInt8](repeating: 0, count: 128)
        entry.replaceSubrange(0..<16, with: typeGUID.bytes)
        entry.replaceSubrange(16..<32, with: uniqueGUID.bytes)
        PartitionBytes.put64(firstLBA, into: &entry, at: 32)
        PartitionBytes.put64(lastLBA, into: &entry, at: 40)
        PartitionBytes.put64(attributes, into: &entry, at: 48)
        for (index, unit) in name.utf16.prefix(36).enumerated() {
            PartitionBytes.put16(unit, into: &entry, at: 56 + 2 * index)
        }
        return entry
    }
}

/// A validated GPT: the primary header, its entries, and what is known about the backup.
public struct GPTTable: Sendable, Hashable {
    public var sectorSize: Int
    /// Whole sectors on the disk (not on the image that was written to it).
    public var diskSectors: UInt64
    public var header: GPTHeader
    /// Used entries, in slot order.
    public var partitions: [GPTPartitionEntry]
    /// Whether the header at `header.alternateLBA` is a valid backup of this table.
    public var backupIsValid: Bool
    /// The whole entry array as read, so a rewrite keeps slots and bytes this reader does not interpret.
    var entryArray: [UInt8]

    /// True when the backup header sits on the disk's last sector, where firmware and the kernel look.
    public var backupAtDiskEnd: Bool { header.alternateLBA == diskSectors - 1 }

    /// The first unused slot (1-based), nil when all are used.
    var firstFreeSlot: Int? {
        let size = Int(header.entrySize)
        for slot in 0..<Int(header.entryCount) where entryArray[slot * size..<slot * size + 16].allSatisfy({ $0 == 0 })
        {
            return slot + 1
        }
        return nil
    }

    /// Reads the GPT of a disk whose sector 1 holds an `EFI PART` signature, or throws saying why the table
    /// cannot be trusted. Writing on top of a table this reader cannot validate could destroy the image's
    /// partitions, so every inconsistency is an error, never a guess.
    static func read(from disk: any PartitionSectorReader, sectorSize: Int, diskSectors: UInt64) throws(BerthError)
        -> GPTTable
    {
        let primarySector = try disk.read(at: UInt64(sectorSize), count: sectorSize)
        let header: GPTHeader
        switch GPTHeader.parse(primarySector) {
        case .success(let parsed):
            header = parsed
        case .failure(let damage):
            throw damagedPrimary(disk: disk, sectorSize: sectorSize, diskSectors: diskSectors, reason: damage.text)
        }
        let subject = "the primary GPT header of \(disk.path)"
        guard header.currentLBA == 1 else {
            throw damagedPrimary(
                disk: disk, sectorSize: sectorSize, diskSectors: diskSectors,
                reason: "it claims to sit at LBA \(header.currentLBA), not 1")
        }
        let entrySectors = header.entrySectors(sectorSize: sectorSize)
        // Every field is checked against the disk before any sum or product uses it: they come from the image
        // and may be anything up to 2^64-1.
        func outside(_ field: String, _ value: UInt64) -> BerthError {
            .deployFailed(
                "\(subject) has \(field) \(value), outside the disk's \(diskSectors) \(sectorSize)-byte sectors; "
                    + "the image is larger than the node's disk, the sector size is wrong, or the table is corrupt")
        }
        guard header.alternateLBA < diskSectors else { throw outside("alternate_lba", header.alternateLBA) }
        guard header.lastUsableLBA < diskSectors else { throw outside("last_usable_lba", header.lastUsableLBA) }
        guard GPTHeader.fits(header.entriesLBA, entrySectors, diskSectors) else {
            throw outside("partition_entry_lba", header.entriesLBA)
        }
        guard header.firstUsableLBA >= 2 else {
            throw .deployFailed(
                "\(subject) has first_usable_lba \(header.firstUsableLBA), which puts partitions over the MBR and "
                    + "the GPT header; the table is corrupt — repair it with `sgdisk -v`/gdisk or rebuild the image")
        }
        guard header.alternateLBA > header.lastUsableLBA else {
            throw .deployFailed(
                "\(subject) has alternate_lba \(header.alternateLBA) inside the usable area (last_usable_lba "
                    + "\(header.lastUsableLBA)); the table is corrupt — repair it with `sgdisk -v`/gdisk or rebuild "
                    + "the image")
        }
        guard header.entriesLBA >= 2,
            header.entriesLBA + entrySectors <= header.firstUsableLBA || header.entriesLBA > header.lastUsableLBA
        else {
            throw .deployFailed(
                "\(subject) puts its entry array (partition_entry_lba \(header.entriesLBA)) inside the usable area; "
                    + "the table is corrupt — repair it with `sgdisk -v`/gdisk or rebuild the image")
        }
        let arrayBytes = Int(header.entryCount) * Int(header.entrySize)
        let array = Array(
            try disk.read(at: header.entriesLBA * UInt64(sectorSize), count: Int(entrySectors) * sectorSize)[
                0..<arrayBytes])
        let arrayCRC = PartitionCRC32.checksum(array)
        guard arrayCRC == header.entriesCRC32 else {
            throw .deployFailed(
                "the GPT entry array of \(disk.path) sums to \(partitionHex(arrayCRC)) but the header records "
                    + "\(partitionHex(header.entriesCRC32)); the table is corrupt — repair it (gdisk) or rebuild the "
                    + "image before deploying, so the config partition is not written over data")
        }
        var partitions: [GPTPartitionEntry] = []
        for slot in 0..<Int(header.entryCount) {
            let start = slot * Int(header.entrySize)
            let entry = GPTPartitionEntry.parse(array[start..<start + 128], number: slot + 1)
            if entry.typeGUID.isZero { continue }
            guard entry.firstLBA <= entry.lastLBA, entry.firstLBA >= header.firstUsableLBA,
                entry.lastLBA <= header.lastUsableLBA
            else {
                throw .deployFailed(
                    "GPT partition \(entry.number) of \(disk.path) spans LBA \(entry.firstLBA)-\(entry.lastLBA), "
                        + "outside the usable area \(header.firstUsableLBA)-\(header.lastUsableLBA); "
                        + "repair the table (gdisk) or rebuild the image")
            }
            if let clash = partitions.first(where: { $0.firstLBA <= entry.lastLBA && entry.firstLBA <= $0.lastLBA }) {
                throw .deployFailed(
                    "GPT partitions \(clash.number) and \(entry.number) of \(disk.path) overlap; "
                        + "repair the table (gdisk) or rebuild the image")
            }
            partitions.append(entry)
        }
        var backupIsValid = false
        let backupSector = try disk.read(at: header.alternateLBA * UInt64(sectorSize), count: sectorSize)
        if case .success(let backup) = GPTHeader.parse(backupSector), backup.currentLBA == header.alternateLBA,
            backup.alternateLBA == 1, backup.entriesCRC32 == header.entriesCRC32,
            backup.entryCount == header.entryCount, backup.entrySize == header.entrySize,
            GPTHeader.fits(backup.entriesLBA, entrySectors, diskSectors)
        {
            let backupArray = Array(
                try disk.read(at: backup.entriesLBA * UInt64(sectorSize), count: Int(entrySectors) * sectorSize)[
                    0..<arrayBytes])
            backupIsValid = backupArray == array
        }
        return GPTTable(
            sectorSize: sectorSize, diskSectors: diskSectors, header: header, partitions: partitions,
            backupIsValid: backupIsValid, entryArray: array)
    }

    /// The error for an unusable primary header, saying whether a backup exists so the operator knows the
    /// table can be repaired (gdisk rebuilds the primary from the backup) rather than lost.
    private static func damagedPrimary(
        disk: any PartitionSectorReader, sectorSize: Int, diskSectors: UInt64, reason: String
    ) -> BerthError {
        var backupNote = "no valid backup header on the disk's last sector either"
        if diskSectors > 2, let sector = try? disk.read(at: (diskSectors - 1) * UInt64(sectorSize), count: sectorSize),
            case .success = GPTHeader.parse(sector)
        {
            backupNote = "the backup header on the last sector is valid, so `gdisk` can rebuild the primary from it"
        }
        return .deployFailed(
            "the primary GPT header of \(disk.path) is damaged (\(reason)); \(backupNote). Berth does not write a "
                + "config partition into a table it cannot validate: repair the disk or rebuild the image")
    }
}

func partitionHex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
