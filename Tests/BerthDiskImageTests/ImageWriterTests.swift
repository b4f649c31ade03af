import BerthCore
import Foundation
import Glibc
import Testing

@testable import BerthDiskImage

/// Serialized: the memory test measures the process's peak RSS, which parallel deploys would inflate.
@Suite(.serialized)
struct ImageWriterTests {
    /// A raw source with data, zero runs and a partial trailing block, written with qemu-io into qcow2 variants.
    private func sourceContent(_ directory: ImgTestDirectory, size: Int = 6 << 20) throws -> String {
        var bytes = [UInt8](repeating: 0, count: size)
        let random = imgRandomBytes(300_000, seed: 5)
        bytes.replaceSubrange(4096..<(4096 + random.count), with: random)
        let text = Array(String(repeating: "berth ", count: size / 60).utf8)
        bytes.replaceSubrange((size / 3)..<(size / 3 + text.count), with: text)
        bytes.replaceSubrange((size - 700)..<(size - 200), with: [UInt8](repeating: 0xee, count: 500))
        return try directory.write("source.raw", bytes)
    }

    @Test func rawImageMatchesQemuImg() throws {
        let directory = try ImgTestDirectory()
        let raw = try sourceContent(directory)
        let (plan, report) = try imgDeployAndCompare(raw, in: directory, diskSize: 10 << 20)
        #expect(plan.format == .raw)
        #expect(report.bytesWritten + report.bytesSkipped == 6 << 20)
        #expect(report.bytesSkipped > 3 << 20)
    }

    /// An odd-sized raw image (not a multiple of 512) ends where the file ends.
    @Test func oddSizedRawImage() throws {
        let directory = try ImgTestDirectory()
        let raw = try directory.write("odd.raw", imgRandomBytes(100_003, seed: 8) + [UInt8](repeating: 0, count: 9000))
        _ = try imgDeployAndCompare(raw, in: directory, diskSize: 1 << 20)
    }

    @Test(arguments: [
        ("v2", ["compat=0.10"], false),
        ("v3", ["compat=1.1"], false),
        ("v3 512-byte clusters", ["cluster_size=512"], false),
        ("v3 2 MiB clusters", ["cluster_size=2M"], false),
        ("compressed v3", [], true),
        ("compressed v2 4k clusters", ["compat=0.10", "cluster_size=4096"], true),
    ])
    func qcow2MatchesQemuImg(_ name: String, _ options: [String], _ compress: Bool) throws {
        let directory = try ImgTestDirectory()
        let raw = try sourceContent(directory)
        let image = directory.file("image.qcow2")
        var arguments = ["convert", "-O", "qcow2"]
        if compress { arguments.append("-c") }
        if !options.isEmpty { arguments += ["-o", options.joined(separator: ",")] }
        try imgTool("qemu-img", arguments + [raw, image])
        let (plan, report) = try imgDeployAndCompare(image, in: directory, diskSize: 8 << 20)
        #expect(plan.format == .qcow2(version: options.contains("compat=0.10") ? 2 : 3), "\(name)")
        if compress { #expect((plan.qcow2?.compressedBytes ?? 0) > 0, "\(name)") }
        #expect(report.bytesWritten + report.bytesSkipped == 6 << 20, "\(name)")
    }

    /// Zero clusters (v3 `write -z`), an allocated zero cluster (`write -z` over data) and data written over
    /// a compressed image.
    @Test func zeroClustersAndMixedKinds() throws {
        let directory = try ImgTestDirectory()
        let raw = try sourceContent(directory)
        let image = directory.file("mixed.qcow2")
        try imgTool("qemu-img", ["convert", "-c", "-O", "qcow2", raw, image])
        try imgQemuIO(
            image,
            [
                "write -P 0xab 0 1M", "write -z 2M 1M", "write -P 0xcd 5M 4k", "write -z 5M 64k", "write -P 0x01 3M 8k",
            ])
        let extents = try QCOW2Image(path: image).extents()
        #expect(extents.contains { $0.kind == .zero })
        #expect(extents.contains { if case .compressed = $0.kind { true } else { false } })
        #expect(extents.contains { if case .data = $0.kind { true } else { false } })
        _ = try imgDeployAndCompare(image, in: directory, diskSize: 6 << 20)
    }

    /// A disk holding an earlier deploy: the image's zero and unallocated ranges must read as zeros afterwards.
    @Test func overwritesOldDataInSkippedRanges() throws {
        let directory = try ImgTestDirectory()
        let image = try imgCreateQCOW2(directory.file("sparse.qcow2"), size: "4M")
        try imgQemuIO(image, ["write -P 0x42 1M 64k", "write -z 2M 512k"])
        let disk = try directory.write("disk", [UInt8](repeating: 0xff, count: 5 << 20))
        let reference = try imgReference(image, to: directory.file("ref"), size: 4 << 20)
        let report = try ImageWriter.plan(imagePath: image, diskPath: disk, checksum: nil, configDrive: false).write()
        #expect(report.bytesWritten == 64 << 10)
        #expect(try imgCompare(disk, reference, bytes: 4 << 20) == nil)
        // Past the image the disk is the node's: left alone, and the file keeps its size.
        #expect(try imgReadBytes(disk, at: 4 << 20, count: 16) == [UInt8](repeating: 0xff, count: 16))
        #expect(try imgFileSize(disk) == 5 << 20)
        // A raw image with zero blocks over the same old data.
        let raw = try sourceContent(directory, size: 4 << 20)
        try imgTool("dd", ["if=/dev/urandom", "of=\(disk)", "bs=1M", "count=5", "conv=notrunc", "status=none"])
        _ = try ImageWriter.plan(imagePath: raw, diskPath: disk, checksum: nil, configDrive: false).write()
        #expect(try imgCompare(disk, raw, bytes: 4 << 20) == nil)
    }

    @Test func checksumsAreVerifiedBeforeWriting() throws {
        let directory = try ImgTestDirectory()
        let raw = try sourceContent(directory)
        let image = directory.file("c.qcow2")
        try imgTool("qemu-img", ["convert", "-c", "-O", "qcow2", raw, image])
        let sha512 = String(try imgTool("sha512sum", [image]).text.prefix(128))
        let md5 = String(try imgTool("md5sum", [image]).text.prefix(32))
        let good = try ImageChecksum.select(osHashAlgo: "sha512", osHashValue: sha512, checksum: nil)
        let (plan, report) = try imgDeployAndCompare(image, in: directory, diskSize: 8 << 20, checksum: good)
        #expect(plan.computedChecksum == sha512)
        #expect(report.checksumVerified)
        let legacy = try ImageChecksum.select(osHashAlgo: nil, osHashValue: nil, checksum: md5)
        let disk = try imgSparseDisk(directory.file("legacy.disk"), size: 8 << 20)
        #expect(
            try ImageWriter.plan(imagePath: image, diskPath: disk, checksum: legacy, configDrive: false)
                .computedChecksum == md5)
    }

    /// Every refusal has its own message and leaves the disk byte-identical.
    @Test func refusalsLeaveTheDiskUntouched() throws {
        let directory = try ImgTestDirectory()
        let raw = try sourceContent(directory, size: 2 << 20)
        let disk = try directory.write("disk", imgRandomBytes(3 << 20, seed: 77))
        let before = try imgSHA256(disk)

        let base = try imgCreateQCOW2(directory.file("base.qcow2"), size: "1M")
        let overlay = try imgCreateQCOW2(
            directory.file("overlay.qcow2"), size: "1M", extra: ["-b", base, "-F", "qcow2"])
        let luks = try imgCreateQCOW2(
            directory.file("luks.qcow2"), size: "1M", options: ["encrypt.format=luks", "encrypt.key-secret=sec0"],
            extra: ["--object", "secret,id=sec0,data=abc"])
        let dataFile = try imgCreateQCOW2(
            directory.file("df.qcow2"), size: "1M", options: ["data_file=\(directory.file("df.raw"))"])
        let big = try imgCreateQCOW2(directory.file("big.qcow2"), size: "4M")
        let truncated = directory.file("truncated.qcow2")
        try imgTool("qemu-img", ["convert", "-O", "qcow2", raw, truncated])
        try imgTool("truncate", ["-s", "\(try imgFileSize(truncated) - 65536)", truncated])
        let corruptL1 = directory.file("l1.qcow2")
        try imgTool("qemu-img", ["convert", "-O", "qcow2", raw, corruptL1])
        try imgPatch(corruptL1, at: try QCOW2Image(path: corruptL1).header.l1TableOffset, imgBigEndian(1 << 45))
        let vmdk = directory.file("x.vmdk")
        try imgTool("qemu-img", ["create", "-q", "-f", "vmdk", vmdk, "1M"])
        let empty = try directory.write("empty", [])
        let wrongSum = try ImageChecksum.select(
            osHashAlgo: "sha256", osHashValue: String(repeating: "0", count: 64), checksum: nil)
        let sha1 = ImageChecksumCase.algo("sha1")

        let cases: [(String, String, ImageChecksumCase, [String])] = [
            ("backing file", overlay, .none, ["backing file"]),
            ("encrypted", luks, .none, ["encrypted"]),
            ("data file", dataFile, .none, ["external data file"]),
            ("too big", big, .none, ["needs 4194304 bytes", "has 3145728"]),
            ("truncated", truncated, .none, ["truncated or inconsistent"]),
            ("corrupt L1", corruptL1, .none, ["L1 entry 0"]),
            ("vmdk", vmdk, .none, ["VMDK"]),
            ("empty", empty, .none, ["empty"]),
            ("checksum mismatch", raw, .value(wrongSum), ["does not match its os_hash_value", "nothing was written"]),
            ("unsupported algo", raw, sha1, ["sha1", "supported"]),
        ]
        var messages: Set<String> = []
        for (name, image, checksum, fragments) in cases {
            let message = imgExpectError(.invalidImage, fragments) {
                let sum: ImageChecksum?
                switch checksum {
                case .none: sum = nil
                case .value(let value): sum = value
                case .algo(let algo):
                    sum = try ImageChecksum.select(
                        osHashAlgo: algo, osHashValue: String(repeating: "a", count: 40), checksum: nil)
                }
                return try ImageWriter.plan(imagePath: image, diskPath: disk, checksum: sum, configDrive: false).write()
            }
            if let message { messages.insert(message) } else { Issue.record("\(name) was not refused") }
            #expect(try imgSHA256(disk) == before, "\(name) changed the disk")
        }
        #expect(messages.count == cases.count)
    }

    /// The plan refuses a file that changed after it was verified.
    @Test func refusesAnImageChangedAfterThePlan() throws {
        let directory = try ImgTestDirectory()
        let raw = try sourceContent(directory, size: 1 << 20)
        let disk = try imgSparseDisk(directory.file("disk"), size: 2 << 20)
        let plan = try ImageWriter.plan(imagePath: raw, diskPath: disk, checksum: nil, configDrive: false)
        try imgTool("truncate", ["-s", "\(2 << 20)", raw])
        imgExpectError(.deployFailed, ["changed since it was checked"]) { try plan.write() }
        #expect(try imgAllocatedBytes(disk) == 0)
    }

    @Test func reportsProgress() throws {
        let directory = try ImgTestDirectory()
        let raw = directory.file("r.raw")
        try imgTool("dd", ["if=/dev/urandom", "of=\(raw)", "bs=1M", "count=200", "status=none"])
        let disk = try imgSparseDisk(directory.file("disk"), size: 200 << 20)
        var calls: [(UInt64, UInt64)] = []
        _ = try ImageWriter.plan(imagePath: raw, diskPath: disk, checksum: nil, configDrive: false).write {
            calls.append(($0, $1))
        }
        #expect(calls.count >= 3)
        #expect(calls.last.map { $0 == (200 << 20, 200 << 20) } == true)
        #expect(zip(calls, calls.dropFirst()).allSatisfy { $0.0 <= $1.0 })
    }

    /// A 4 GiB-virtual qcow2 with ~30 MiB of data: peak RSS grows by at most 64 MiB (a memory bound, independent
    /// of the image size) and the disk file allocates within 5 % of the image's data.
    @Test func largeSparseImageWithBoundedMemory() throws {
        let directory = try ImgTestDirectory()
        // 30 scattered MiB of random data (so zero detection cannot shrink the output), then zero clusters.
        let raw = try imgSparseDisk(directory.file("big.raw"), size: 4 << 30)
        for index in 0..<30 {
            try imgTool(
                "dd",
                [
                    "if=/dev/urandom", "of=\(raw)", "bs=1M", "count=1", "seek=\(index * 137)", "conv=notrunc",
                    "status=none",
                ])
        }
        let withRandom = directory.file("big.qcow2")
        try imgTool("qemu-img", ["convert", "-O", "qcow2", raw, withRandom])
        try FileManager.default.removeItem(atPath: raw)
        try imgQemuIO(withRandom, ["write -z 1G 64M"])
        let disk = try imgSparseDisk(directory.file("disk"), size: 4 << 30)
        let reference = try imgReference(withRandom, to: directory.file("ref"), size: 4 << 30)

        let before = ImgMemory.residentBytes()
        ImgMemory.resetPeak()
        let plan = try ImageWriter.plan(imagePath: withRandom, diskPath: disk, checksum: nil, configDrive: false)
        let report = try plan.write()
        let growth = Int64(ImgMemory.peakBytes()) - Int64(before)
        print("4 GiB qcow2: deployed in \(report.seconds) s, peak RSS growth \(growth >> 10) KiB")
        #expect(growth <= 64 << 20, "peak RSS grew by \(growth >> 20) MiB")

        let data = plan.qcow2?.dataBytes ?? 0
        #expect(data >= 30 << 20)
        let allocated = try imgAllocatedBytes(disk)
        let difference = abs(Double(allocated) - Double(data)) / Double(data)
        #expect(difference <= 0.05, "allocated \(allocated) vs image data \(data)")
        #expect(report.bytesWritten == data)
        // `qemu-img compare` skips holes on both sides by SEEK_DATA, where `cmp` would read 8 GiB of zeros.
        #expect(try imgRun("qemu-img", ["compare", "-q", "-f", "raw", "-F", "raw", disk, reference]).status == 0)
    }
}

enum ImageChecksumCase {
    case none
    case value(ImageChecksum?)
    case algo(String)
}

/// The process's resident memory, from /proc/self/status.
enum ImgMemory {
    private static func field(_ name: String) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let digits = line.split(separator: " ").dropFirst().first { Int($0) != nil }
            return (digits.flatMap { UInt64($0) } ?? 0) * 1024
        }
        return 0
    }

    static func residentBytes() -> UInt64 { field("VmRSS") }

    /// VmHWM, the peak since the last `resetPeak` (or since the process started, if resetting is not allowed).
    static func peakBytes() -> UInt64 { field("VmHWM") }

    /// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    static func resetPeak() {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return }
        _ = write(fd, "5", 1)
        close(fd)
    }
}

/// The block-device path (BLKGETSIZE64, BLKSSZGET, BLKZEROOUT) through loop devices over files full of old data.
@Suite(.serialized)
struct ImageWriterBlockDeviceTests {
    @Test(arguments: [512, 4096])
    func deploysToABlockDevice(_ sectorSize: Int) throws {
        let directory = try ImgTestDirectory()
        let backing = directory.file("device.img")
        try imgTool("dd", ["if=/dev/urandom", "of=\(backing)", "bs=1M", "count=8", "status=none"])
        guard let device = ImgLoopDevice(file: backing, sectorSize: sectorSize) else {
            print("loop devices unavailable; block-device path not exercised")
            return
        }
        let image = try imgCreateQCOW2(directory.file("image.qcow2"), size: "6M")
        // Zero clusters, unallocated ranges and data, with an odd-sized zero run inside a data cluster.
        try imgQemuIO(
            image,
            [
                "write -P 0x5a 0 100k", "write -P 0 20k 3000", "write -z 1M 1M", "write -P 0x77 4M 64k",
            ])
        let reference = try imgReference(image, to: directory.file("ref"), size: 6 << 20)
        let plan = try ImageWriter.plan(imagePath: image, diskPath: device.path, checksum: nil, configDrive: false)
        #expect(plan.isBlockDevice)
        #expect(plan.diskSize == 8 << 20)
        #expect(plan.sectorSize == sectorSize)
        let report = try plan.write(to: device.path, isBlockDevice: true) { _, _ in }
        #expect(report.bytesWritten + report.bytesSkipped == 6 << 20)
        #expect(try imgCompare(device.path, reference, bytes: 6 << 20) == nil)
        // Refused: the device is no regular file, and a too-big image leaves it as it is.
        imgExpectError(.deployFailed, ["is a block device"]) {
            try plan.write(to: device.path, isBlockDevice: false) { _, _ in }
        }
        let big = try imgCreateQCOW2(directory.file("big.qcow2"), size: "9M")
        let before = try imgSHA256(device.path)
        imgExpectError(.invalidImage, ["needs 9437184 bytes", "has 8388608"]) {
            try ImageWriter.plan(imagePath: big, diskPath: device.path, checksum: nil, configDrive: false)
        }
        #expect(try imgSHA256(device.path) == before)
    }
}
