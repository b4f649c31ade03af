import BerthCore
import Glibc

/// The node's disk as the image writer sees it: a block device or a disk file, written with positioned I/O.
/// Owns its descriptor.
final class ImageTargetDisk {
    let path: String
    let isBlockDevice: Bool
    /// Bytes on the disk: `st_size` for a file, `BLKGETSIZE64` for a device.
    private(set) var size: UInt64
    /// The device's logical sector size; 512 for a file.
    let sectorSize: Int
    private let descriptor: Int32
    /// Whether punching holes works on this file system; cleared at the first EOPNOTSUPP so later ranges go
    /// straight to the fallback.
    private var canPunchHoles = true
    private var canZeroOut = true
    private var zeros: UnsafeMutableRawBufferPointer?

    // Linux constants that Glibc does not export to Swift (linux/fs.h, linux/falloc.h).
    private static let blkGetSize64: UInt = 0x8008_1272
    private static let blkLogicalSectorSize: UInt = 0x1268
    private static let blkZeroOut: UInt = 0x127f
    private static let fallocKeepSize: Int32 = 0x01
    private static let fallocPunchHole: Int32 = 0x02
    private static let fallocZeroRange: Int32 = 0x10
    private static let zeroChunk = 1 << 20

    init(path: String, writable: Bool) throws(BerthError) {
        self.path = path
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else {
            throw .deployFailed("cannot open disk \(path): \(ImageSourceFile.lastError()); check the node's disk path")
        }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let reason = ImageSourceFile.lastError()
            close(fd)
            throw .deployFailed("cannot stat disk \(path): \(reason)")
        }
        let kind = status.st_mode & S_IFMT
        guard kind == S_IFBLK || kind == S_IFREG else {
            close(fd)
            throw .deployFailed("disk \(path) is neither a block device nor a regular file")
        }
        var bytes = UInt64(max(status.st_size, 0))
        var sector: Int32 = 512
        if kind == S_IFBLK {
            guard ioctl(fd, Self.blkGetSize64, &bytes) == 0 else {
                let reason = ImageSourceFile.lastError()
                close(fd)
                throw .deployFailed("cannot read the size of block device \(path): \(reason)")
            }
            if ioctl(fd, Self.blkLogicalSectorSize, &sector) != 0 || sector < 512 { sector = 512 }
        }
        descriptor = fd
        isBlockDevice = kind == S_IFBLK
        size = bytes
        sectorSize = Int(sector)
    }

    deinit {
        zeros?.deallocate()
        close(descriptor)
    }

    /// Grows a disk file to at least `bytes` (never shrinks it: the bytes past the image are the node's).
    func ensureSize(_ bytes: UInt64) throws(BerthError) {
        guard !isBlockDevice, size < bytes else { return }
        guard ftruncate(descriptor, off_t(bytes)) == 0 else {
            throw .deployFailed("cannot extend disk file \(path) to \(bytes) bytes: \(ImageSourceFile.lastError())")
        }
        size = bytes
    }

    func write(_ bytes: UnsafeRawPointer, count: Int, at offset: UInt64) throws(BerthError) {
        var done = 0
        while done < count {
            let result = pwrite(descriptor, bytes + done, count - done, off_t(offset) + off_t(done))
            if result < 0 {
                if errno == EINTR { continue }
                throw .deployFailed(
                    "cannot write \(count) bytes at offset \(offset) of disk \(path): \(ImageSourceFile.lastError())")
            }
            done += result
        }
    }

    /// Makes `[offset, offset + length)` read as zeros without writing zeros where the storage can do better:
    /// a hole punched in a file, BLKZEROOUT (write-zeroes/unmap in the device) on a block device. The disk may
    /// hold an earlier deploy, so skipping the range is not enough.
    func zero(at offset: UInt64, length: UInt64) throws(BerthError) {
        guard length > 0 else { return }
        if !isBlockDevice {
            if canPunchHoles {
                let mode = Self.fallocPunchHole | Self.fallocKeepSize
                if ImageFallocate.call(descriptor, mode, off_t(offset), off_t(length)) == 0 { return }
                guard errno == EOPNOTSUPP || errno == ENOSYS else { throw failure("punch a hole", offset, length) }
                canPunchHoles = false
            }
            if ImageFallocate.call(descriptor, Self.fallocZeroRange | Self.fallocKeepSize, off_t(offset), off_t(length))
                == 0
            {
                return
            }
            try writeZeros(at: offset, length: length)
            return
        }
        // BLKZEROOUT takes whole sectors; align inwards to the page size (so no page is half cached, half
        // zeroed underneath) and write the unaligned edges.
        let alignment = UInt64(max(sectorSize, 4096))
        let start = (offset + alignment - 1) / alignment * alignment
        let end = (offset + length) / alignment * alignment
        guard canZeroOut, start < end else {
            try writeZeros(at: offset, length: length)
            return
        }
        try writeZeros(at: offset, length: start - offset)
        var range: (UInt64, UInt64) = (start, end - start)
        let result = withUnsafeMutablePointer(to: &range) { ioctl(descriptor, Self.blkZeroOut, $0) }
        if result != 0 {
            guard errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL else {
                throw failure("zero (BLKZEROOUT)", start, end - start)
            }
            canZeroOut = false
            try writeZeros(at: start, length: end - start)
        }
        try writeZeros(at: end, length: offset + length - end)
    }

    private func writeZeros(at offset: UInt64, length: UInt64) throws(BerthError) {
        guard length > 0 else { return }
        let buffer: UnsafeMutableRawBufferPointer
        if let zeros {
            buffer = zeros
        } else {
            buffer = .allocate(byteCount: Self.zeroChunk, alignment: 4096)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            zeros = buffer
        }
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(Self.zeroChunk), length - done))
            try write(buffer.baseAddress!, count: count, at: offset + done)
            done += UInt64(count)
        }
    }

    func synchronize() throws(BerthError) {
        guard fsync(descriptor) == 0 else {
            throw .deployFailed("cannot flush disk \(path) to stable storage (fsync): \(ImageSourceFile.lastError())")
        }
    }

    private func failure(_ action: String, _ offset: UInt64, _ length: UInt64) -> BerthError {
        .deployFailed(
            "cannot \(action) for \(length) bytes at offset \(offset) of disk \(path): \(ImageSourceFile.lastError())")
    }
}

/// `fallocate(2)`, which Glibc declares only under _GNU_SOURCE and so is not imported into Swift; looked up in
/// the C library already loaded (no new library). Nil only on a C library without it, where the callers fall
/// back to writing zeros.
enum ImageFallocate {
    private typealias Function = @convention(c) (Int32, Int32, off_t, off_t) -> Int32

    private static let function: Function? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "fallocate") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()

    static func call(_ descriptor: Int32, _ mode: Int32, _ offset: off_t, _ length: off_t) -> Int32 {
        guard let function else {
            errno = EOPNOTSUPP
            return -1
        }
        return function(descriptor, mode, offset, length)
    }
}
