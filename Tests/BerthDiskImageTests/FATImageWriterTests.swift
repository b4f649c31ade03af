import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

@Suite("FAT short names and long-name entries")
struct FATShortNameTests {
    @Test(
        "Short names as Windows and Linux make them",
        arguments: [
            ("meta_data.json", "META_D~1JSO", true),
            ("network_data.json", "NETWOR~1JSO", true),
            ("2012-08-10", "2012-0~1   ", true),
            ("latest", "LATEST     ", true),
            ("user_data", "USER_D~1   ", true),
            ("openstack", "OPENST~1   ", true),
            ("README.TXT", "README  TXT", false),
            ("EC2", "EC2        ", false),
            ("a+b.tar.gz", "A_BTAR~1GZ ", true),
            (".hidden", "HIDDEN~1   ", true),
        ])
    func shortName(longName: String, expected: String, needsLongName: Bool) {
        let made = FATShortName.make(for: longName, taken: [])
        #expect(String(decoding: made.name, as: UTF8.self) == expected)
        #expect(made.needsLongName == needsLongName)
    }

    @Test("Numeric tails keep short names unique within a directory")
    func uniqueTails() {
        var taken: Set<[UInt8]> = []
        var names: [String] = []
        for name in ["vendor_data.json", "vendor_data2.json", "vendor_data3.json", "latest", "LATEST"] {
            let made = FATShortName.make(for: name, taken: taken)
            taken.insert(made.name)
            names.append(String(decoding: made.name, as: UTF8.self))
        }
        #expect(names == ["VENDOR~1JSO", "VENDOR~2JSO", "VENDOR~3JSO", "LATEST     ", "LATEST~1   "])
    }

    @Test("Long-name entries: order bytes, checksum, NUL terminator and 0xFFFF padding")
    func longNameEntries() {
        let short = Array("META_D~1JSO".utf8)
        let entries = FATShortName.longNameEntries("meta_data.json", shortName: short)
        #expect(entries.count == 2)
        #expect(entries[0][0] == 0x42, "the last part comes first, flagged 0x40")
        #expect(entries[1][0] == 0x01)
        #expect(entries.allSatisfy { $0[11] == 0x0F && $0[13] == FATShortName.checksum(short) })
        // Part 2 holds "n" then NUL, then 0xFFFF fill.
        #expect(Array(entries[0][1..<7]) == [0x6E, 0, 0, 0, 0xFF, 0xFF])
        // The checksum of "META_D~1JSO", computed by hand with the specification's rotate-and-add.
        var sum: UInt8 = 0
        for byte in short { sum = ((sum & 1) << 7) &+ (sum >> 1) &+ byte }
        #expect(FATShortName.checksum(short) == sum)
    }
}

@Suite("FAT filesystem writer")
struct FATImageWriterTests {
    static let timestamp = FATTimestamp(year: 2024, month: 2, day: 29, hour: 13, minute: 37, second: 42)

    /// (filesystem bytes, sector size, expected FAT bits)
    static let geometryCases: [(UInt64, Int, Int)] = [
        (64 << 20, 512, 16), (64 << 20, 4096, 16), (16 << 20, 4096, 12), (1 << 20, 512, 12), (200 << 10, 512, 12),
        (3 << 30, 512, 16), (8 << 20, 512, 16),
    ]

    @Test(
        "Geometry: FAT16 from a few MiB, FAT12 below, cluster counts clear of the type boundaries",
        arguments: geometryCases)
    func geometry(size: UInt64, sectorSize: Int, fatBits: Int) throws {
        let geometry = try #require(FATImageWriter.geometry(size: size, sectorSize: sectorSize))
        #expect(geometry.fatBits == fatBits)
        let range = fatBits == 16 ? 4101...65508 : 1...4068
        #expect(range.contains(geometry.clusterCount))
        let dataSectors = Int(geometry.totalSectors) - geometry.dataStartSector
        #expect(geometry.clusterCount == dataSectors / geometry.sectorsPerCluster)
        #expect(
            (geometry.clusterCount + 2) * fatBits <= geometry.fatSectors * sectorSize * 8, "the FAT holds every cluster"
        )
        #expect(geometry.totalSectors * UInt64(sectorSize) <= min(size, FATImageWriter.maximumFilesystemBytes))
    }

    @Test("A partition too small for any FAT is refused")
    func tooSmall() {
        #expect(FATImageWriter.geometry(size: 16 << 10, sectorSize: 512) == nil)
        partExpectError(.deployFailed, ["too small for a FAT filesystem"]) {
            try FATImageWriter(sectorSize: 512).layout(files: [], size: 16 << 10, hiddenSectors: 0)
        }
    }

    @Test("Files that do not fit are refused with what they need")
    func contentTooBig() {
        let big = FATImageWriter.File(path: "user_data", contents: [UInt8](repeating: 7, count: 2 << 20))
        partExpectError(.deployFailed, ["clusters", "shorten user_data"]) {
            try FATImageWriter(sectorSize: 512).layout(files: [big], size: 1 << 20, hiddenSectors: 0)
        }
    }

    @Test("Paths FAT cannot hold are refused", arguments: ["a/b:c", "x/../y", "dup", "dir/file/below"])
    func badPaths(path: String) {
        var files = [
            FATImageWriter.File(path: "DUP", contents: []), FATImageWriter.File(path: "dir/file", contents: []),
        ]
        files.append(FATImageWriter.File(path: path, contents: [1]))
        partExpectError(.invalidRequest, ["config drive path"]) {
            try FATImageWriter(sectorSize: 512).layout(files: files, size: 4 << 20, hiddenSectors: 0)
        }
    }

    @Test("The boot sector carries the BPB, label, hidden sectors and signature")
    func bootSector() throws {
        let writer = FATImageWriter(sectorSize: 512, timestamp: Self.timestamp, volumeID: 0x1234_5678)
        let volume = try writer.layout(files: [], size: 64 << 20, hiddenSectors: 1_046_528)
        let boot = Array(volume.metadata[0..<512])
        #expect(Array(boot[3..<11]) == Array("MSWIN4.1".utf8))
        #expect(PartitionBytes.u16(boot, 11) == 512)
        #expect(PartitionBytes.u32(boot, 28) == 1_046_528)
        #expect(PartitionBytes.u32(boot, 39) == 0x1234_5678)
        #expect(Array(boot[43..<54]) == Array("config-2   ".utf8))
        #expect(Array(boot[54..<62]) == Array("FAT16   ".utf8))
        #expect(boot[510] == 0x55 && boot[511] == 0xAA)
        #expect(FATTimestamp(year: 1970, month: 1, day: 1).date == 0x21, "dates before 1980 clamp to 1980-01-01")
    }

    /// A tree with nesting, long and short names, an empty file, a multi-cluster file and a directory
    /// needing more than one cluster, checked by fsck.vfat, blkid and mtools.
    @Test("Real tools accept the filesystem", arguments: [(64 << 20, 512), (64 << 20, 4096), (1 << 20, 512)])
    func toolsAccept(size: Int, sectorSize: Int) throws {
        let directory = try PartTestDirectory()
        let image = try directory.sparseFile("fat.img", bytes: UInt64(size))
        var generator = SystemRandomNumberGenerator()
        let big = (0..<(150 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var files = [
            FATImageWriter.File(path: "openstack/latest/meta_data.json", contents: Array("{\"uuid\": \"x\"}".utf8)),
            FATImageWriter.File(path: "openstack/latest/user_data", contents: big),
            FATImageWriter.File(path: "openstack/latest/empty", contents: []),
            FATImageWriter.File(path: "README.TXT", contents: Array("plain 8.3\n".utf8)),
            FATImageWriter.File(path: "ünïcödé name with spaces.json", contents: Array("{}".utf8)),
        ]
        for index in 0..<120 {
            files.append(FATImageWriter.File(path: "many/file-number-\(index).txt", contents: Array("\(index)\n".utf8)))
        }
        try FATImageWriter(sectorSize: sectorSize, timestamp: Self.timestamp).write(
            files: files, diskPath: image, offset: 0, size: UInt64(size), hiddenSectors: 0)

        let fsck = try partTool("fsck.vfat", ["-n", "-v", image])
        #expect(fsck.succeeded, "fsck.vfat: \(fsck.output) \(fsck.errors)")
        let probe = try partBlkid(image, offset: 0)
        #expect(probe["LABEL"] == "config-2" && probe["TYPE"] == "vfat", "\(probe)")
        #expect(probe["LABEL_FATBOOT"] == "config-2", "\(probe)")

        let listing = try partToolChecked("mdir", ["-i", image, "::/openstack/latest"])
        #expect(listing.contains("meta_data.json") && listing.contains("user_data"), "\(listing)")
        #expect(listing.contains("2024-02-29  13:37"), "timestamps: \(listing)")
        let root = try partToolChecked("mdir", ["-i", image, "::/"])
        #expect(root.contains("ünïcödé name with spaces.json"), "\(root)")

        let out = "\(directory.path)/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try partToolChecked("mcopy", ["-s", "-n", "-i", image, "::/", out])
        for file in files {
            let copied = try Data(contentsOf: URL(fileURLWithPath: "\(out)/\(file.path)"))
            #expect([UInt8](copied) == file.contents, "\(file.path)")
        }
    }

    @Test("Writing into a partition range leaves the bytes around it alone and wipes old signatures")
    func rangeOnly() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 8 << 20)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: Data(repeating: 0xAB, count: 8 << 20))
        try handle.close()
        try FATImageWriter(sectorSize: 512).write(
            files: [FATImageWriter.File(path: "a", contents: [1])], diskPath: disk, offset: 2 << 20, size: 4 << 20,
            hiddenSectors: 4096)
        #expect(try partReadBytes(disk, offset: (2 << 20) - 512, count: 512).allSatisfy { $0 == 0xAB })
        #expect(try partReadBytes(disk, offset: 6 << 20, count: 512).allSatisfy { $0 == 0xAB })
        #expect(try partReadBytes(disk, offset: (6 << 20) - 512, count: 512).allSatisfy { $0 == 0 })
        // Where an ISO 9660 descriptor would start ("\u{1}CD001"): inside the zeroed FAT area now.
        #expect(try partReadBytes(disk, offset: (2 << 20) + 32768, count: 6).allSatisfy { $0 == 0 })
        let probe = try partBlkid(disk, offset: 2 << 20)
        #expect(probe["TYPE"] == "vfat")
    }

    /// A bare-metal node's disk file stays sparse: the wiped ends of the partition become holes, as the image
    /// writer leaves its zero ranges, so only the filesystem's own sectors take space.
    @Test("On a disk file the wiped ends are holes, not written zeros")
    func wipeLeavesHoles() throws {
        let directory = try PartTestDirectory()
        let size = 64 << 20
        let disk = try directory.sparseFile("disk.img", bytes: UInt64(size))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        for offset in [0, size - (1 << 20)] {
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: Data(repeating: 0xAB, count: 1 << 20))
        }
        try handle.close()
        try FATImageWriter(sectorSize: 512).write(
            files: [FATImageWriter.File(path: "openstack/latest/meta_data.json", contents: Array("{}".utf8))],
            diskPath: disk, offset: 0, size: UInt64(size), hiddenSectors: 0)
        let volume = try FATImageWriter(sectorSize: 512).layout(files: [], size: UInt64(size), hiddenSectors: 0)
        let allocated = try imgAllocatedBytes(disk)
        #expect(allocated <= UInt64(volume.metadata.count) + (256 << 10), "\(allocated) bytes allocated")
        #expect(try partReadBytes(disk, offset: UInt64(size - (1 << 20)), count: 1 << 20).allSatisfy { $0 == 0 })
        // Past the few clusters the files use, the old bytes of the first MiB are gone.
        let past = UInt64(volume.metadata.count) + (256 << 10)
        #expect(try partReadBytes(disk, offset: past, count: (1 << 20) - Int(past)).allSatisfy { $0 == 0 })
        let fsck = try partTool("fsck.vfat", ["-n", disk])
        #expect(fsck.succeeded, "fsck.vfat: \(fsck.output) \(fsck.errors)")
    }
}
