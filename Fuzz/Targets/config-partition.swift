import BerthDiskImage

/// The node's disk: the image (the input) at its start, then a sparse tail with room for the 64 MiB config
/// partition, as a small image written to a bigger disk.
private let diskBytes: UInt64 = 96 << 20

/// The config partition step of a deploy (DESIGN §6 step 3) on a disk file holding the input: read the
/// table, find the config partition or create one. GPT CRCs are recomputed (GPTSeal) so mutations reach the
/// placement. What a created partition must be: inside the disk, clear of every partition the image has,
/// and found again by a fresh read of the table; and the disk file never grows.
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
    if existing != nil { return 0 }
    guard let created = try? ConfigPartitionCreator.create(diskPath: path, table: table) else {
        checkSize(path)
        return 0
    }
    checkSize(path)
    let diskSectors = diskBytes / 512
    let last = created.firstLBA + created.sectorCount - 1
    guard created.sectorCount > 0, created.firstLBA > 0, last < diskSectors else {
        fuzzViolation("the config partition \(created.firstLBA)+\(created.sectorCount) lies outside the disk")
    }
    for (number, first, end) in spans(of: table) where first <= last && created.firstLBA <= end {
        fuzzViolation(
            "the config partition \(created.firstLBA)...\(last) overlaps the image's partition \(number) "
                + "(\(first)...\(end))")
    }
    let reread: PartitionTable
    do {
        reread = try PartitionTable.read(path: path, sectorSize: 512)
    } catch {
        fuzzViolation("the table Berth wrote does not read back: \(error)")
    }
    let found = try? ConfigPartitionFinder.find(in: reread, diskPath: path)
    if found?.firstLBA != created.firstLBA {
        fuzzViolation("the created config partition at LBA \(created.firstLBA) is not found again (\(String(describing: found)))")
    }
    return 0
}

/// Every partition the table lists, as (number, first LBA, last LBA).
private func spans(of table: PartitionTable) -> [(Int, UInt64, UInt64)] {
    switch table {
    case .none: []
    case .gpt(let gpt): gpt.partitions.map { ($0.number, $0.firstLBA, $0.lastLBA) }
    case .mbr(let mbr): mbr.partitions.map { ($0.number, $0.firstLBA, $0.lastLBA) }
    }
}

private func checkSize(_ path: String) {
    let now = FuzzFile.size(path)
    if now != diskBytes { fuzzViolation("the disk file grew from \(diskBytes) to \(now) bytes") }
}
