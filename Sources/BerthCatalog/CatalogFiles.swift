import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An open file descriptor owned by one operation; closed when the operation lets go of it.
final class Descriptor {
    let raw: Int32
    let path: String
    private var isOpen = true

    init(raw: Int32, path: String) {
        self.raw = raw
        self.path = path
    }

    deinit { closeQuietly() }

    /// Closes without reporting: for descriptors only read from, or on a path that is failing anyway.
    func closeQuietly() {
        guard isOpen else { return }
        isOpen = false
        _ = Glibc.close(raw)
    }
}

/// The POSIX calls the catalog makes, each turning errno into a `CatalogError` an operator can act on.
enum Files {
    static let chunkBytes = 1 << 20

    static func failure(_ action: String, _ path: String, _ code: Int32) -> CatalogError {
        let reason = String(cString: strerror(code))
        let advice: String
        switch code {
        case EROFS:
            advice =
                "the file system holding the catalog is mounted read-only; remount it read-write or point "
                + "Berth at a writable catalog directory"
        case EACCES, EPERM:
            advice =
                "this process (uid \(getuid())) may not use that path; fix the directory's owner and mode or "
                + "run Berth as its owner"
        case ENOSPC, EDQUOT:
            advice = "the file system holding the catalog is full (or over quota); free space, then retry"
        case ENOTDIR, ENOENT:
            advice = "the catalog path does not exist or is not a directory; check the catalog path Berth is given"
        case EIO:
            advice = "the disk reported an I/O error; check the kernel log (dmesg)"
        default:
            advice = "check the catalog directory and retry"
        }
        return .unavailable("could not \(action) \(path): \(reason); \(advice)")
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644, action: String) throws(CatalogError)
        -> Descriptor
    {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return Descriptor(raw: fd, path: path) }
            if errno != EINTR { throw failure(action, path, errno) }
        }
    }

    /// `mkdir -p`, fsyncing each parent it adds to, so a new catalog survives a crash right after creation.
    /// `private` makes the last directory 0700 (parents are 0755), an existing one included.
    static func makeDirectory(_ path: String, private: Bool = false) throws(CatalogError) {
        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { throw failure("use", path, ENOTDIR) }
            if `private` && info.st_mode & 0o077 != 0 && chmod(path, 0o700) != 0 {
                throw failure("make private (chmod 700)", path, errno)
            }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectory(parent) }
        if mkdir(path, `private` ? 0o700 : 0o755) != 0 && errno != EEXIST {
            throw failure("create directory", path, errno)
        }
        if !parent.isEmpty { try syncDirectory(parent) }
    }

    /// Makes a rename or unlink in `directory` durable; without it a crash can undo a committed record.
    static func syncDirectory(_ directory: String) throws(CatalogError) {
        let descriptor = try open(directory, O_RDONLY | O_DIRECTORY, action: "open directory")
        if fsync(descriptor.raw) != 0 && errno != EINVAL { throw failure("sync directory", directory, errno) }
    }

    static func sync(_ descriptor: Descriptor) throws(CatalogError) {
        if fsync(descriptor.raw) != 0 { throw failure("sync", descriptor.path, errno) }
    }

    static func writeAll(_ descriptor: Descriptor, _ bytes: UnsafeRawBufferPointer) throws(CatalogError) {
        var done = 0
        while done < bytes.count {
            let written = Glibc.write(descriptor.raw, bytes.baseAddress! + done, bytes.count - done)
            if written < 0 {
                if errno == EINTR { continue }
                throw failure("write", descriptor.path, errno)
            }
            done += written
        }
    }

    /// Fills `buffer` as far as the data goes; fewer bytes only at the end of the data.
    static func readFull(_ descriptor: Descriptor, into buffer: UnsafeMutableRawBufferPointer, action: String)
        throws(CatalogError) -> Int
    {
        var filled = 0
        while filled < buffer.count {
            let got = Glibc.read(descriptor.raw, buffer.baseAddress! + filled, buffer.count - filled)
            if got < 0 {
                if errno == EINTR { continue }
                throw failure(action, descriptor.path, errno)
            }
            if got == 0 { break }
            filled += got
        }
        return filled
    }

    /// The whole file, or nil when it does not exist.
    static func readFile(_ path: String, limit: Int) throws(CatalogError) -> [UInt8]? {
        var fd: Int32
        repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw failure("open", path, errno)
        }
        let descriptor = Descriptor(raw: fd, path: path)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            // `withUnsafeMutableBytes` rethrows untyped; carrying a Result keeps the error a CatalogError.
            let got = try chunk.withUnsafeMutableBytes { buffer in
                Result { () throws(CatalogError) -> Int in try readFull(descriptor, into: buffer, action: "read") }
            }.get()
            bytes += chunk[..<got]
            guard bytes.count <= limit else {
                throw .unavailable("\(path) is larger than \(limit) bytes, which no catalog record can be; remove it")
            }
            if got < chunk.count { return bytes }
        }
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func rename(_ from: String, to: String) throws(CatalogError) {
        if Glibc.rename(from, to) != 0 { throw failure("rename \(from) to", to, errno) }
    }

    /// Removes a file; a file that is already gone is what the caller wanted.
    static func remove(_ path: String) throws(CatalogError) {
        if unlink(path) != 0 && errno != ENOENT { throw failure("remove", path, errno) }
    }

    /// Best-effort cleanup on a path that is failing anyway; the original error is the one to report.
    static func discard(_ path: String) { _ = unlink(path) }

    /// Entry names of a directory, or none when it does not exist yet.
    static func list(_ directory: String) throws(CatalogError) -> [String] {
        guard let stream = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw failure("list", directory, errno)
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func status(_ descriptor: Descriptor) throws(CatalogError) -> stat {
        var info = stat()
        if fstat(descriptor.raw, &info) != 0 { throw failure("inspect", descriptor.path, errno) }
        return info
    }

    /// `flock(2)`: held per open file description, so each operation opening its own descriptor excludes
    /// other operations in this process as well as other processes.
    static func lock(_ descriptor: Descriptor, exclusive: Bool, wait: Bool = true) throws(CatalogError) -> Bool {
        let operation = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)
        while flock(descriptor.raw, operation) != 0 {
            if errno == EINTR { continue }
            if errno == EWOULDBLOCK && !wait { return false }
            throw failure("lock", descriptor.path, errno)
        }
        return true
    }

    // MARK: Temporary files

    static let temporaryMarker = ".tmp-"

    /// A temporary sibling of `path`: hidden, in the same directory (so the final rename is atomic) and
    /// unique across processes.
    static func temporaryPath(for path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        return "\(directory)/.\(name)\(temporaryMarker)\(UUID().uuidString.lowercased())"
    }

    static func isTemporary(_ name: String) -> Bool { name.hasPrefix(".") && name.contains(temporaryMarker) }

    /// Creates a temporary file and locks it for as long as the descriptor lives, which is how `sweep()`
    /// tells the temporary file of a live writer from one left by a crash.
    static func createTemporary(for path: String, mode: mode_t = 0o644) throws(CatalogError) -> Descriptor {
        let descriptor = try open(
            temporaryPath(for: path), O_WRONLY | O_CREAT | O_EXCL, mode: mode, action: "create temporary file")
        do throws(CatalogError) {
            _ = try lock(descriptor, exclusive: true)
        } catch {
            discard(descriptor.path)
            throw error
        }
        return descriptor
    }

    /// A temporary sibling of `path` holding `bytes`, fsynced: ready to be renamed into place.
    static func stage(_ bytes: [UInt8], for path: String) throws(CatalogError) -> Descriptor {
        let temporary = try createTemporary(for: path)
        do throws(CatalogError) {
            try bytes.withUnsafeBytes { buffer in
                Result { () throws(CatalogError) in try writeAll(temporary, buffer) }
            }.get()
            try sync(temporary)
        } catch {
            discard(temporary.path)
            throw error
        }
        return temporary
    }

    /// Replaces `path` with `bytes` so that readers see the old file or the new one, never a part:
    /// temporary file, fsync, rename, fsync of the directory. The rename is the commit: a failure after
    /// it (a directory fsync error) is reported, but the new content is what readers see.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(CatalogError) {
        let temporary = try stage(bytes, for: path)
        defer { temporary.closeQuietly() }
        do throws(CatalogError) {
            try rename(temporary.path, to: path)
        } catch {
            discard(temporary.path)
            throw error
        }
        try syncDirectory((path as NSString).deletingLastPathComponent)
    }
}
