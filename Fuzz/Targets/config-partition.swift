import BerthDiskImage

/// The node's disk: the image (the input) at its start, then a sparse tail with room for the 64 MiB config
/// partition, as a small image written to a bigger disk.
private let diskBytes: UInt64 = 96 << 20

/// The config partition step of a deploy (DESIGN §6 step 3) on a disk file holding the input: read the
/// table, find the config partition or create one. GPT CRCs are recomputed (GPTSeal) so mutations reach the
/// placement. The table read and the partition found must pass `TableProperties`; a created partition must
/// be found again by a fresh read of the table, which must pass them too; the disk file never grows.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var image = fuzzBytes(data, size)
    GPTSeal.seal(&image, sectorSize: 512)
    let path = FuzzFile.write(image, name: "disk", size: diskBytes)
    guard let table = try? PartitionTable.read(path: path, sectorSize: 512) else { return 0 }
    let existing: ConfigPartition?
    do {
        existing = try ConfigPartitionFinder.find(in: table, diskPath: path)
    } catch {
        return 0
    }
    TableProperties.check(table, found: existing)
    if existing != nil { return 0 }
    let created = try? ConfigPartitionCreator.create(diskPath: path, table: table)
    if FuzzFile.size(path) != diskBytes {
        fuzzViolation("the disk file grew from \(diskBytes) to \(FuzzFile.size(path)) bytes")
    }
    guard let created else { return 0 }
    let reread: PartitionTable
    do {
        reread = try PartitionTable.read(path: path, sectorSize: 512)
    } catch {
        fuzzViolation("the table Berth wrote does not read back: \(error)")
    }
    let found = try? ConfigPartitionFinder.find(in: reread, diskPath: path)
    guard let found, found.firstLBA == created.firstLBA, found.sectorCount == created.sectorCount else {
        fuzzViolation("the config partition created at LBA \(created.firstLBA) is not found again")
    }
    TableProperties.check(reread, found: found)
    return 0
}
