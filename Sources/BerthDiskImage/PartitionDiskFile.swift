import BerthCore
import Glibc

/// Sectors a partition table is read from: the node's disk after the image is written, or the image's own
/// virtual disk before (so the deploy plan makes the config step's decision before anything is written).
protocol PartitionSectorReader: AnyObject {
    /// Names the disk (or image) in messages.
    var path: String { get }
    /// Exactly `count` bytes at `offset`; bytes past the end read as zeros.
    func read(at offset: UInt64, count: Int) throws(BerthError) -> [UInt8]
}

/// An open disk: a block device or a disk image file, read and written with positioned I/O so that no
/// caller depends on a shared file offset. Owns its descriptor and closes it in `deinit`.
final class PartitionDiskFile: PartitionSectorReader {
    let path: String
    let isBlockDevice: Bool
    /// Bytes on the disk: `st_size` for a file, `BLKGETSIZE64` for a device.
    let byteCount: UInt64
    private let descriptor: Int32

    // Linux ioctl numbers (linux/fs.h); Glibc does not export the macros to Swift.
    static let blkRereadPartitions: UInt = 0x125F  // BLKRRPART
    static let blkGetSize64: UInt = 0x8008_1272  // BLKGETSIZE64
    static let blkLogicalSectorSize: UInt = 0x1268  // BLKSSZGET
    // fallocate modes (linux/falloc.h).
    static let fallocKeepSize: Int32 = 0x01
    static let fallocPunchHole: Int32 = 0x02

    init(path: String, writable: Bool) throws(BerthError) {
        self.path = path
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else {
            throw .deployFailed(
                "cannot open disk \(path): \(PartitionDiskFile.lastError()); check the node's disk path")
        }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let reason = PartitionDiskFile.lastError()
            close(fd)
            throw .deployFailed("cannot stat disk \(path): \(reason)")
        }
        let isDevice = (status.st_mode & S_IFMT) == S_IFBLK
        var size = UInt64(max(status.st_size, 0))
        if isDevice {
            var deviceSize: UInt64 = 0
            guard ioctl(fd, PartitionDiskFile.blkGetSize64, &deviceSize) == 0 else {
                let reason = PartitionDiskFile.lastError()
                close(fd)
                throw .deployFailed("cannot read the size of block device \(path): \(reason)")
            }
            size = deviceSize
        }
        descriptor = fd
        isBlockDevice = isDevice
        byteCount = size
    }

    deinit { close(descriptor) }

    /// The device's logical sector size, nil for a file (a file has whatever sectors its table says).
    func deviceSectorSize() -> Int? {
        guard isBlockDevice else { return nil }
        var size: Int32 = 0
        guard ioctl(descriptor, PartitionDiskFile.blkLogicalSectorSize, &size) == 0 else { return nil }
        return Int(size)
    }

    /// Asks the kernel to re-read the partition table so it sees what the image (or we) wrote. EINVAL means
    /// the device has no partition support (a loop device without partscan): the table is parsed from the
    /// bytes anyway, so that is not a failure. EBUSY means something holds a partition open, and writing
    /// behind its back would be unsafe.
    func rereadPartitionTable() throws(BerthError) {
        guard isBlockDevice else { return }
        if ioctl(descriptor, PartitionDiskFile.blkRereadPartitions) == 0 { return }
        let code = errno
        if code == EINVAL { return }
        let reason = String(cString: strerror(code))
        throw .deployFailed(
            "the kernel could not re-read the partition table of \(path) (BLKRRPART: \(reason)); "
                + "make sure no partition of the node's disk is mounted or in use")
    }

    /// Exactly `count` bytes at `offset`; bytes beyond the end of a file read as zeros, which is what a
    /// sparse or short image holds there.
    func read(at offset: UInt64, count: Int) throws(BerthError) -> [UInt8] {
        try checkRange(offset, count)
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = buffer.withUnsafeMutableBytes { raw in
                pread(descriptor, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw .deployFailed("cannot read \(count) bytes at offset \(offset) of \(path): \(Self.lastError())")
            }
            if result == 0 { break }
            done += result
        }
        return buffer
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws(BerthError) {
        try checkRange(offset, bytes.count)
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeBytes { raw in
                pwrite(descriptor, raw.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw .deployFailed(
                    "cannot write \(bytes.count) bytes at offset \(offset) of \(path): \(Self.lastError())")
            }
            done += result
        }
    }

    /// Zeros `count` bytes from `offset`. A disk file gets a hole punched, as the image writer leaves its zero
    /// ranges (the bytes read as zeros and take no space); a block device, or a file system that cannot punch
    /// holes, gets zeros written a megabyte at a time so memory stays bounded.
    func zero(at offset: UInt64, count: UInt64) throws(BerthError) {
        guard count > 0 else { return }
        if !isBlockDevice,
            ImageFallocate.call(
                descriptor, Self.fallocPunchHole | Self.fallocKeepSize, off_t(offset), off_t(count)) == 0
        {
            return
        }
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        var done: UInt64 = 0
        while done < count {
            let length = Int(min(UInt64(chunk.count), count - done))
            try write(length == chunk.count ? chunk : Array(chunk[0..<length]), at: offset + done)
            done += UInt64(length)
        }
    }

    /// An offset computed from a table must not reach `off_t`'s sign bit (converting it would trap).
    private func checkRange(_ offset: UInt64, _ count: Int) throws(BerthError) {
        guard offset <= UInt64(Int64.max) - UInt64(count) else {
            throw .deployFailed("offset \(offset) of \(path) is beyond any disk; the partition table is corrupt")
        }
    }

    func synchronize() throws(BerthError) {
        guard fsync(descriptor) == 0 else {
            throw .deployFailed("cannot flush \(path) to stable storage (fsync): \(Self.lastError())")
        }
    }

    static func lastError() -> String { String(cString: strerror(errno)) }
}

/// Little-endian field access for on-disk structures.
enum PartitionBytes {
    static func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    static func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    static func put16(_ value: UInt16, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<2 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt16(index))) }
    }

    static func put32(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index))) }
    }

    static func put64(_ value: UInt64, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<8 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as the UEFI specification uses for GPT headers and entry arrays).
enum PartitionCRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1 }
        return value
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
