import BerthDiskImage

/// Whole disks as the deploy reads them after writing an image, byte for byte (no CRCs fixed, nothing
/// cleared): the choice between GPT, MBR and none, the missing-header diagnostics, and both sector sizes.
/// A table that reads, and the config partition found in it, must pass `TableProperties`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = FuzzFile.write(fuzzBytes(data, size), name: "disk")
    for sectorSize in [512, 4096] {
        if let table = try? PartitionTable.read(path: path, sectorSize: sectorSize) {
            TableProperties.check(table, found: try? ConfigPartitionFinder.find(in: table, diskPath: path))
        }
    }
    return 0
}
