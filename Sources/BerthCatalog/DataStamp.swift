import Glibc
import Synchronization

/// A data file's identity when its content was verified against a checksum: device, inode, size, and the
/// modification and change times to the nanosecond. Any write, truncation, replacement or `touch` changes one
/// of them (the change time cannot be set by a user at all), so an equal stamp means the same, unchanged file
/// and the content need not be hashed again; anything else means verifying again.
///
/// Stamps are kept in memory and on disk beside the data (`<id>.verified`), so a verification outlives the
/// process that did it: the catalog verifies image data when it arrives (an import, an upload, a Glance
/// download, all hashed while copying) and the first boot or deploy of a fresh process does not read the whole
/// image again. This is the trust Nova gives its image cache; unlike Nova, a file changed in place is noticed.
/// What a stamp cannot notice is a change that leaves all five values alone: a disk corrupting blocks under the
/// file system, or a writer within the same clock tick as the stamp on a kernel with coarse file times
/// (Linux ≥ 6.13 gives a file a fine-grained change time once its stamp was read, which the catalog does as
/// it stamps). `verifyImageData` (`berth images verify`) always hashes.
struct DataStamp: Sendable, Equatable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: timespec
    var changed: timespec
    var checksum: String?

    init(_ info: stat, checksum: String?) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = info.st_mtim
        changed = info.st_ctim
        self.checksum = checksum
    }

    static func == (lhs: DataStamp, rhs: DataStamp) -> Bool {
        lhs.device == rhs.device && lhs.inode == rhs.inode && lhs.size == rhs.size
            && lhs.modified.tv_sec == rhs.modified.tv_sec && lhs.modified.tv_nsec == rhs.modified.tv_nsec
            && lhs.changed.tv_sec == rhs.changed.tv_sec && lhs.changed.tv_nsec == rhs.changed.tv_nsec
            && lhs.checksum == rhs.checksum
    }

    // MARK: On disk

    /// Version 2: the data was hashed and judged by `ImageInspector`. A version 1 stamp (hashed only) is not
    /// trusted, so data verified before the inspector existed is hashed and inspected once more.
    private static let magic = "berth-verified-2"
    /// A stamp line is under 300 bytes; anything longer is not one.
    private static let maximumBytes = 1024

    /// One line: `berth-verified-2 <dev> <ino> <size> <mtime s>.<ns> <ctime s>.<ns> <checksum or ->`.
    var line: String {
        "\(Self.magic) \(device) \(inode) \(size) \(modified.tv_sec).\(modified.tv_nsec) "
            + "\(changed.tv_sec).\(changed.tv_nsec) \(checksum ?? "-")\n"
    }

    init?(line: String) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 7, fields[0] == Self.magic, fields[6].last == "\n",
            let device = UInt64(fields[1]), let inode = UInt64(fields[2]), let size = Int64(fields[3]),
            let modified = Self.time(fields[4]), let changed = Self.time(fields[5])
        else { return nil }
        let checksum = fields[6].dropLast()
        guard !checksum.isEmpty, checksum.allSatisfy({ $0.isHexDigit || $0 == "-" }) else { return nil }
        self.device = device
        self.inode = inode
        self.size = size
        self.modified = modified
        self.changed = changed
        self.checksum = checksum == "-" ? nil : String(checksum)
    }

    private static func time(_ text: Substring) -> timespec? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let seconds = Int(parts[0]), let nanoseconds = Int(parts[1]),
            (0..<1_000_000_000).contains(nanoseconds)
        else { return nil }
        return timespec(tv_sec: seconds, tv_nsec: nanoseconds)
    }

    /// The stamp stored at `path`; nil when there is none or it cannot be read or parsed (then the data is
    /// simply verified again).
    static func load(from path: String) -> DataStamp? {
        guard let bytes = try? Files.readFile(path, limit: maximumBytes) else { return nil }
        return DataStamp(line: String(decoding: bytes, as: UTF8.self))
    }

    /// Stores the stamp; best effort: a catalog the worker cannot write (read-only, full) only means hashing
    /// again in the next process, so a failure is not an error.
    func save(to path: String) {
        try? Files.writeAtomically(Array(line.utf8), to: path)
    }
}

/// Which image data files are verified, for both catalogs: in memory for this process, and as a `DataStamp`
/// file beside each (`stampPath`) for the processes after it.
final class VerifiedData: Sendable {
    private let stamps = Mutex<[CatalogID: DataStamp]>([:])
    private let stampPath: @Sendable (CatalogID) -> String

    init(stampPath: @escaping @Sendable (CatalogID) -> String) {
        self.stampPath = stampPath
    }

    /// Whether the file as it is now (`stamp`) was verified, by this process or an earlier one.
    func isVerified(_ id: CatalogID, _ stamp: DataStamp) -> Bool {
        if stamps.withLock({ $0[id] == stamp }) { return true }
        guard DataStamp.load(from: stampPath(id)) == stamp else { return false }
        stamps.withLock { $0[id] = stamp }
        return true
    }

    /// The file as it is now matches its checksum (hashed while it arrived, or just now).
    func record(_ id: CatalogID, _ stamp: DataStamp) {
        stamps.withLock { $0[id] = stamp }
        stamp.save(to: stampPath(id))
    }

    /// The data is gone or does not match: nothing vouches for it any more.
    func withdraw(_ id: CatalogID) {
        stamps.withLock { _ = $0.removeValue(forKey: id) }
        Files.discard(stampPath(id))
    }
}
