import BerthCore
import Glibc

/// The format of an image, decided from its bytes: Glance's `disk_format` is what the uploader claimed, and
/// writing a qcow2 file to a disk as if it were raw produces a node that does not boot.
public enum ImageFormat: Sendable, Hashable, CustomStringConvertible {
    /// A plain sequence of blocks (also an ISO 9660 image, which is raw blocks).
    case raw
    case qcow2(version: Int)

    /// Bytes `detect(header:)` looks at; a shorter header is fine (a tiny raw image).
    public static let probeBytes = 4096

    public var description: String {
        switch self {
        case .raw: "raw"
        case .qcow2(let version): "qcow2 (version \(version))"
        }
    }

    /// Detects the format from the first bytes of the image (up to `probeBytes`). Throws `InvalidImage` for
    /// formats Berth recognises but cannot deploy, naming the format and how to convert it.
    public static func detect(header: UnsafeRawBufferPointer) throws(BerthError) -> ImageFormat {
        let bytes = Array(header.prefix(probeBytes))
        func starts(with magic: [UInt8], at offset: Int = 0) -> Bool {
            bytes.count >= offset + magic.count && Array(bytes[offset..<offset + magic.count]) == magic
        }
        func ascii(_ text: String) -> [UInt8] { Array(text.utf8) }

        if starts(with: [0x51, 0x46, 0x49, 0xfb]) {  // "QFI\xfb"
            guard bytes.count >= 8 else {
                throw .invalidImage("the image is a truncated qcow2 file (\(bytes.count) bytes); re-upload it")
            }
            let version = Int(ImageBytes.be32(bytes, 4))
            switch version {
            case 2, 3:
                return .qcow2(version: version)
            case 1:
                throw refusal("qcow (version 1)")
            default:
                throw .invalidImage(
                    "the image is qcow2 version \(version), which Berth does not know (it reads versions 2 and 3); "
                        + "convert it with `qemu-img convert -O qcow2 -o compat=1.1`")
            }
        }
        if starts(with: ascii("QED\0")) { throw refusal("QED") }
        if starts(with: ascii("KDMV")) { throw refusal("VMDK (sparse extent)") }
        if starts(with: ascii("COWD")) { throw refusal("VMDK (ESX COWD)") }
        if starts(with: ascii("# Disk DescriptorFile")) {
            throw refusal("a VMDK descriptor (the data is in separate extent files)")
        }
        if starts(with: ascii("vhdxfile")) { throw refusal("VHDX") }
        if starts(with: ascii("conectix")) { throw refusal("VHD (dynamic)") }
        // VDI: the signature 0xbeda107f, little-endian, follows the "<<< ... >>>" banner.
        if starts(with: [0x7f, 0x10, 0xda, 0xbe], at: 0x40) { throw refusal("VDI (VirtualBox)") }
        if starts(with: ascii("WithoutFreeSpace")) || starts(with: ascii("WithouFreSpacExt")) {
            throw refusal("Parallels")
        }
        if starts(with: ascii("Bochs Virtual HD Image")) { throw refusal("Bochs") }
        if starts(with: ascii("#!/bin/sh\n#V2.0 Format\nmodprobe cloop")) { throw refusal("cloop") }
        if starts(with: [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]) {  // "LUKS\xba\xbe"
            throw .invalidImage(
                "the image is a LUKS-encrypted volume; Berth cannot decrypt it; upload the decrypted image "
                    + "(`qemu-img convert --object secret,... --image-opts ... -O qcow2`)")
        }
        // Archives: a gzip/xz/bzip2/zstd file written to a disk is garbage, and no disk image starts like these.
        if starts(with: [0x1f, 0x8b, 0x08]) { throw archive("gzip", "gunzip") }
        if starts(with: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) { throw archive("xz", "unxz") }
        if starts(with: [0x28, 0xb5, 0x2f, 0xfd]) { throw archive("zstd", "unzstd") }
        if starts(with: ascii("BZh")) && bytes.count >= 10 && (0x31...0x39).contains(bytes[3])
            && Array(bytes[4..<10]) == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
        {
            throw archive("bzip2", "bunzip2")
        }
        return .raw
    }

    public static func detect(header: [UInt8]) throws(BerthError) -> ImageFormat {
        var outcome: Result<ImageFormat, BerthError> = .success(.raw)
        header.withUnsafeBytes { raw in outcome = Result { () throws(BerthError) in try detect(header: raw) } }
        return try outcome.get()
    }

    /// Reads the first `probeBytes` of an open descriptor (positioned read: the descriptor's offset is unchanged).
    public static func detect(descriptor: Int32) throws(BerthError) -> ImageFormat {
        var header = [UInt8](repeating: 0, count: probeBytes)
        var got = 0
        while got < probeBytes {
            let result = header.withUnsafeMutableBytes { raw in
                pread(descriptor, raw.baseAddress! + got, probeBytes - got, off_t(got))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw .invalidImage("cannot read the image header: \(String(cString: strerror(errno)))")
            }
            if result == 0 { break }
            got += result
        }
        return try detect(header: Array(header[0..<got]))
    }

    public static func detect(path: String) throws(BerthError) -> ImageFormat {
        let file = try ImageSourceFile(path: path)
        let header = try file.readBytes(count: Int(min(UInt64(probeBytes), file.size)), at: 0, what: "the header")
        return try detect(header: header)
    }

    private static func refusal(_ name: String) -> BerthError {
        .invalidImage(
            "the image is \(name), which Berth cannot deploy (it deploys raw and qcow2 images); convert it with "
                + "`qemu-img convert -O qcow2` (or `-O raw`) and upload the result")
    }

    private static func archive(_ name: String, _ tool: String) -> BerthError {
        .invalidImage(
            "the image is a \(name)-compressed file, not a disk image; decompress it (`\(tool)`) and upload the "
                + "raw or qcow2 image inside")
    }
}
