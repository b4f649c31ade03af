import BerthDiskImage

/// DOS/MBR disks: the input is the whole disk (512-byte sectors). A 0xEE slot or a GPT signature at LBA 1
/// would send the reader to the GPT code, which the gpt target covers, so they are cleared: every mutation
/// stays on the primary slots and the chain of logical partitions. A table that reads, and the config
/// partition found in it (by type 0x99 or filesystem label), must pass `TableProperties`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var disk = fuzzBytes(data, size)
    if disk.count >= 512 {
        for slot in 0..<4 where disk[446 + 16 * slot + 4] == 0xEE { disk[446 + 16 * slot + 4] = 0x83 }
    }
    if disk.count >= 520 && disk[512..<520].elementsEqual("EFI PART".utf8) { disk[512] = 0 }
    let path = FuzzFile.write(disk, name: "disk")
    if let table = try? PartitionTable.read(path: path, sectorSize: 512) {
        TableProperties.check(table, found: try? ConfigPartitionFinder.find(in: table, diskPath: path))
    }
    return 0
}
