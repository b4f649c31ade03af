/// Recomputes the CRC32s of a GPT in a fuzz input before the parser sees it, so mutations reach the checks
/// behind the checksums (bounds, overlaps, the config partition's placement) instead of dying at the first
/// CRC comparison. A header whose size field is out of range is left alone: that check is the parser's.
enum GPTSeal {
    /// Seals the primary header at LBA 1, then the backup header it points to, in `disk` (a whole disk image).
    static func seal(_ disk: inout [UInt8], sectorSize: Int) {
        guard let alternate = sealHeader(&disk, at: sectorSize, sectorSize: sectorSize) else { return }
        guard alternate > 1, alternate < UInt64(disk.count / sectorSize) else { return }
        _ = sealHeader(&disk, at: Int(alternate) * sectorSize, sectorSize: sectorSize)
    }

    /// Fixes the entry-array CRC (when the array lies inside `disk`) and the header CRC of the header at byte
    /// `offset`; returns the header's alternate LBA.
    private static func sealHeader(_ disk: inout [UInt8], at offset: Int, sectorSize: Int) -> UInt64? {
        guard offset + sectorSize <= disk.count, disk[offset..<offset + 8].elementsEqual("EFI PART".utf8) else {
            return nil
        }
        let headerSize = Int(load32(disk, offset + 12))
        guard headerSize >= 92, headerSize <= sectorSize else { return nil }
        let entriesLBA = load64(disk, offset + 72)
        let arrayBytes = UInt64(load32(disk, offset + 80)) * UInt64(load32(disk, offset + 84))
        let (entriesStart, overflow) = entriesLBA.multipliedReportingOverflow(by: UInt64(sectorSize))
        if !overflow, arrayBytes <= 4 << 20, entriesStart <= UInt64(disk.count),
            arrayBytes <= UInt64(disk.count) - entriesStart
        {
            let start = Int(entriesStart)
            store32(&disk, offset + 88, crc32(disk[start..<start + Int(arrayBytes)]))
        }
        store32(&disk, offset + 16, 0)
        store32(&disk, offset + 16, crc32(disk[offset..<offset + headerSize]))
        return load64(disk, offset + 32)
    }

    /// CRC-32 as UEFI defines it for GPT (IEEE 802.3, reflected), bit by bit: speed does not matter here.
    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc = ~UInt32(0)
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (crc & 1 == 0 ? 0 : 0xEDB8_8320) }
        }
        return ~crc
    }

    private static func load32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
    }

    private static func load64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
    }

    private static func store32(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }
}
