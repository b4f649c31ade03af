import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

@Suite("Config partition finder and table reader")
struct PartitionFinderTests {
    /// A 128 MiB GPT disk with partition 1 (32 MiB, "rootfs") and partition 2 (32 MiB, named `name`).
    func gptDisk(_ directory: PartTestDirectory, secondName: String) throws -> String {
        let disk = try directory.sparseFile("disk.img", bytes: 128 << 20)
        try partToolChecked(
            "sgdisk",
            [
                "-n", "1:2048:+32M", "-t", "1:8300", "-c", "1:rootfs", "-n", "2:0:+32M", "-t", "2:0700", "-c",
                "2:\(secondName)", disk,
            ])
        return disk
    }

    static let secondStart: UInt64 = 2048 + 32 * 2048

    @Test(
        "GPT names config-2 and config-v2 are recognised, any case", arguments: ["config-2", "config-v2", "CONFIG-2"])
    func gptNames(name: String) throws {
        let directory = try PartTestDirectory()
        let disk = try gptDisk(directory, secondName: name)
        let found = try ConfigPartitionFinder.find(in: try PartitionTable.read(path: disk), diskPath: disk)
        #expect(found?.number == 2)
        #expect(found?.match == .gptName)
        #expect(found?.firstLBA == Self.secondStart)
        #expect(found?.size == 32 << 20)
    }

    @Test("The GPT reader returns what sgdisk wrote")
    func gptEntries() throws {
        let directory = try PartTestDirectory()
        let disk = try gptDisk(directory, secondName: "data")
        try partToolChecked("sgdisk", ["-A", "1:set:2", "-u", "1:01234567-89AB-CDEF-0123-456789ABCDEF", disk])
        guard case .gpt(let table) = try PartitionTable.read(path: disk) else {
            Issue.record("expected a GPT")
            return
        }
        #expect(table.partitions.count == 2)
        let first = try #require(table.partitions.first)
        #expect(first.name == "rootfs")
        #expect(first.typeGUID == .linuxFilesystem)
        #expect(first.uniqueGUID.description == "01234567-89AB-CDEF-0123-456789ABCDEF")
        #expect(first.attributes == 1 << 2)
        #expect(first.firstLBA == 2048 && first.sectorCount == 32 * 2048)
        #expect(table.partitions.last?.typeGUID == .microsoftBasicData)
        #expect(table.header.entryCount == 128 && table.header.entrySize == 128)
        #expect(table.backupIsValid && table.backupAtDiskEnd)
        #expect(try ConfigPartitionFinder.find(in: .gpt(table), diskPath: disk) == nil)
    }

    @Test("Filesystem labels: FAT12, FAT16 and FAT32 via mkfs.vfat", arguments: [12, 16, 32])
    func fatLabel(bits: Int) throws {
        let directory = try PartTestDirectory()
        let disk = try gptDisk(directory, secondName: "data")
        try partToolChecked(
            "mkfs.vfat", ["-F", String(bits), "-n", "config-2", "--offset", String(Self.secondStart), disk, "32768"])
        let found = try ConfigPartitionFinder.find(in: try PartitionTable.read(path: disk), diskPath: disk)
        #expect(found?.number == 2)
        #expect(found?.match == .filesystemLabel)
    }

    @Test("A vfat labelled something else is not the config drive")
    func otherLabel() throws {
        let directory = try PartTestDirectory()
        let disk = try gptDisk(directory, secondName: "data")
        try partToolChecked("mkfs.vfat", ["-n", "EFI", "--offset", String(Self.secondStart), disk, "32768"])
        #expect(try ConfigPartitionFinder.find(in: try PartitionTable.read(path: disk), diskPath: disk) == nil)
    }

    @Test("Filesystem label: an ISO 9660 primary volume descriptor (as genisoimage -V config-2 writes)")
    func isoLabel() throws {
        let directory = try PartTestDirectory()
        let disk = try gptDisk(directory, secondName: "data")
        // A boot record first, then the primary descriptor, then the terminator, as El Torito images have.
        var descriptors = [UInt8](repeating: 0, count: 3 * 2048)
        for (index, type) in [UInt8(0), 1, 255].enumerated() {
            descriptors.replaceSubrange(index * 2048..<index * 2048 + 7, with: [type] + Array("CD001".utf8) + [1])
        }
        descriptors.replaceSubrange(
            2048 + 40..<2048 + 72, with: Array("config-2".utf8) + Array(repeating: 0x20, count: 24))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        try handle.seek(toOffset: Self.secondStart * 512 + 32768)
        try handle.write(contentsOf: Data(descriptors))
        try handle.close()
        let found = try ConfigPartitionFinder.find(in: try PartitionTable.read(path: disk), diskPath: disk)
        #expect(found?.number == 2)
        #expect(found?.match == .filesystemLabel)
    }

    @Test("A GPT header without a protective MBR is refused: the node's kernel would ignore it")
    func gptWithoutProtectiveMBR() throws {
        let directory = try PartTestDirectory()
        let disk = try gptDisk(directory, secondName: "config-2")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: Data(repeating: 0, count: 512))
        try handle.close()
        partExpectError(.deployFailed, ["no protective MBR"]) { try PartitionTable.read(path: disk) }
    }

    @Test("Unsupported sector sizes are a request error")
    func sectorSize() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 1 << 20)
        partExpectError(.invalidRequest, ["sector size 1024"]) { try PartitionTable.read(path: disk, sectorSize: 1024) }
    }

    @Test("GUID text round-trips in GPT's mixed-endian byte order")
    func guid() throws {
        let guid = try #require(PartitionGUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"))
        #expect(Array(guid.bytes.prefix(4)) == [0xA2, 0xA0, 0xD0, 0xEB])
        #expect(guid.description == "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
        #expect(PartitionGUID("not-a-guid") == nil)
        let random = PartitionGUID.random()
        #expect(random != PartitionGUID.random())
        #expect(random.description.dropFirst(14).first == "4", "version 4")
    }

    @Test("CRC-32 matches the standard check value")
    func crc() {
        #expect(PartitionCRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test("CHS for MBR slots: exact below 8 GiB, the LBA marker above")
    func chs() {
        #expect(ConfigPartitionCreator.chs(lba: 2048) == [32, 33, 0])
        #expect(ConfigPartitionCreator.chs(lba: 1 << 30) == [0xFE, 0xFF, 0xFF])
    }
}
