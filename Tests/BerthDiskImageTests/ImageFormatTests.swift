import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

struct ImageFormatTests {
    @Test func rawAndQCOW2FromTheBytes() throws {
        let directory = try ImgTestDirectory()
        #expect(try ImageFormat.detect(header: [UInt8](repeating: 0, count: 4096)) == .raw)
        #expect(try ImageFormat.detect(header: [0x41]) == .raw)
        var mbr = [UInt8](repeating: 0, count: 512)
        mbr[0] = 0xeb
        mbr[510] = 0x55
        mbr[511] = 0xaa
        #expect(try ImageFormat.detect(header: mbr) == .raw)
        let v2 = try imgCreateQCOW2(directory.file("v2.qcow2"), size: "1M", options: ["compat=0.10"])
        let v3 = try imgCreateQCOW2(directory.file("v3.qcow2"), size: "1M")
        #expect(try ImageFormat.detect(path: v2) == .qcow2(version: 2))
        #expect(try ImageFormat.detect(path: v3) == .qcow2(version: 3))
        let fd = open(v3, O_RDONLY)
        defer { close(fd) }
        #expect(try ImageFormat.detect(descriptor: fd) == .qcow2(version: 3))
    }

    /// An ISO 9660 image is raw blocks (the "CD001" descriptor is at 32 KiB, past the probe).
    @Test func isoIsRaw() throws {
        var iso = [UInt8](repeating: 0, count: 34_816)
        iso.replaceSubrange(32_769..<32_774, with: Array("CD001".utf8))
        let directory = try ImgTestDirectory()
        #expect(try ImageFormat.detect(path: directory.write("x.iso", iso)) == .raw)
    }

    /// Every other format qemu-img can make is refused by name, each with its own message.
    @Test func knownButUnsupportedFormatsAreRefusedByName() throws {
        let directory = try ImgTestDirectory()
        var messages: Set<String> = []
        let cases: [(String, [String], String)] = [
            ("vmdk", [], "VMDK"),
            ("vhdx", [], "VHDX"),
            ("vdi", [], "VDI"),
            ("vpc", [], "VHD"),
            ("qed", [], "QED"),
            ("parallels", [], "Parallels"),
            ("luks", ["--object", "secret,id=s,data=abc", "-o", "key-secret=s"], "LUKS"),
        ]
        for (format, extra, name) in cases {
            let path = directory.file("x.\(format)")
            try imgTool("qemu-img", ["create", "-q", "-f", format] + extra + [path, "1M"])
            if let message = imgExpectError(.invalidImage, [name], { try ImageFormat.detect(path: path) }) {
                messages.insert(message)
            }
        }
        #expect(messages.count == cases.count)
    }

    @Test func archivesAndOldQcowAreRefused() throws {
        let directory = try ImgTestDirectory()
        let raw = try directory.write("data", imgRandomBytes(10_000, seed: 1))
        try imgTool("gzip", ["-k", raw])
        try imgTool("xz", ["-k", raw])
        imgExpectError(.invalidImage, ["gzip", "gunzip"]) { try ImageFormat.detect(path: raw + ".gz") }
        imgExpectError(.invalidImage, ["xz"]) { try ImageFormat.detect(path: raw + ".xz") }
        imgExpectError(.invalidImage, ["bzip2"]) {
            try ImageFormat.detect(header: Array("BZh91AY&SY".utf8) + [0, 0])
        }
        imgExpectError(.invalidImage, ["qcow (version 1)"]) {
            try ImageFormat.detect(header: [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 1])
        }
        imgExpectError(.invalidImage, ["version 4"]) {
            try ImageFormat.detect(header: [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 4])
        }
        imgExpectError(.invalidImage, ["VMDK descriptor"]) {
            try ImageFormat.detect(header: Array("# Disk DescriptorFile\nversion=1\n".utf8))
        }
    }
}
