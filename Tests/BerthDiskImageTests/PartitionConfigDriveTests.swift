import BerthCore
import BerthJSON
import Foundation
import Testing

@testable import BerthDiskImage

/// End to end: a disk as an image leaves it, the deployer, then tools nobody here wrote (sgdisk, sfdisk,
/// blkid, fsck.vfat, mtools, cloud-init) judge the result.
@Suite("Config drive on real partition tables")
struct PartitionConfigDriveTests {
    /// sgdisk -v exits 0 even when it finds problems; its verdict is in the text.
    func expectSgdiskClean(_ disk: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let verdict = try partToolChecked("sgdisk", ["-v", disk], sourceLocation: sourceLocation)
        #expect(verdict.contains("No problems found"), "sgdisk -v: \(verdict)", sourceLocation: sourceLocation)
    }

    func partitions(_ table: JSONValue) -> [JSONValue] { table["partitions"]?.arrayValue ?? [] }

    @Test("GPT image with a config-2 partition: found by name, filled, table untouched")
    func gptNamedPartition() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 256 << 20)
        try partToolChecked(
            "sgdisk",
            [
                "-n", "1:2048:+100M", "-t", "1:8300", "-c", "1:rootfs", "-n", "2:0:+64M", "-t", "2:0700",
                "-c", "2:config-2", disk,
            ])
        let before = try partReadBytes(disk, offset: 0, count: 34 * 512)

        let report = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        #expect(report.partitionNumber == 2)
        #expect(!report.created)
        #expect(report.match == .gptName)
        #expect(report.offset == 206_848 * 512)
        #expect(report.size == 64 << 20)
        #expect(try partReadBytes(disk, offset: 0, count: 34 * 512) == before, "the table must not change")
        try expectSgdiskClean(disk)
        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
    }

    @Test("GPT image smaller than the disk, no config partition: created at the end, backup moved")
    func gptCreatedAtEnd() throws {
        let directory = try PartTestDirectory()
        let image = try directory.sparseFile("image.img", bytes: 64 << 20)
        try partToolChecked("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", "-c", "1:rootfs", image])
        let disk = try directory.sparseFile("disk.img", bytes: 512 << 20)
        try partCopyImage(image, onto: disk)
        guard case .gpt(let before) = try PartitionTable.read(path: disk) else {
            Issue.record("expected a GPT")
            return
        }
        #expect(!before.backupAtDiskEnd, "the image's backup header sits mid-disk before the deploy")
        #expect(before.backupIsValid)

        let report = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        #expect(report.created)
        #expect(report.partitionNumber == 2)
        #expect(report.size == 64 << 20)
        #expect(report.offset % (1 << 20) == 0, "1 MiB aligned")
        #expect(report.offset + report.size <= (512 << 20) - 33 * 512, "inside the usable area")
        #expect(report.offset + report.size > (512 << 20) - (2 << 20), "at the end of the disk")

        try expectSgdiskClean(disk)
        let sfdisk = try partTool("sfdisk", ["--json", disk])
        #expect(sfdisk.errors.isEmpty, "sfdisk warns: \(sfdisk.errors)")
        let table = try partSfdiskJSON(disk)
        #expect(table["lastlba"]?.intValue == Int64((512 << 20) / 512 - 34))
        let created = partitions(table).first { $0["node"]?.stringValue?.hasSuffix("img2") == true }
        #expect(created?["name"] == "config-2", "\(table)")
        #expect(created?["type"] == "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
        #expect(created?["start"]?.intValue == Int64(report.offset / 512))
        #expect(created?["size"]?.intValue == Int64(report.size / 512))

        guard case .gpt(let after) = try PartitionTable.read(path: disk) else {
            Issue.record("expected a GPT after the deploy")
            return
        }
        #expect(after.backupAtDiskEnd)
        #expect(after.backupIsValid)
        #expect(after.header.diskGUID == before.header.diskGUID)
        #expect(after.partitions.first == before.partitions.first, "the image's partition is unchanged")
        let oldBackup = try partReadBytes(disk, offset: before.header.alternateLBA * 512, count: 8)
        #expect(oldBackup != Array("EFI PART".utf8), "the stale mid-disk backup header is wiped")

        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
        // A second deploy finds the partition it made instead of adding another.
        let again = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent(userData: nil))
        #expect(!again.created)
        #expect(again.partitionNumber == 2)
        #expect(again.match == .gptName)
        partExpectSample(
            try partVerifyConfigDrive(disk: disk, offset: again.offset, size: again.size, in: directory), userData: nil)
    }

    @Test("GPT that fills the disk: refused, nothing written")
    func gptNoRoom() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 96 << 20)
        try partToolChecked("sgdisk", ["-n", "1:2048:0", "-t", "1:8300", disk])
        let before = try Data(contentsOf: URL(fileURLWithPath: disk))
        partExpectError(.deployFailed, ["no room for a 64 MiB config partition", "LBA"]) {
            try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: disk)) == before)
    }

    @Test("GPT with a corrupt entry array: refused, nothing written")
    func gptCorrupt() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 128 << 20)
        try partToolChecked("sgdisk", ["-n", "1:2048:+32M", "-t", "1:8300", disk])
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        try handle.seek(toOffset: 2 * 512 + 60)
        try handle.write(contentsOf: Data([0x41]))
        try handle.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: disk))
        partExpectError(.deployFailed, ["entry array", "corrupt"]) {
            try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: disk)) == before)
    }

    @Test("GPT with a damaged primary header and a good backup: refused, says the backup can repair it")
    func gptDamagedPrimary() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 128 << 20)
        try partToolChecked("sgdisk", ["-n", "1:2048:+32M", "-t", "1:8300", disk])
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
        try handle.seek(toOffset: 512 + 40)
        try handle.write(contentsOf: Data([0x07]))
        try handle.close()
        partExpectError(
            .deployFailed, ["primary GPT header", "header CRC32", "backup header on the last sector is valid"]
        ) {
            try PartitionTable.read(path: disk)
        }
    }

    @Test("MBR image with a 0x99 partition: found by type")
    func mbrTypedPartition() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 256 << 20)
        try partSfdisk(disk, script: "label: dos\nstart=2048, size=100MiB, type=83\nsize=64MiB, type=99\n")
        let report = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        #expect(report.partitionNumber == 2)
        #expect(!report.created)
        #expect(report.match == .mbrType)
        #expect(report.size == 64 << 20)
        let table = try partSfdiskJSON(disk)
        #expect(partitions(table).map { $0["type"] } == ["83", "99"])
        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
    }

    @Test("MBR image with a free slot: a 0x99 partition is added at the end")
    func mbrCreated() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 300 << 20)
        try partSfdisk(disk, script: "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=100MiB, type=83, bootable\n")
        let report = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        #expect(report.created)
        #expect(report.partitionNumber == 2)
        #expect(report.offset % (1 << 20) == 0)
        #expect(report.offset + report.size <= 300 << 20)
        #expect(report.offset + report.size > (300 << 20) - (1 << 20))

        let sfdisk = try partTool("sfdisk", ["--json", disk])
        #expect(sfdisk.errors.isEmpty, "sfdisk warns: \(sfdisk.errors)")
        let table = try partSfdiskJSON(disk)
        #expect(table["id"] == "0x1234abcd", "the disk signature is kept")
        let entries = partitions(table)
        #expect(entries.count == 2)
        #expect(entries.first?["bootable"] == true)
        #expect(entries.last?["type"] == "99")
        #expect(entries.last?["start"]?.intValue == Int64(report.offset / 512))
        #expect(entries.last?["size"]?.intValue == Int64(report.size / 512))
        let verify = try partTool("sfdisk", ["--verify", disk])
        #expect(verify.succeeded && verify.errors.isEmpty, "sfdisk --verify: \(verify.output) \(verify.errors)")
        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
    }

    @Test("MBR image using all four primary slots: refused, disk untouched")
    func mbrNoFreeSlot() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 200 << 20)
        try partSfdisk(
            disk,
            script: "label: dos\nstart=2048, size=16MiB, type=83\nsize=16MiB, type=83\nsize=16MiB, type=82\n"
                + "size=16MiB, type=83\n")
        let before = try Data(contentsOf: URL(fileURLWithPath: disk))
        partExpectError(
            .deployFailed, ["MBR has no free primary partition slot for the config drive", "use a GPT image"]
        ) {
            try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: disk)) == before)
    }

    @Test("MBR with logical partitions: listed, and the new primary goes after the extended partition")
    func mbrLogicals() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 256 << 20)
        try partSfdisk(
            disk,
            script: "label: dos\nstart=2048, size=32MiB, type=83\nsize=100MiB, type=5\n"
                + "start=69632, size=20MiB, type=83\nstart=112640, size=20MiB, type=82\n")
        guard case .mbr(let mbr) = try PartitionTable.read(path: disk) else {
            Issue.record("expected an MBR")
            return
        }
        #expect(mbr.partitions.map(\.number) == [1, 2, 5, 6])
        #expect(mbr.partitions.map(\.type) == [0x83, 0x05, 0x83, 0x82])
        #expect(mbr.freePrimarySlots == [3, 4])
        let report = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        #expect(report.partitionNumber == 3)
        #expect(report.created)
        let numbers = partitions(try partSfdiskJSON(disk)).compactMap { $0["node"]?.stringValue?.last }
        #expect(numbers == ["1", "2", "3", "5", "6"])
        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
    }

    @Test("A partition found only by its config-2 vfat label")
    func foundByLabel() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 256 << 20)
        try partToolChecked(
            "sgdisk", ["-n", "1:2048:+100M", "-t", "1:8300", "-n", "2:0:+32M", "-t", "2:0700", "-c", "2:data", disk])
        let start: UInt64 = 206_848
        try partToolChecked("mkfs.vfat", ["-n", "CONFIG-2", "--offset", String(start), disk, String(32 * 1024)])
        let table = try PartitionTable.read(path: disk)
        let found = try ConfigPartitionFinder.find(in: table, diskPath: disk)
        #expect(found?.number == 2)
        #expect(found?.match == .filesystemLabel)
        let report = try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        #expect(report.offset == start * 512)
        #expect(report.size == 32 << 20)
        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
    }

    @Test("A disk without a partition table: refused")
    func noTable() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 64 << 20)
        #expect(try PartitionTable.read(path: disk) == .none)
        partExpectError(.deployFailed, ["no partition table"]) {
            try ConfigDriveDeployer.write(diskPath: disk, content: partSampleContent())
        }
    }

    // MARK: 4096-byte sectors

    @Test("4Kn GPT image smaller than the disk: created at the end with 4096-byte sectors")
    func gpt4K() throws {
        let directory = try PartTestDirectory()
        let image = try directory.sparseFile("image.img", bytes: 64 << 20)
        do {
            let loop = try PartLoopDevice(file: image, sectorSize: 4096)
            try partToolChecked("sgdisk", ["-n", "1:0:0", "-t", "1:8300", "-c", "1:rootfs", loop.path])
        }
        let disk = try directory.sparseFile("disk.img", bytes: 512 << 20)
        try partCopyImage(image, onto: disk)

        partExpectError(.deployFailed, ["GPT for 4096-byte sectors", "sector size to 4096"]) {
            try PartitionTable.read(path: disk, sectorSize: 512)
        }
        let report = try ConfigDriveDeployer.write(diskPath: disk, sectorSize: 4096, content: partSampleContent())
        #expect(report.created)
        #expect(report.partitionNumber == 2)
        #expect(report.size == 64 << 20)
        #expect(report.offset % (1 << 20) == 0)
        #expect(report.offset + report.size > (512 << 20) - (2 << 20), "at the end of the disk")
        guard case .gpt(let after) = try PartitionTable.read(path: disk, sectorSize: 4096) else {
            Issue.record("expected a GPT")
            return
        }
        #expect(after.backupAtDiskEnd && after.backupIsValid)

        let loop = try PartLoopDevice(file: disk, sectorSize: 4096)
        try expectSgdiskClean(loop.path)
        let sfdisk = try partTool("sfdisk", ["--json", loop.path])
        #expect(sfdisk.errors.isEmpty, "sfdisk warns: \(sfdisk.errors)")
        let table = try partSfdiskJSON(loop.path)
        #expect(table["sectorsize"]?.intValue == 4096)
        #expect(table["lastlba"]?.intValue == Int64((512 << 20) / 4096 - 6))
        let created = partitions(table).last
        #expect(created?["name"] == "config-2")
        #expect(created?["start"]?.intValue == Int64(report.offset / 4096))
        #expect(created?["size"]?.intValue == Int64(report.size / 4096))

        let probe = try partBlkid(disk, offset: report.offset)
        #expect(probe["BLOCK_SIZE"] == "4096", "the FAT uses the disk's sector size: \(probe)")
        partExpectSample(try partVerifyConfigDrive(disk: disk, offset: report.offset, size: report.size, in: directory))
    }

    @Test("4Kn MBR block device with a free slot: a 0x99 partition is added through the device path")
    func mbr4KBlockDevice() throws {
        let directory = try PartTestDirectory()
        let disk = try directory.sparseFile("disk.img", bytes: 256 << 20)
        let loop = try PartLoopDevice(file: disk, sectorSize: 4096)
        try partSfdisk(loop.path, script: "label: dos\nstart=256, size=100MiB, type=83\n")

        partExpectError(.deployFailed, ["4096-byte logical sectors", "512 was requested"]) {
            try ConfigDriveDeployer.write(diskPath: loop.path, sectorSize: 512, content: partSampleContent())
        }
        let report = try ConfigDriveDeployer.write(diskPath: loop.path, sectorSize: 4096, content: partSampleContent())
        #expect(report.created)
        #expect(report.partitionNumber == 2)
        #expect(report.offset + report.size > (256 << 20) - (1 << 20), "at the end of the disk")
        let table = try partSfdiskJSON(loop.path)
        #expect(partitions(table).last?["type"] == "99")
        #expect(partitions(table).last?["start"]?.intValue == Int64(report.offset / 4096))
        #expect(partitions(table).last?["size"]?.intValue == Int64(report.size / 4096))
        let verify = try partTool("sfdisk", ["--verify", loop.path])
        #expect(verify.succeeded && verify.errors.isEmpty, "sfdisk --verify: \(verify.output) \(verify.errors)")
        partExpectSample(
            try partVerifyConfigDrive(disk: loop.path, offset: report.offset, size: report.size, in: directory))
    }
}
