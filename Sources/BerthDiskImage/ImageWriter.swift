import BerthCore
import Glibc

/// Writes an image to a node's disk (DESIGN §6 steps 1–2) in two phases:
///
/// - `plan` decides everything that can refuse the deploy — through `ImageInspector`: the format from the bytes,
///   the virtual size against the disk, qcow2 features (backing file, external data file, encryption, ...),
///   every L1/L2 entry inside the file, every compressed cluster inflating, the image's own partition table and
///   where the config partition will be; then the checksum — and touches nothing on the disk (it opens it
///   read-only for its size).
///   The checksum is verified here with a sequential read of the whole image file, *before* writing: verifying
///   while writing would leave a half-written disk behind a mismatch. That costs a second read of the image,
///   which is sequential and usually from the page cache.
/// - `DeployPlan.write` streams the image with fixed buffers (memory independent of the image size): raw images
///   are copied in chunks, qcow2 is converted on the fly (compressed clusters inflated), zero and unallocated
///   ranges and all-zero 4 KiB blocks are not written but zeroed cheaply (holes in files; BLKZEROOUT on
///   devices), then the disk is fsynced.
public enum ImageWriter {
    /// Bytes read and written per step; the dominant, fixed part of the writer's memory.
    public static let bufferBytes = 4 << 20
    /// Granularity of zero detection in written data, as `qemu-img convert -S 4k`.
    public static let zeroBlockBytes = 4096

    /// Checks the image against the disk and its checksum; throws `InvalidImage` (or `DeployFailed` for disk
    /// problems) without writing anything. `diskSizeBytes` nil means the disk's current size. With
    /// `configDrive` the image must have a sane partition table with (room for) the config partition.
    public static func plan(
        imagePath: String, diskPath: String, diskSizeBytes: UInt64? = nil, sectorSize: Int = 512,
        checksum: ImageChecksum?, configDrive: Bool = true
    ) throws(BerthError) -> DeployPlan {
        guard sectorSize >= 512, sectorSize & (sectorSize - 1) == 0 else {
            throw .invalidRequest("sector size \(sectorSize) is not a power of two of at least 512")
        }
        let file = try ImageSourceFile(path: imagePath)
        let disk = try ImageTargetDisk(path: diskPath, writable: false)
        let diskSize = diskSizeBytes ?? disk.size
        let inspection = try ImageInspector.inspect(
            file,
            for: .bareMetalDisk(
                sizeBytes: diskSize, sectorSize: max(sectorSize, disk.sectorSize), configDrive: configDrive))
        var computed: String?
        if let checksum {
            let actual = try hash(file, algorithm: checksum.algorithm)
            try checksum.verify(actual, imagePath: imagePath)
            computed = actual
        }
        return DeployPlan(
            imagePath: imagePath, diskPath: diskPath, format: inspection.format,
            virtualSize: inspection.virtualSize, imageFileSize: file.size, diskSize: diskSize,
            isBlockDevice: disk.isBlockDevice,
            sectorSize: max(sectorSize, disk.sectorSize), checksum: checksum, computedChecksum: computed,
            qcow2: inspection.qcow2, identity: inspection.identity)
    }

    /// The hex digest of the whole file, read sequentially with one fixed buffer.
    static func hash(_ file: ImageSourceFile, algorithm: ImageHashAlgorithm) throws(BerthError) -> String {
        var hasher = ImageHasher(algorithm)
        file.adviseSequential()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < file.size {
            let got = try file.read(into: buffer, at: offset)
            guard got > 0 else { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            offset += UInt64(got)
        }
        guard offset == file.size else {
            throw .invalidImage("image file \(file.path) shrank while it was being hashed; upload it again")
        }
        return hasher.finalize()
    }
}

/// What `ImageWriter.plan` decided; `write` carries it out.
public struct DeployPlan: Sendable, Hashable {
    public let imagePath: String
    public let diskPath: String
    public let format: ImageFormat
    /// Bytes the image occupies on the disk (the qcow2 virtual size, or the raw file size).
    public let virtualSize: UInt64
    public let imageFileSize: UInt64
    public let diskSize: UInt64
    public let isBlockDevice: Bool
    public let sectorSize: Int
    public let checksum: ImageChecksum?
    /// The digest `plan` computed and verified (nil when there was no checksum to verify).
    public let computedChecksum: String?
    /// The table walk's findings for a qcow2 image.
    public let qcow2: QCOW2Summary?
    /// The image file that was verified; `write` refuses a file that changed since.
    public let identity: ImageFileIdentity

    /// Writes to the planned disk.
    public func write(
        progress: (_ bytesDone: UInt64, _ bytesTotal: UInt64) -> Void = { _, _ in }
    ) throws(BerthError) -> DeployReport {
        try write(to: diskPath, isBlockDevice: isBlockDevice, progress: progress)
    }

    /// Writes to `diskPath`, which must be the kind of disk the caller says (`isBlockDevice`) and big enough.
    public func write(
        to diskPath: String, isBlockDevice: Bool,
        progress: (_ bytesDone: UInt64, _ bytesTotal: UInt64) -> Void = { _, _ in }
    ) throws(BerthError) -> DeployReport {
        let clock = ContinuousClock()
        let started = clock.now
        let file = try ImageSourceFile(path: imagePath)
        guard file.identity == identity else {
            throw .deployFailed(
                "image file \(imagePath) changed since it was checked (size, inode or modification time differ); "
                    + "nothing was written; retry the deploy")
        }
        let disk = try ImageTargetDisk(path: diskPath, writable: true)
        guard disk.isBlockDevice == isBlockDevice else {
            throw .deployFailed(
                "disk \(diskPath) is \(disk.isBlockDevice ? "a block device" : "a regular file"), not what the "
                    + "node's inventory says; nothing was written; fix the inventory")
        }
        // A disk file grows to fit (ensureSize); a device cannot.
        if disk.isBlockDevice && disk.size < virtualSize {
            throw .invalidImage(
                "image \(imagePath) needs \(virtualSize) bytes, the disk \(diskPath) has \(disk.size); nothing was "
                    + "written")
        }
        try disk.ensureSize(virtualSize)
        // The sink keeps the callback only for the duration of this call.
        let (written, skipped) = try withoutActuallyEscaping(progress) {
            (progress) throws(BerthError) -> (UInt64, UInt64) in
            var sink = ImageWriterSink(disk: disk, total: virtualSize, progress: progress)
            switch format {
            case .raw:
                try copyRaw(file, into: &sink)
            case .qcow2:
                try convertQCOW2(QCOW2Image(file: file), into: &sink)
            }
            try sink.finish()
            return (sink.bytesWritten, sink.bytesSkipped)
        }
        try disk.synchronize()
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return DeployReport(
            bytesWritten: written, bytesSkipped: skipped, seconds: seconds,
            checksumVerified: computedChecksum != nil)
    }

    private func copyRaw(_ file: ImageSourceFile, into sink: inout ImageWriterSink) throws(BerthError) {
        file.adviseSequential()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageWriter.bufferBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < virtualSize {
            let got = try file.read(into: buffer, at: offset)
            guard got > 0 else {
                throw .deployFailed("image file \(imagePath) ended at \(offset) bytes while being copied")
            }
            try sink.write(UnsafeRawBufferPointer(rebasing: buffer[0..<got]), at: offset)
            offset += UInt64(got)
        }
    }

    private func convertQCOW2(_ image: QCOW2Image, into sink: inout ImageWriterSink) throws(BerthError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageWriter.bufferBytes, alignment: 4096)
        defer { buffer.deallocate() }
        let inflater = QCOW2ClusterInflater(image: image)
        var reader = image.makeExtentReader()
        while let extent = try reader.next() {
            switch extent.kind {
            case .zero, .unallocated:
                try sink.skip(at: extent.virtualOffset, length: extent.length)
            case .data(let fileOffset):
                var done: UInt64 = 0
                while done < extent.length {
                    let count = Int(min(UInt64(buffer.count), extent.length - done))
                    let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                    let got = try image.file.read(into: chunk, at: fileOffset + done)
                    guard got == count else {
                        throw .deployFailed(
                            "image file \(imagePath) ended inside the data cluster at file offset \(fileOffset + done)")
                    }
                    try sink.write(UnsafeRawBufferPointer(chunk), at: extent.virtualOffset + done)
                    done += UInt64(count)
                }
            case .compressed(let fileOffset, let length):
                // `plan` inflated every compressed cluster already; this can only fail if the file changed.
                let cluster = try inflater.inflate(
                    fileOffset: fileOffset, length: length, virtualOffset: extent.virtualOffset)
                try sink.write(
                    UnsafeRawBufferPointer(rebasing: cluster[0..<Int(extent.length)]), at: extent.virtualOffset)
            }
        }
    }
}

/// What `DeployPlan.write` did.
public struct DeployReport: Sendable, Hashable {
    /// Bytes actually written to the disk.
    public var bytesWritten: UInt64
    /// Bytes of the image's virtual size not written because they are zero (holes, zeroed or discarded ranges).
    public var bytesSkipped: UInt64
    /// Duration of `write` (the checksum pass in `plan` is not included).
    public var seconds: Double
    /// True when the image file matched its checksum (verified by `plan` before anything was written).
    public var checksumVerified: Bool
}

/// The writing end: detects all-zero blocks in written data and turns them, like zero/unallocated extents,
/// into one zeroing request per run instead of writes.
struct ImageWriterSink {
    let disk: ImageTargetDisk
    let total: UInt64
    let progress: (UInt64, UInt64) -> Void
    private(set) var bytesWritten: UInt64 = 0
    private(set) var bytesSkipped: UInt64 = 0
    /// A run of zeros not yet applied to the disk, so neighbouring runs cost one call.
    private var zeroStart: UInt64 = 0
    private var zeroLength: UInt64 = 0
    private var reported: UInt64 = 0

    init(disk: ImageTargetDisk, total: UInt64, progress: @escaping (UInt64, UInt64) -> Void) {
        self.disk = disk
        self.total = total
        self.progress = progress
    }

    mutating func skip(at offset: UInt64, length: UInt64) throws(BerthError) {
        guard length > 0 else { return }
        if zeroLength > 0 && zeroStart + zeroLength == offset {
            zeroLength += length
        } else {
            try flushZeros()
            zeroStart = offset
            zeroLength = length
        }
        bytesSkipped += length
        report(offset + length)
    }

    /// Writes `bytes` at `offset`, leaving out whole zero blocks (aligned to the disk offset).
    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(BerthError) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        let block = ImageWriter.zeroBlockBytes
        var position = 0
        var runStart = 0
        var runIsZero: Bool?
        while position < bytes.count {
            // Blocks follow disk-offset alignment, so a chunk starting mid-block has a short first block.
            let misalignment = Int((offset + UInt64(position)) % UInt64(block))
            let length = min(block - misalignment, bytes.count - position)
            let zero = Self.isZero(base + position, count: length)
            if runIsZero != zero {
                if let wasZero = runIsZero {
                    try emit(base, runStart, position, zero: wasZero, offset: offset)
                }
                runIsZero = zero
                runStart = position
            }
            position += length
        }
        if let wasZero = runIsZero { try emit(base, runStart, position, zero: wasZero, offset: offset) }
    }

    private mutating func emit(
        _ base: UnsafeRawPointer, _ start: Int, _ end: Int, zero: Bool, offset: UInt64
    ) throws(BerthError) {
        if zero {
            try skip(at: offset + UInt64(start), length: UInt64(end - start))
        } else {
            try flushZeros()
            try disk.write(base + start, count: end - start, at: offset + UInt64(start))
            bytesWritten += UInt64(end - start)
            report(offset + UInt64(end))
        }
    }

    mutating func finish() throws(BerthError) {
        try flushZeros()
        progress(total, total)
    }

    private mutating func flushZeros() throws(BerthError) {
        guard zeroLength > 0 else { return }
        try disk.zero(at: zeroStart, length: zeroLength)
        zeroLength = 0
    }

    private mutating func report(_ done: UInt64) {
        // Every 1/50 of the disk image, between 1 and 64 MiB: often enough for 5 % progress events and a
        // progress bar, rare enough to cost nothing.
        let step = min(64 << 20, max(1 << 20, total / 50))
        guard done >= reported + step else { return }
        reported = done
        progress(done, total)
    }

    /// Whether `count` bytes are all zero, eight at a time.
    static func isZero(_ pointer: UnsafeRawPointer, count: Int) -> Bool {
        var index = 0
        var accumulated: UInt64 = 0
        while index + 32 <= count {
            accumulated |=
                pointer.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                | pointer.loadUnaligned(fromByteOffset: index + 8, as: UInt64.self)
                | pointer.loadUnaligned(fromByteOffset: index + 16, as: UInt64.self)
                | pointer.loadUnaligned(fromByteOffset: index + 24, as: UInt64.self)
            if accumulated != 0 { return false }
            index += 32
        }
        while index < count {
            if pointer.load(fromByteOffset: index, as: UInt8.self) != 0 { return false }
            index += 1
        }
        return true
    }
}
