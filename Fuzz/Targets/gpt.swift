import BerthDiskImage

/// GPT disks: the input is the disk from LBA 1 on (512-byte sectors) behind a protective MBR, with its CRCs
/// recomputed (GPTSeal) so that mutations reach the header, entry and backup checks. A table that reads, and
/// the config partition found in it (by name or filesystem label), must pass `TableProperties`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var disk = protectiveMBR(sectors: UInt64(size / 512 + 1)) + fuzzBytes(data, size)
    GPTSeal.seal(&disk, sectorSize: 512)
    let path = FuzzFile.write(disk, name: "disk")
    if let table = try? PartitionTable.read(path: path, sectorSize: 512) {
        TableProperties.check(table, found: try? ConfigPartitionFinder.find(in: table, diskPath: path))
    }
    return 0
}

/// Sector 0 of a GPT disk: one 0xEE partition from LBA 1 over the rest of the disk.
private func protectiveMBR(sectors: UInt64) -> [UInt8] {
    var sector = [UInt8](repeating: 0, count: 512)
    sector[446 + 4] = 0xEE
    sector[446 + 8] = 1
    let count = UInt32(min(sectors - 1, 0xFFFF_FFFF))
    for index in 0..<4 { sector[446 + 12 + index] = UInt8(truncatingIfNeeded: count >> (8 * index)) }
    sector[510] = 0x55
    sector[511] = 0xAA
    return sector
}
