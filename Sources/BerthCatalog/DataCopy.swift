import BerthDigest
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Streams data into a catalog file in 1 MiB chunks (bounded memory whatever the image size), hashing on
/// the way when the result becomes an image, and leaving holes where the source is all zeros so a mostly
/// empty 20 GiB volume stays small on disk.
enum DataCopy {
    // Linux values of lseek's whence for sparse files; Glibc's module map only exports them under _GNU_SOURCE.
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    enum Source {
        case descriptor(Descriptor)
        case bytes([UInt8])
    }

    struct Copied: Sendable, Equatable {
        var size: Int64
        var md5: String?
        var sha512: String?
    }

    /// Opens a file an operator named as image data. Not a catalog path, so failures are the request's fault.
    static func openSource(_ path: String) throws(CatalogError) -> Descriptor {
        var fd: Int32
        repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            throw .invalidRequest(
                "cannot read image data file \(path): \(String(cString: strerror(errno))); check the path given "
                    + "as the data file")
        }
        let descriptor = Descriptor(raw: fd, path: path)
        let info = try Files.status(descriptor)
        let type = info.st_mode & S_IFMT
        // A character device such as /dev/zero never ends; a directory or FIFO is a mistake.
        guard type == S_IFREG || type == S_IFBLK else {
            throw .invalidRequest(
                "image data file \(path) is not a regular file or block device; give the path of the image file")
        }
        return descriptor
    }

    static func copy(from source: Source, to destination: Descriptor, hashing: Bool, sparse: Bool)
        throws(CatalogError) -> Copied
    {
        var md5 = MD5Digest()
        var sha512 = SHA512Digest()
        var total: Int64 = 0

        func consume(_ chunk: UnsafeRawBufferPointer) throws(CatalogError) {
            if hashing {
                md5.update(chunk)
                sha512.update(chunk)
            }
            if sparse && isAllZero(chunk) {
                if lseek(destination.raw, off_t(chunk.count), SEEK_CUR) < 0 {
                    throw Files.failure("seek in", destination.path, errno)
                }
            } else {
                try Files.writeAll(destination, chunk)
            }
            total += Int64(chunk.count)
        }

        switch source {
        case .bytes(let bytes):
            try bytes.withUnsafeBytes { all in
                Result { () throws(CatalogError) in
                    var offset = 0
                    while offset < all.count {
                        let end = min(offset + Files.chunkBytes, all.count)
                        try consume(UnsafeRawBufferPointer(rebasing: all[offset..<end]))
                        offset = end
                    }
                }
            }.get()
        case .descriptor(let input):
            if sparse && !hashing, let copied = try copyDataExtents(from: input, to: destination) { return copied }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Files.chunkBytes, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let got = try Files.readFull(input, into: buffer, action: "read")
                if got > 0 { try consume(UnsafeRawBufferPointer(rebasing: buffer[..<got])) }
                if got < buffer.count { break }
            }
        }
        // Holes at the end leave the file short until its length is set.
        if sparse && ftruncate(destination.raw, off_t(total)) != 0 {
            throw Files.failure("set the length of", destination.path, errno)
        }
        return Copied(
            size: total,
            md5: hashing ? md5.finalize() : nil,
            sha512: hashing ? sha512.finalize() : nil)
    }

    /// Copies only the data extents of a sparse regular file (`lseek` with `SEEK_DATA`/`SEEK_HOLE`), so snapshotting a
    /// 100 GiB volume that holds 2 GiB reads 2 GiB. Nil when the file system cannot say where the holes are.
    private static func copyDataExtents(from input: Descriptor, to destination: Descriptor) throws(CatalogError)
        -> Copied?
    {
        let info = try Files.status(input)
        guard info.st_mode & S_IFMT == S_IFREG else { return nil }
        let end = info.st_size
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Files.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        var offset: off_t = 0
        while offset < end {
            let dataStart = lseek(input.raw, offset, seekData)
            if dataStart < 0 {
                if errno == ENXIO { break }  // Only a hole remains.
                if offset == 0 && (errno == EINVAL || errno == EOPNOTSUPP) { return nil }
                throw Files.failure("find data in", input.path, errno)
            }
            let holeStart = lseek(input.raw, dataStart, seekHole)
            guard holeStart >= 0 else { throw Files.failure("find holes in", input.path, errno) }
            var position = dataStart
            while position < holeStart {
                let want = Int(min(off_t(buffer.count), holeStart - position))
                let got = pread(input.raw, buffer.baseAddress!, want, position)
                if got < 0 {
                    if errno == EINTR { continue }
                    throw Files.failure("read", input.path, errno)
                }
                if got == 0 { break }  // Truncated while copying; the length set below still holds.
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<got])
                if !isAllZero(chunk) {
                    if lseek(destination.raw, position, SEEK_SET) < 0 {
                        throw Files.failure("seek in", destination.path, errno)
                    }
                    try Files.writeAll(destination, chunk)
                }
                position += off_t(got)
            }
            offset = holeStart
        }
        if ftruncate(destination.raw, end) != 0 { throw Files.failure("set the length of", destination.path, errno) }
        return Copied(size: Int64(end), md5: nil, sha512: nil)
    }

    static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var offset = 0
        // Word at a time; the tail byte by byte.
        while offset + 8 <= bytes.count {
            if base.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != 0 { return false }
            offset += 8
        }
        while offset < bytes.count {
            if bytes[offset] != 0 { return false }
            offset += 1
        }
        return true
    }

    /// md5 and/or sha512 of a stored file, for verification: only the digests asked for are computed, since
    /// hashing is most of what a verification costs.
    static func digests(of descriptor: Descriptor, md5 wantMD5: Bool = true, sha512 wantSHA512: Bool = true)
        throws(CatalogError) -> (md5: String?, sha512: String?, size: Int64)
    {
        var md5 = MD5Digest()
        var sha512 = SHA512Digest()
        var total: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Files.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let got = try Files.readFull(descriptor, into: buffer, action: "read")
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<got])
            if wantMD5 { md5.update(chunk) }
            if wantSHA512 { sha512.update(chunk) }
            total += Int64(got)
            if got < buffer.count { break }
        }
        return (wantMD5 ? md5.finalize() : nil, wantSHA512 ? sha512.finalize() : nil, total)
    }
}
