import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

struct QCOW2Tests {
    @Test func parsesVersion2And3Headers() throws {
        let directory = try ImgTestDirectory()
        let v2 = try imgCreateQCOW2(directory.file("v2.qcow2"), size: "10M", options: ["compat=0.10"])
        let v3 = try imgCreateQCOW2(directory.file("v3.qcow2"), size: "3G", options: ["cluster_size=4096"])
        let first = try QCOW2Image(path: v2)
        #expect(first.header.version == 2)
        #expect(first.header.clusterSize == 65536)
        #expect(first.virtualSize == 10 << 20)
        let second = try QCOW2Image(path: v3)
        #expect(second.header.version == 3)
        #expect(second.header.clusterBits == 12)
        #expect(second.virtualSize == 3 << 30)
        #expect(try second.extents() == [QCOW2Extent(virtualOffset: 0, length: 3 << 30, kind: .unallocated)])
    }

    /// Data, zero and unallocated clusters land in the right extents, merged where they touch.
    @Test func extentsFollowTheTables() throws {
        let directory = try ImgTestDirectory()
        let path = try imgCreateQCOW2(directory.file("x.qcow2"), size: "8M")
        try imgQemuIO(path, ["write -P 0xab 0 1M", "write -z 2M 1M", "write -P 0x11 7M 64k"])
        let image = try QCOW2Image(path: path)
        let extents = try image.extents()
        #expect(extents.map(\.virtualOffset) == [0, 1 << 20, 2 << 20, 3 << 20, 7 << 20, (7 << 20) + 65536])
        #expect(extents.map(\.length) == [1 << 20, 1 << 20, 1 << 20, 4 << 20, 65536, (1 << 20) - 65536])
        guard extents.count == 6 else { return }
        if case .data = extents[0].kind {} else { Issue.record("first extent is \(extents[0].kind)") }
        #expect(extents[1].kind == .unallocated)
        #expect(extents[2].kind == .zero)
        #expect(extents[3].kind == .unallocated)
        if case .data = extents[4].kind {} else { Issue.record("fifth extent is \(extents[4].kind)") }
        #expect(extents[5].kind == .unallocated)
        let summary = try image.validate()
        #expect(summary.dataBytes == (1 << 20) + (64 << 10))
        #expect(summary.compressedBytes == 0)
        #expect(summary.zeroBytes == 8 << 20 - summary.dataBytes)
    }

    @Test func compressedRangeDecoding() {
        // cluster_bits 16: x = 54; offset in the low 54 bits, sector count - 1 in the next 8.
        let entry: UInt64 = (1 << 62) | (3 << 54) | 0x5_0200
        let range = QCOW2Image.compressedRange(entry, clusterBits: 16)
        #expect(range.offset == 0x5_0200)
        #expect(range.length == 4 * 512)
        let odd = QCOW2Image.compressedRange((1 << 62) | (0 << 54) | 0x5_0123, clusterBits: 16)
        #expect(odd.length == 512 - 0x123)
    }

    @Test func refusesBackingFile() throws {
        let directory = try ImgTestDirectory()
        let base = try imgCreateQCOW2(directory.file("base.qcow2"), size: "1M")
        let overlay = try imgCreateQCOW2(
            directory.file("overlay.qcow2"), size: "1M", extra: ["-b", base, "-F", "qcow2"])
        imgExpectError(.invalidImage, ["backing file", "base.qcow2", "qemu-img convert"]) {
            try QCOW2Image(path: overlay)
        }
    }

    @Test func refusesEncryption() throws {
        let directory = try ImgTestDirectory()
        let path = try imgCreateQCOW2(
            directory.file("luks.qcow2"), size: "1M", options: ["encrypt.format=luks", "encrypt.key-secret=sec0"],
            extra: ["--object", "secret,id=sec0,data=abc"])
        imgExpectError(.invalidImage, ["encrypted", "LUKS"]) { try QCOW2Image(path: path) }
    }

    @Test func refusesExternalDataFile() throws {
        let directory = try ImgTestDirectory()
        let path = try imgCreateQCOW2(
            directory.file("d.qcow2"), size: "1M", options: ["data_file=\(directory.file("d.raw"))"])
        imgExpectError(.invalidImage, ["external data file", "bit 2"]) { try QCOW2Image(path: path) }
        // With the feature bit cleared, the header extension still gives it away.
        try imgPatch(path, at: 72, imgBigEndian(0))
        imgExpectError(.invalidImage, ["external data file", "0x44415441"]) { try QCOW2Image(path: path) }
    }

    @Test func refusesZstdCompression() throws {
        let directory = try ImgTestDirectory()
        let path = try imgCreateQCOW2(directory.file("z.qcow2"), size: "1M", options: ["compression_type=zstd"])
        imgExpectError(.invalidImage, ["zstd", "compression_type=zlib"]) { try QCOW2Image(path: path) }
    }

    /// Feature bits set by hand: dirty, corrupt, extended L2 and an unknown bit each get their own message.
    @Test func refusesIncompatibleFeatureBits() throws {
        let directory = try ImgTestDirectory()
        var messages: Set<String> = []
        let cases: [(UInt64, [String])] = [
            (1, ["dirty", "qemu-img check -r all"]),
            (2, ["corrupt"]),
            (16, ["extended L2"]),
            (1 << 40, ["does not know", "0x10000000000"]),
        ]
        for (bits, fragments) in cases {
            let path = try imgCreateQCOW2(directory.file("f\(bits).qcow2"), size: "1M")
            try imgPatch(path, at: 72, imgBigEndian(bits))
            if let message = imgExpectError(.invalidImage, fragments, { try QCOW2Image(path: path) }) {
                messages.insert(message)
            }
        }
        #expect(messages.count == cases.count)
    }

    @Test func refusesBadClusterBits() throws {
        let directory = try ImgTestDirectory()
        let path = try imgCreateQCOW2(directory.file("c.qcow2"), size: "1M")
        try imgPatch(path, at: 20, [0, 0, 0, 30])
        imgExpectError(.invalidImage, ["cluster_bits 30"]) { try QCOW2Image(path: path) }
    }

    /// An image with data, for corrupting: returns the path, the L1 table offset and the first L2 table offset.
    private func imageWithData(_ directory: ImgTestDirectory, _ name: String) throws -> (String, UInt64, UInt64) {
        let path = try imgCreateQCOW2(directory.file(name), size: "4M")
        try imgQemuIO(path, ["write -P 0x5a 0 256k", "write -P 0x6b 3M 64k"])
        let image = try QCOW2Image(path: path)
        let l1 = image.header.l1TableOffset
        let l2 =
            UInt64(
                bigEndian: try imgReadBytes(path, at: l1, count: 8).withUnsafeBytes {
                    $0.loadUnaligned(as: UInt64.self)
                })
            & 0x00ff_ffff_ffff_fe00
        return (path, l1, l2)
    }

    @Test func refusesTruncatedImage() throws {
        let directory = try ImgTestDirectory()
        let (path, _, _) = try imageWithData(directory, "t.qcow2")
        let size = try imgFileSize(path)
        try imgTool("truncate", ["-s", "\(size - 4096)", path])
        imgExpectError(.invalidImage, ["truncated or inconsistent", "data cluster", "outside the file"]) {
            try QCOW2Image(path: path).validate()
        }
        try imgTool("truncate", ["-s", "65536", path])
        imgExpectError(.invalidImage, ["L1 table", "outside the file"]) { try QCOW2Image(path: path) }
        try imgTool("truncate", ["-s", "50", path])
        imgExpectError(.invalidImage, ["truncated"]) { try QCOW2Image(path: path) }
    }

    @Test func refusesL1EntryOutsideTheFile() throws {
        let directory = try ImgTestDirectory()
        let (path, l1, _) = try imageWithData(directory, "l1.qcow2")
        try imgPatch(path, at: l1, imgBigEndian((1 << 63) | (1 << 40)))
        imgExpectError(.invalidImage, ["L1 entry 0", "L2 table", "outside the file"]) {
            try QCOW2Image(path: path).validate()
        }
        try imgPatch(path, at: l1, imgBigEndian(0x10200))
        imgExpectError(.invalidImage, ["L1 entry 0", "unaligned"]) { try QCOW2Image(path: path).validate() }
    }

    @Test func refusesL2EntriesOutsideTheFile() throws {
        let directory = try ImgTestDirectory()
        let (path, _, l2) = try imageWithData(directory, "l2.qcow2")
        // Entry 48 maps virtual 3 MiB (64 KiB clusters).
        try imgPatch(path, at: l2 + 48 * 8, imgBigEndian((1 << 63) | (1 << 36)))
        imgExpectError(.invalidImage, ["L2 table 0 entry 48", "outside the file"]) {
            try QCOW2Image(path: path).validate()
        }
        try imgPatch(path, at: l2 + 48 * 8, imgBigEndian((1 << 62) | (1 << 36)))
        imgExpectError(.invalidImage, ["L2 table 0 entry 48", "compressed cluster"]) {
            try QCOW2Image(path: path).validate()
        }
        try imgPatch(path, at: l2 + 48 * 8, imgBigEndian(0x3_0200))
        imgExpectError(.invalidImage, ["L2 table 0 entry 48", "unaligned"]) { try QCOW2Image(path: path).validate() }
    }
}
