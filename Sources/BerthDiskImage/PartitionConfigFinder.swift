import BerthCore

/// The partition that carries (or will carry) the config drive.
public struct ConfigPartition: Sendable, Hashable {
    /// How the partition was recognised.
    public enum Match: String, Sendable, Hashable {
        /// GPT partition name `config-2` or `config-v2`.
        case gptName
        /// MBR partition type 0x99.
        case mbrType
        /// A vfat or iso9660 filesystem labelled `config-2` (any case, as cloud-init accepts).
        case filesystemLabel
        /// Berth added it because the image had none.
        case created
    }

    /// The kernel's partition number (`sda<number>`).
    public var number: Int
    public var firstLBA: UInt64
    public var sectorCount: UInt64
    public var sectorSize: Int
    public var match: Match

    public var offset: UInt64 { firstLBA * UInt64(sectorSize) }
    public var size: UInt64 { sectorCount * UInt64(sectorSize) }
}

/// Finds the config partition the way the image promises it (DESIGN §6): by GPT name first, then MBR type
/// 0x99, then by a `config-2` filesystem label in any partition, which is how images made for Nova's and
/// Ironic's config drive mark it.
public enum ConfigPartitionFinder {
    public static let gptNames: Set<String> = ["config-2", "config-v2"]
    public static let mbrType: UInt8 = 0x99
    public static let label = "config-2"

    public static func find(in table: PartitionTable, diskPath: String) throws(BerthError) -> ConfigPartition? {
        let disk = try PartitionDiskFile(path: diskPath, writable: false)
        return try find(in: table, disk: disk)
    }

    /// The config partition the config step will write: the image's own, or where it will be added
    /// (`.created`). Throws what the config step would, so the deploy plan can refuse before writing.
    static func findOrPlace(in table: PartitionTable, disk: any PartitionSectorReader) throws(BerthError)
        -> ConfigPartition
    {
        guard let found = try find(in: table, disk: disk) else {
            return try ConfigPartitionCreator.place(in: table, diskPath: disk.path)
        }
        guard FATImageWriter.geometry(size: found.size, sectorSize: found.sectorSize) != nil else {
            throw FATImageWriter.tooSmall(found.size)
        }
        return found
    }

    static func find(in table: PartitionTable, disk: any PartitionSectorReader) throws(BerthError) -> ConfigPartition? {
        switch table {
        case .none:
            return nil
        case .gpt(let gpt):
            let candidates = gpt.partitions.map {
                ConfigPartition(
                    number: $0.number, firstLBA: $0.firstLBA, sectorCount: $0.sectorCount, sectorSize: gpt.sectorSize,
                    match: .gptName)
            }
            if let named = gpt.partitions.first(where: { gptNames.contains($0.name.lowercased()) }) {
                return candidates.first { $0.number == named.number }
            }
            return try firstLabelled(candidates, disk: disk)
        case .mbr(let mbr):
            let candidates = mbr.partitions.filter { !$0.isExtended }.map {
                ConfigPartition(
                    number: $0.number, firstLBA: $0.firstLBA, sectorCount: $0.sectorCount, sectorSize: mbr.sectorSize,
                    match: .mbrType)
            }
            if let typed = mbr.partitions.first(where: { $0.type == mbrType }) {
                return candidates.first { $0.number == typed.number }
            }
            return try firstLabelled(candidates, disk: disk)
        }
    }

    private static func firstLabelled(_ candidates: [ConfigPartition], disk: any PartitionSectorReader)
        throws(BerthError)
        -> ConfigPartition?
    {
        for var candidate in candidates {
            guard let found = try FilesystemLabelProbe.probe(disk: disk, offset: candidate.offset, size: candidate.size)
            else { continue }
            if found.label.lowercased() == label {
                candidate.match = .filesystemLabel
                return candidate
            }
        }
        return nil
    }
}

/// Reads the label of a vfat or iso9660 filesystem the way blkid does: for FAT the root directory's
/// volume-label entry wins over the boot sector's copy (Windows only updates the former); for ISO 9660 the
/// primary volume descriptor's volume identifier.
enum FilesystemLabelProbe {
    struct Found: Equatable {
        var type: String
        var label: String
    }

    static func probe(disk: any PartitionSectorReader, offset: UInt64, size: UInt64) throws(BerthError) -> Found? {
        if let fat = try fatLabel(disk: disk, offset: offset, size: size) { return Found(type: "vfat", label: fat) }
        if let iso = try isoLabel(disk: disk, offset: offset, size: size) { return Found(type: "iso9660", label: iso) }
        return nil
    }

    static func fatLabel(disk: any PartitionSectorReader, offset: UInt64, size: UInt64) throws(BerthError) -> String? {
        guard size >= 512 else { return nil }
        let boot = try disk.read(at: offset, count: 512)
        let bytesPerSector = Int(PartitionBytes.u16(boot, 11))
        let sectorsPerCluster = Int(boot[13])
        let reserved = UInt64(PartitionBytes.u16(boot, 14))
        let fatCount = UInt64(boot[16])
        let rootEntries = Int(PartitionBytes.u16(boot, 17))
        let fat16Size = UInt64(PartitionBytes.u16(boot, 22))
        guard [512, 1024, 2048, 4096].contains(bytesPerSector), sectorsPerCluster > 0,
            sectorsPerCluster.nonzeroBitCount == 1, reserved >= 1, (1...2).contains(fatCount),
            boot[21] == 0xF0 || boot[21] >= 0xF8
        else { return nil }
        let isFAT32 = fat16Size == 0
        let signatureOffset = isFAT32 ? 0x42 : 0x26
        // Only the 0x29 extended boot signature has a label field (0x28 stops after the serial number).
        let bootLabel =
            boot[signatureOffset] == 0x29 ? text(boot[(signatureOffset + 5)..<(signatureOffset + 16)]) : nil

        let sector = UInt64(bytesPerSector)
        let fatSize = isFAT32 ? UInt64(PartitionBytes.u32(boot, 0x24)) : fat16Size
        var rootOffset = offset + (reserved + fatCount * fatSize) * sector
        var rootBytes = rootEntries * 32
        if isFAT32 {
            let rootCluster = UInt64(PartitionBytes.u32(boot, 0x2C))
            let dataStart = rootOffset
            rootOffset = dataStart + (max(rootCluster, 2) - 2) * UInt64(sectorsPerCluster) * sector
            rootBytes = min(sectorsPerCluster * bytesPerSector, 65536)
        }
        var rootLabel: String?
        if rootBytes > 0, rootOffset + UInt64(rootBytes) <= offset + size {
            let directory = try disk.read(at: rootOffset, count: min(rootBytes, 65536))
            for entry in stride(from: 0, to: directory.count, by: 32) {
                let first = directory[entry]
                if first == 0 { break }
                let attributes = directory[entry + 11]
                if first == 0xE5 || attributes == 0x0F { continue }
                if attributes & 0x18 == 0x08 {
                    rootLabel = text(directory[entry..<(entry + 11)])
                    break
                }
            }
        }
        let label = [rootLabel, bootLabel].compactMap { $0 }.first { !$0.isEmpty && $0 != "NO NAME" }
        return label ?? ""
    }

    static func isoLabel(disk: any PartitionSectorReader, offset: UInt64, size: UInt64) throws(BerthError) -> String? {
        // ISO 9660 descriptors are 2048-byte blocks from byte 32768, whatever the disk's sector size.
        for index in 0..<16 {
            let position = 32768 + UInt64(index) * 2048
            guard position + 2048 <= size else { return nil }
            let descriptor = try disk.read(at: offset + position, count: 2048)
            guard Array(descriptor[1..<6]) == Array("CD001".utf8) else { return nil }
            if descriptor[0] == 1 { return text(descriptor[40..<72]) }
            if descriptor[0] == 255 { return nil }
        }
        return nil
    }

    /// A space-padded on-disk label as text.
    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        var trimmed = Array(bytes)
        while let last = trimmed.last, last == 0x20 || last == 0 { trimmed.removeLast() }
        return String(decoding: trimmed, as: UTF8.self)
    }
}
