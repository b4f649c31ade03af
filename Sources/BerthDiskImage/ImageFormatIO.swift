import BerthCore
import Glibc

/// An image file opened read-only, read with positioned I/O so that the header probe, the table walk and the
/// data copy never depend on a shared file offset. Owns its descriptor.
final class ImageSourceFile {
    let path: String
    let size: UInt64
    let identity: ImageFileIdentity
    private let descriptor: Int32

    init(path: String) throws(BerthError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw .invalidImage("cannot open image file \(path): \(ImageSourceFile.lastError())")
        }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let reason = ImageSourceFile.lastError()
            close(fd)
            throw .invalidImage("cannot stat image file \(path): \(reason)")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw .invalidImage("image \(path) is not a regular file")
        }
        descriptor = fd
        size = UInt64(max(status.st_size, 0))
        identity = ImageFileIdentity(status)
    }

    deinit { close(descriptor) }

    /// Tells the kernel the file is read front to back, so it reads ahead aggressively.
    func adviseSequential() {
        _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    /// Reads up to `buffer.count` bytes at `offset`, fewer only at the end of the file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BerthError) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        // Offsets come from the image; past off_t's range there is nothing to read (and converting would trap).
        guard offset <= UInt64(Int64.max) - UInt64(buffer.count) else { return 0 }
        var done = 0
        while done < buffer.count {
            let result = pread(base + done, buffer.count - done, offset + UInt64(done))
            if result < 0 {
                if errno == EINTR { continue }
                throw .deployFailed(
                    "cannot read \(buffer.count) bytes at offset \(offset) of image \(path): \(Self.lastError())")
            }
            if result == 0 { break }
            done += result
        }
        return done
    }

    /// Exactly `count` bytes at `offset`; `what` names the structure for the error when the file is too short.
    func readBytes(count: Int, at offset: UInt64, what: String) throws(BerthError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var outcome: Result<Int, BerthError> = .success(0)
        bytes.withUnsafeMutableBytes { raw in
            outcome = Result { () throws(BerthError) in try read(into: raw, at: offset) }
        }
        let got = try outcome.get()
        guard got == count else {
            throw .invalidImage(
                "image \(path) is truncated: \(what) needs \(count) bytes at offset \(offset) but the file has \(size)")
        }
        return bytes
    }

    private func pread(_ target: UnsafeMutableRawPointer, _ count: Int, _ offset: UInt64) -> Int {
        Glibc.pread(descriptor, target, count, off_t(Int64(bitPattern: offset)))
    }

    /// The file's status now, to tell whether it changed since it was verified.
    func currentIdentity() -> ImageFileIdentity? {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return nil }
        return ImageFileIdentity(status)
    }

    static func lastError() -> String { String(cString: strerror(errno)) }
}

/// What identifies an image file's content without re-reading it: same inode, size and modification time means
/// the bytes hashed by `ImageWriter.plan` are the bytes `DeployPlan.write` copies.
public struct ImageFileIdentity: Sendable, Hashable {
    public let device: UInt64
    public let inode: UInt64
    public let size: Int64
    public let modifiedSeconds: Int
    public let modifiedNanoseconds: Int

    init(_ status: stat) {
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
        size = Int64(status.st_size)
        modifiedSeconds = status.st_mtim.tv_sec
        modifiedNanoseconds = status.st_mtim.tv_nsec
    }
}

/// Big-endian field access for the qcow2 header and tables.
enum ImageBytes {
    @inline(__always)
    static func be32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        bytes.withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    }

    @inline(__always)
    static func be64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        bytes.withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    }

    static func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
}
