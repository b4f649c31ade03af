import BerthCore
import Glibc

/// A FAT timestamp (local-less: Berth writes UTC, as the deployed node has no way to know our zone anyway).
public struct FATTimestamp: Sendable, Hashable {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int

    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
    }

    public static func now() -> FATTimestamp {
        var seconds = Glibc.time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return FATTimestamp(
            year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday),
            hour: Int(parts.tm_hour), minute: Int(parts.tm_min), second: Int(parts.tm_sec))
    }

    /// FAT dates run from 1980 to 2107; anything outside is clamped rather than wrapped into nonsense.
    var date: UInt16 {
        let year = UInt16(min(max(year, 1980), 2107) - 1980)
        return year << 9 | UInt16(min(max(month, 1), 12)) << 5 | UInt16(min(max(day, 1), 31))
    }

    var time: UInt16 {
        UInt16(min(max(hour, 0), 23)) << 11 | UInt16(min(max(minute, 0), 59)) << 5 | UInt16(min(max(second, 0), 59) / 2)
    }
}

/// Writes a complete FAT12/FAT16 filesystem with VFAT long names into a byte range of a disk: the config
/// drive's filesystem. FAT16 for anything from about 2 MiB (a 64 MiB config partition), FAT12 below.
///
/// The filesystem's logical sector is the disk's sector: Linux refuses a FAT whose sectors are smaller than
/// the device's logical block, so a 4Kn disk gets 4096-byte FAT sectors.
public struct FATImageWriter: Sendable {
    /// One file to store; directories are implied by the paths (`openstack/latest/meta_data.json`).
    public struct File: Sendable, Hashable {
        public var path: String
        public var contents: [UInt8]

        public init(path: String, contents: [UInt8]) {
            self.path = path
            self.contents = contents
        }
    }

    /// Up to 11 bytes; written as given (blkid and cloud-init match `config-2` in either case).
    public var label: String
    public var sectorSize: Int
    /// "MSWIN4.1" is the OEM name Microsoft recommends for the widest compatibility: some old FAT readers
    /// check it, none reject it.
    public var oemName: String = "MSWIN4.1"
    public var timestamp: FATTimestamp
    public var volumeID: UInt32

    /// A config drive is a few KiB; beyond 1 GiB a FAT16 would need 32 KiB clusters for nothing, so a bigger
    /// partition gets a filesystem over its first GiB (the kernel and blkid accept a filesystem smaller
    /// than its partition).
    public static let maximumFilesystemBytes: UInt64 = 1 << 30
    static let rootEntryCount = 512

    public init(
        label: String = "config-2", sectorSize: Int = 512, timestamp: FATTimestamp = .now(),
        volumeID: UInt32 = UInt32.random(in: 0...UInt32.max)
    ) {
        self.label = label
        self.sectorSize = sectorSize
        self.timestamp = timestamp
        self.volumeID = volumeID
    }

    /// Writes the filesystem into `size` bytes at `offset` of the disk at `diskPath` and flushes it.
    /// `hiddenSectors` is the partition's first LBA, which the boot sector records for DOS-era readers.
    public func write(files: [File], diskPath: String, offset: UInt64, size: UInt64, hiddenSectors: UInt64)
        throws(BerthError)
    {
        let disk = try PartitionDiskFile(path: diskPath, writable: true)
        try write(files: files, to: disk, offset: offset, size: size, hiddenSectors: hiddenSectors)
        try disk.synchronize()
    }

    func write(files: [File], to disk: PartitionDiskFile, offset: UInt64, size: UInt64, hiddenSectors: UInt64)
        throws(BerthError)
    {
        let volume = try layout(files: files, size: size, hiddenSectors: hiddenSectors)
        // Old signatures at either end of the partition (ISO 9660 at 32 KiB, ext*, md-raid or ZFS labels at the
        // end) would make blkid report an ambivalent result and cloud-init skip the drive; the metadata
        // written below covers the start, these zeros cover the rest of both ends.
        let wipe = min(size, 1 << 20)
        try disk.zero(at: offset, count: wipe)
        try disk.zero(at: offset + size - wipe, count: wipe)
        try disk.write(volume.metadata, at: offset)
        for (position, bytes) in volume.clusters {
            try disk.write(bytes, at: offset + position)
        }
    }

    /// The bytes of a filesystem: `metadata` from the partition start (boot sector, FATs, root directory),
    /// then `clusters` at their offsets from the partition start.
    struct Volume {
        var metadata: [UInt8]
        var clusters: [(offset: UInt64, bytes: [UInt8])]
        var geometry: Geometry
    }

    struct Geometry: Equatable {
        var bytesPerSector: Int
        var sectorsPerCluster: Int
        var reservedSectors: Int
        var fatSectors: Int
        var rootDirectorySectors: Int
        var totalSectors: UInt64
        var clusterCount: Int
        var fatBits: Int

        var clusterBytes: Int { bytesPerSector * sectorsPerCluster }
        var dataStartSector: Int { reservedSectors + 2 * fatSectors + rootDirectorySectors }
    }

    /// Picks FAT16 with the smallest cluster that fits, else FAT12. Cluster counts stay 16 away from the
    /// FAT12/FAT16 boundaries (4085, 65525), since readers decide the FAT type by the count alone and some
    /// round differently near the edges.
    static func geometry(size: UInt64, sectorSize: Int) -> Geometry? {
        let totalSectors = min(size, maximumFilesystemBytes) / UInt64(sectorSize)
        let rootSectors = (rootEntryCount * 32 + sectorSize - 1) / sectorSize
        for fatBits in [16, 12] {
            var sectorsPerCluster = 1
            while sectorsPerCluster <= 128, sectorsPerCluster * sectorSize <= 32768 {
                defer { sectorsPerCluster *= 2 }
                var fatSectors = 1
                var clusters = 0
                while true {
                    let overhead = UInt64(1 + rootSectors + 2 * fatSectors)
                    guard totalSectors > overhead else { break }
                    clusters = Int(min((totalSectors - overhead) / UInt64(sectorsPerCluster), 1 << 20))
                    let needed = ((clusters + 2) * fatBits / 8 + 1 + sectorSize - 1) / sectorSize
                    if needed <= fatSectors { break }
                    fatSectors = needed
                }
                let range = fatBits == 16 ? (4085 + 16)...(65524 - 16) : 1...(4084 - 16)
                if range.contains(clusters) {
                    return Geometry(
                        bytesPerSector: sectorSize, sectorsPerCluster: sectorsPerCluster, reservedSectors: 1,
                        fatSectors: fatSectors, rootDirectorySectors: rootSectors, totalSectors: totalSectors,
                        clusterCount: clusters, fatBits: fatBits)
                }
                if clusters < range.lowerBound { break }
            }
        }
        return nil
    }

    // MARK: Layout

    /// A directory or file while the layout is being planned.
    private final class Node {
        let name: String
        let isDirectory: Bool
        var contents: [UInt8] = []
        var children: [Node] = []
        var shortName: [UInt8] = []
        var needsLongName = false
        var firstCluster = 0
        var clusterCount = 0

        init(name: String, isDirectory: Bool) {
            self.name = name
            self.isDirectory = isDirectory
        }

        /// Directory entries this directory holds (`.` and `..`, long-name parts, short entries).
        var entryCount: Int {
            children.reduce(2) { $0 + 1 + ($1.needsLongName ? FATShortName.longNameEntryCount($1.name) : 0) }
        }
    }

    static func tooSmall(_ size: UInt64) -> BerthError {
        .deployFailed(
            "the config partition (\(size) bytes) is too small for a FAT filesystem; it needs at least about "
                + "100 KiB — give the image a bigger config-2 partition")
    }

    func layout(files: [File], size: UInt64, hiddenSectors: UInt64) throws(BerthError) -> Volume {
        guard PartitionTable.supportedSectorSizes.contains(sectorSize) else {
            throw .invalidRequest("FAT sector size \(sectorSize) is not supported; use 512 or 4096")
        }
        guard let geometry = FATImageWriter.geometry(size: size, sectorSize: sectorSize) else {
            throw Self.tooSmall(size)
        }
        let root = Node(name: "", isDirectory: true)
        for file in files { try insert(file, into: root) }
        assignShortNames(root)

        let rootEntries = 1 + root.entryCount - 2  // the volume label, no `.`/`..` in the root
        guard rootEntries <= FATImageWriter.rootEntryCount else {
            throw .deployFailed(
                "the config drive has \(rootEntries) root directory entries; FAT16 allows "
                    + "\(FATImageWriter.rootEntryCount)")
        }
        var nextCluster = 2
        var fat = [Int](repeating: 0, count: geometry.clusterCount + 2)
        func allocate(_ node: Node, bytes: Int) {
            node.clusterCount = (bytes + geometry.clusterBytes - 1) / geometry.clusterBytes
            guard node.clusterCount > 0 else { return }
            node.firstCluster = nextCluster
            for cluster in nextCluster..<nextCluster + node.clusterCount {
                if cluster < fat.count {
                    fat[cluster] = cluster == nextCluster + node.clusterCount - 1 ? -1 : cluster + 1
                }
            }
            nextCluster += node.clusterCount
        }
        func allocateTree(_ directory: Node) {
            for child in directory.children {
                allocate(child, bytes: child.isDirectory ? child.entryCount * 32 : child.contents.count)
                if child.isDirectory { allocateTree(child) }
            }
        }
        allocateTree(root)
        guard nextCluster - 2 <= geometry.clusterCount else {
            throw .deployFailed(
                "the config drive needs \(nextCluster - 2) clusters of \(geometry.clusterBytes) bytes but the "
                    + "\(size)-byte config partition holds \(geometry.clusterCount); shorten user_data or give the "
                    + "image a bigger config partition")
        }

        var metadata = [UInt8](repeating: 0, count: geometry.dataStartSector * sectorSize)
        metadata.replaceSubrange(0..<sectorSize, with: bootSector(geometry, hiddenSectors: hiddenSectors))
        let fatBytes = fatTable(fat, geometry: geometry)
        for copy in 0..<2 {
            let start = (geometry.reservedSectors + copy * geometry.fatSectors) * sectorSize
            metadata.replaceSubrange(start..<start + fatBytes.count, with: fatBytes)
        }
        var rootDirectory = labelEntry()
        rootDirectory += entries(for: root.children)
        let rootStart = (geometry.reservedSectors + 2 * geometry.fatSectors) * sectorSize
        metadata.replaceSubrange(rootStart..<rootStart + rootDirectory.count, with: rootDirectory)

        var clusters: [(offset: UInt64, bytes: [UInt8])] = []
        func emit(_ directory: Node) {
            for child in directory.children where child.clusterCount > 0 {
                var bytes: [UInt8]
                if child.isDirectory {
                    bytes = dotEntries(child, parent: directory) + entries(for: child.children)
                } else {
                    bytes = child.contents
                }
                bytes += [UInt8](repeating: 0, count: child.clusterCount * geometry.clusterBytes - bytes.count)
                let offset =
                    (geometry.dataStartSector + (child.firstCluster - 2) * geometry.sectorsPerCluster)
                    * sectorSize
                clusters.append((UInt64(offset), bytes))
                if child.isDirectory { emit(child) }
            }
        }
        emit(root)
        return Volume(metadata: metadata, clusters: clusters, geometry: geometry)
    }

    private func insert(_ file: File, into root: Node) throws(BerthError) {
        let parts = file.path.split(separator: "/").map(String.init)
        guard let leaf = parts.last else {
            throw .invalidRequest("config drive file path \(file.path.debugDescription) is empty")
        }
        for part in parts {
            guard part != ".", part != "..", part.utf16.count <= 255,
                !part.unicodeScalars.contains(where: {
                    FATShortName.forbiddenInLongNames.contains($0) || $0.value < 0x20
                })
            else {
                throw .invalidRequest(
                    "config drive path \(file.path.debugDescription) has a component FAT cannot store")
            }
        }
        var directory = root
        for part in parts.dropLast() {
            if let existing = directory.children.first(where: { $0.name.lowercased() == part.lowercased() }) {
                guard existing.isDirectory else {
                    throw .invalidRequest("config drive path \(file.path.debugDescription) runs through a file")
                }
                directory = existing
            } else {
                let created = Node(name: part, isDirectory: true)
                directory.children.append(created)
                directory = created
            }
        }
        // FAT names are case-insensitive: `User_Data` and `user_data` would be one file.
        guard !directory.children.contains(where: { $0.name.lowercased() == leaf.lowercased() }) else {
            throw .invalidRequest("config drive path \(file.path.debugDescription) is given twice")
        }
        let node = Node(name: leaf, isDirectory: false)
        node.contents = file.contents
        directory.children.append(node)
    }

    private func assignShortNames(_ directory: Node) {
        var taken: Set<[UInt8]> = []
        for child in directory.children {
            let (name, needsLongName) = FATShortName.make(for: child.name, taken: taken)
            taken.insert(name)
            child.shortName = name
            child.needsLongName = needsLongName
            if child.isDirectory { assignShortNames(child) }
        }
    }

    // MARK: On-disk structures

    private func bootSector(_ geometry: Geometry, hiddenSectors: UInt64) -> [UInt8] {
        var sector = [UInt8](repeating: 0, count: sectorSize)
        sector.replaceSubrange(0..<3, with: [0xEB, 0x3C, 0x90])
        sector.replaceSubrange(3..<11, with: FATImageWriter.padded(oemName, 8))
        PartitionBytes.put16(UInt16(sectorSize), into: &sector, at: 11)
        sector[13] = UInt8(geometry.sectorsPerCluster)
        PartitionBytes.put16(UInt16(geometry.reservedSectors), into: &sector, at: 14)
        sector[16] = 2
        PartitionBytes.put16(UInt16(FATImageWriter.rootEntryCount), into: &sector, at: 17)
        if geometry.totalSectors < 65536 {
            PartitionBytes.put16(UInt16(geometry.totalSectors), into: &sector, at: 19)
        } else {
            PartitionBytes.put32(UInt32(geometry.totalSectors), into: &sector, at: 32)
        }
        sector[21] = 0xF8
        PartitionBytes.put16(UInt16(geometry.fatSectors), into: &sector, at: 22)
        PartitionBytes.put16(63, into: &sector, at: 24)
        PartitionBytes.put16(255, into: &sector, at: 26)
        PartitionBytes.put32(UInt32(clamping: hiddenSectors), into: &sector, at: 28)
        sector[36] = 0x80
        sector[38] = 0x29
        PartitionBytes.put32(volumeID, into: &sector, at: 39)
        sector.replaceSubrange(43..<54, with: FATImageWriter.padded(label, 11))
        sector.replaceSubrange(54..<62, with: FATImageWriter.padded(geometry.fatBits == 16 ? "FAT16" : "FAT12", 8))
        // Not bootable: INT 18h tells the BIOS to try the next boot device, then halt in a loop.
        sector.replaceSubrange(62..<66, with: [0xCD, 0x18, 0xEB, 0xFE])
        sector[510] = 0x55
        sector[511] = 0xAA
        return sector
    }

    private func fatTable(_ chains: [Int], geometry: Geometry) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: geometry.fatSectors * sectorSize)
        let endOfChain = geometry.fatBits == 16 ? 0xFFFF : 0xFFF
        var values = chains.map { $0 < 0 ? endOfChain : $0 }
        values[0] = endOfChain & ~0xFF | 0xF8  // media byte in the low bits
        values[1] = endOfChain  // "clean unmount, no I/O errors"
        for (cluster, value) in values.enumerated() {
            if geometry.fatBits == 16 {
                PartitionBytes.put16(UInt16(value), into: &bytes, at: cluster * 2)
            } else {
                let position = cluster * 3 / 2
                if cluster % 2 == 0 {
                    bytes[position] = UInt8(value & 0xFF)
                    bytes[position + 1] = bytes[position + 1] & 0xF0 | UInt8(value >> 8 & 0x0F)
                } else {
                    bytes[position] = bytes[position] & 0x0F | UInt8(value << 4 & 0xF0)
                    bytes[position + 1] = UInt8(value >> 4 & 0xFF)
                }
            }
        }
        return bytes
    }

    /// The root directory's volume-label entry, which blkid prefers to the boot sector's copy.
    private func labelEntry() -> [UInt8] {
        shortEntry(name: FATImageWriter.padded(label, 11), attributes: 0x08, cluster: 0, size: 0)
    }

    private func dotEntries(_ directory: Node, parent: Node) -> [UInt8] {
        // `..` of a directory in the root points at cluster 0, by the specification.
        shortEntry(name: FATImageWriter.padded(".", 11), attributes: 0x10, cluster: directory.firstCluster, size: 0)
            + shortEntry(name: FATImageWriter.padded("..", 11), attributes: 0x10, cluster: parent.firstCluster, size: 0)
    }

    private func entries(for children: [Node]) -> [UInt8] {
        var bytes: [UInt8] = []
        for child in children {
            if child.needsLongName {
                for entry in FATShortName.longNameEntries(child.name, shortName: child.shortName) { bytes += entry }
            }
            bytes += shortEntry(
                name: child.shortName, attributes: child.isDirectory ? 0x10 : 0x20, cluster: child.firstCluster,
                size: child.isDirectory ? 0 : child.contents.count)
        }
        return bytes
    }

    private func shortEntry(name: [UInt8], attributes: UInt8, cluster: Int, size: Int) -> [UInt8] {
        var entry = [UInt8](repeating: 0, count: 32)
        entry.replaceSubrange(0..<11, with: name)
        entry[11] = attributes
        PartitionBytes.put16(timestamp.time, into: &entry, at: 14)
        PartitionBytes.put16(timestamp.date, into: &entry, at: 16)
        PartitionBytes.put16(timestamp.date, into: &entry, at: 18)
        PartitionBytes.put16(timestamp.time, into: &entry, at: 22)
        PartitionBytes.put16(timestamp.date, into: &entry, at: 24)
        PartitionBytes.put16(UInt16(cluster), into: &entry, at: 26)
        PartitionBytes.put32(UInt32(size), into: &entry, at: 28)
        return entry
    }

    /// ASCII text cut or space-padded to `count` bytes.
    private static func padded(_ text: String, _ count: Int) -> [UInt8] {
        let bytes = Array(text.utf8.prefix(count))
        return bytes + [UInt8](repeating: 0x20, count: count - bytes.count)
    }
}
