import BerthBlocking
import BerthCore
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The embedded catalog: a directory on one host, shared by every worker process on it (DESIGN §1, §9).
///
/// ```
/// root/.lock                       flock(2): shared for reads, exclusive for commits
/// root/images/<id>.json, <id>.data
/// root/volumes/<id>.json, <id>.img
/// root/snapshots/<id>.json, <id>.img
/// ```
///
/// Crash safety: every file is written under a temporary name, fsynced and renamed, and the directory is
/// fsynced; data lands before the record that points at it. A crash can therefore leave only temporary
/// files and data without a record, both invisible to readers and removed by `sweep()`.
///
/// Concurrency: big copies (image data, volume contents) happen before the exclusive lock is taken, into
/// a temporary file only this operation knows; the lock covers just the checks and the renames, so a
/// 20 GiB upload does not stall every boot on the host. Blocking file I/O runs on `CatalogThreads.local`, not
/// on the cooperative pool.
public final class LocalCatalog: Catalog {
    public let root: String
    let layout: CatalogLayout
    let faults: CatalogFaults
    /// Data files already checked against their checksums, with the file identity at that time.
    let verified: VerifiedData
    /// Image records already decoded, with their file's identity (see `readImage`).
    private let imageRecords = Mutex<[CatalogID: (stamp: DataStamp, image: CatalogImage)]>([:])
    private static let cachedRecordLimit = 4096

    /// Largest volume accepted, a sanity bound on a size that arrives from the bus.
    public static let maxVolumeGB = 16384

    public convenience init(root: String) {
        self.init(root: root, faults: CatalogFaults())
    }

    init(root: String, faults: CatalogFaults) {
        let absolute = URL(fileURLWithPath: root).standardizedFileURL.path
        self.root = absolute
        let layout = CatalogLayout(root: absolute)
        self.layout = layout
        self.faults = faults
        self.verified = VerifiedData(stampPath: { layout.imageVerified($0) })
    }

    /// Creates the catalog directories if needed; for a command that sets up a host. Writes do it anyway.
    public func prepare() async throws(CatalogError) {
        try await perform { () throws(CatalogError) in try self.prepareLayout() }
    }

    // MARK: Running operations

    /// Runs blocking file work on the local catalogs' threads and resumes the caller with its result. It runs even
    /// if the caller is cancelled: an operation's steps (stage, commit, clean up) are never skipped halfway.
    func perform<T: Sendable>(_ body: @escaping @Sendable () throws(CatalogError) -> T) async throws(CatalogError) -> T
    {
        try await CatalogThreads.local.runToCompletion(body)
    }

    func prepareLayout() throws(CatalogError) {
        for directory in [layout.images, layout.volumes, layout.snapshots] { try Files.makeDirectory(directory) }
    }

    /// Runs `body` holding the catalog lock. A fresh descriptor per call, so operations in this process
    /// exclude each other exactly as operations in different processes do.
    func withLock<T>(exclusive: Bool, _ body: () throws(CatalogError) -> T) throws(CatalogError) -> T {
        let lock: Descriptor
        if exclusive {
            try prepareLayout()
            lock = try Files.open(layout.lockFile, O_RDONLY | O_CREAT, mode: 0o644, action: "open the catalog lock")
        } else {
            var fd: Int32
            repeat { fd = Glibc.open(layout.lockFile, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
            if fd < 0 {
                let code = errno
                guard code == ENOENT else { throw Files.failure("open the catalog lock", layout.lockFile, code) }
                // Nothing was ever written here: readers need no lock, but a missing root is an operator error.
                var info = stat()
                guard stat(root, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                    throw .unavailable(
                        "catalog directory \(root) does not exist; create it (any write creates the layout) or "
                            + "point Berth at the right catalog directory")
                }
                return try body()
            }
            lock = Descriptor(raw: fd, path: layout.lockFile)
        }
        defer { lock.closeQuietly() }
        _ = try Files.lock(lock, exclusive: exclusive)
        return try body()
    }

    // MARK: Records

    func readRecord<Record: Decodable>(
        _ type: Record.Type, at path: String, id: CatalogID, recordID: (Record) -> String
    )
        throws(CatalogError) -> Record?
    {
        guard let bytes = try Files.readFile(path, limit: RecordCoding.recordLimits.maxBytes) else { return nil }
        switch RecordCoding.decode(type, from: bytes) {
        case .success(let record) where recordID(record) == id.value:
            return record
        case .success(let record):
            throw .unavailable(
                "catalog record \(path) holds id \(recordID(record)), not \(id); the file was renamed or copied by "
                    + "hand. Move it back to its own name or remove it")
        case .failure(let unreadable):
            throw .unavailable(
                "catalog record \(path) cannot be read (\(unreadable.reason)); restore it from a backup or remove it "
                    + "and its data file")
        }
    }

    /// An image record, decoded again only when its file changed: every boot reads its image's record, and a
    /// `stat` is a fraction of a read and a JSON decode. Records are replaced by `rename`, so a changed record is
    /// another inode (or at least another change time) and is read afresh.
    func readImage(_ id: CatalogID) throws(CatalogError) -> CatalogImage? {
        let path = layout.imageRecord(id)
        var info = stat()
        guard stat(path, &info) == 0 else {
            imageRecords.withLock { _ = $0.removeValue(forKey: id) }
            return try readRecord(CatalogImage.self, at: path, id: id, recordID: \.id)
        }
        let stamp = DataStamp(info, checksum: nil)
        if let cached = imageRecords.withLock({ $0[id] }), cached.stamp == stamp { return cached.image }
        // Read after the stat: a record replaced in between is cached under the old stamp and read again next time.
        guard let image = try readRecord(CatalogImage.self, at: path, id: id, recordID: \.id) else { return nil }
        imageRecords.withLock { records in
            if records.count >= Self.cachedRecordLimit { records.removeAll(keepingCapacity: true) }
            records[id] = (stamp, image)
        }
        return image
    }

    func readVolume(_ id: CatalogID) throws(CatalogError) -> CatalogVolume? {
        try readRecord(CatalogVolume.self, at: layout.volumeRecord(id), id: id, recordID: \.id)
    }

    func readSnapshot(_ id: CatalogID) throws(CatalogError) -> VolumeSnapshot? {
        try readRecord(VolumeSnapshot.self, at: layout.snapshotRecord(id), id: id, recordID: \.id)
    }

    func loadImage(_ id: CatalogID) throws(CatalogError) -> CatalogImage {
        guard let image = try readImage(id) else { throw .imageNotFound(id.value) }
        return image
    }

    func loadVolume(_ id: CatalogID) throws(CatalogError) -> CatalogVolume {
        guard let volume = try readVolume(id) else { throw .volumeNotFound(id.value) }
        return volume
    }

    func loadSnapshot(_ id: CatalogID) throws(CatalogError) -> VolumeSnapshot {
        guard let snapshot = try readSnapshot(id) else { throw .snapshotNotFound(id.value) }
        return snapshot
    }

    /// Every readable record in `directory`. A record that cannot be read is left out rather than failing
    /// the whole listing; `sweep()` reports it.
    func listRecords<Record: Decodable>(_ type: Record.Type, in directory: String, recordID: (Record) -> String)
        throws(CatalogError) -> [Record]
    {
        var records: [Record] = []
        for name in try Files.list(directory) {
            guard !name.hasPrefix("."), name.hasSuffix(".json"), let id = CatalogID(String(name.dropLast(5))),
                id.value == String(name.dropLast(5))
            else { continue }
            if let record = try? readRecord(type, at: "\(directory)/\(name)", id: id, recordID: recordID) {
                records.append(record)
            }
        }
        return records
    }

    /// Writes a new record, and the data staged for it, under the exclusive lock. `check` runs first under
    /// the same lock (the id is free, referenced records exist). On any failure nothing of the record stays.
    @discardableResult
    func commitNew(
        record bytes: [UInt8], at recordPath: String, data staged: Descriptor?, at dataPath: String,
        check: () throws(CatalogError) -> Void
    ) throws(CatalogError) -> stat? {
        let directory = (recordPath as NSString).deletingLastPathComponent
        var stagedRecord: Descriptor?
        defer {
            staged?.closeQuietly()
            stagedRecord?.closeQuietly()
        }
        do throws(CatalogError) {
            let recordFile = try Files.stage(bytes, for: recordPath)
            stagedRecord = recordFile
            return try withLock(exclusive: true) { () throws(CatalogError) -> stat? in
                try check()
                try faults.check(.beforeCommit)
                do throws(CatalogError) {
                    // The data's status after its rename (which sets its change time), for its `DataStamp`.
                    var status: stat?
                    if let staged {
                        try Files.rename(staged.path, to: dataPath)
                        status = try Files.status(staged)
                        try Files.syncDirectory(directory)
                        try faults.check(.dataCommitted)
                    }
                    try Files.rename(recordFile.path, to: recordPath)
                    try Files.syncDirectory(directory)
                    return status
                } catch {
                    // Still under the lock, and `check` proved the id new: these names are ours to remove.
                    Files.discard(recordPath)
                    if staged != nil { Files.discard(dataPath) }
                    throw error
                }
            }
        } catch {
            if let staged { Files.discard(staged.path) }
            if let stagedRecord { Files.discard(stagedRecord.path) }
            throw error
        }
    }

    // MARK: Ids from callers

    static func existingID(_ text: String, notFound: (String) -> CatalogError, kind: String) throws(CatalogError)
        -> CatalogID
    {
        guard let id = CatalogID(text) else {
            let base = notFound(CatalogID.quoted(text))
            throw CatalogError(
                kind: base.kind,
                message: "\(kind) id \(CatalogID.quoted(text)) is not a UUID, so no \(kind) has it; \(kind) ids look "
                    + "like 0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90")
        }
        return id
    }

    static func newID(_ text: String?, kind: String) throws(CatalogError) -> CatalogID {
        guard let text else { return .mint() }
        guard let id = CatalogID(text) else {
            throw .invalidRequest(
                "\(kind) id \(CatalogID.quoted(text)) is not a UUID; leave it out to have one minted, or give one "
                    + "such as 0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90")
        }
        return id
    }

    static func alreadyExists(_ kind: String, _ id: CatalogID) -> CatalogError {
        CatalogError(
            kind: .alreadyExists,
            message: "a \(kind) with id \(id) already exists; a repeated request should look it up instead of "
                + "creating it again")
    }

    /// Images whose `block_device_mapping` names the snapshot or volume: the placeholders that need it.
    func imagesReferencing(snapshot: CatalogID? = nil, volume: CatalogID? = nil) throws(CatalogError) -> [CatalogImage]
    {
        try listRecords(CatalogImage.self, in: layout.images, recordID: \.id).filter { image in
            let references = ImageRules.blockDeviceReferences(image.properties)
            return (snapshot.map { references.snapshots.contains($0.value) } ?? false)
                || (volume.map { references.volumes.contains($0.value) } ?? false)
        }.sorted { $0.id < $1.id }
    }

    // MARK: Sweep

    /// What `sweep()` found and did.
    public struct SweepReport: Sendable, Equatable {
        /// Temporary files of writers that are gone (crashed or killed mid-write), removed.
        public var removedTemporaryFiles: [String] = []
        /// Data files without a record (a crash between the data and the record renames), removed.
        public var removedOrphanedData: [String] = []
        /// Records that cannot be read, each with the reason; left for the operator.
        public var unreadableRecords: [String] = []
        /// Records whose data file is missing; left for the operator.
        public var recordsMissingData: [String] = []
    }

    /// `fsck` for the catalog: removes what a crash can leave behind and reports what it cannot repair.
    /// Safe while other workers run: temporary files of live writers are locked and kept.
    public func sweep() async throws(CatalogError) -> SweepReport {
        try await perform { () throws(CatalogError) in
            try self.withLock(exclusive: true) { () throws(CatalogError) in try self.sweepLocked() }
        }
    }

    private func sweepLocked() throws(CatalogError) -> SweepReport {
        var report = SweepReport()
        let kinds: [(directory: String, dataSuffix: String)] = [
            (layout.images, CatalogLayout.imageDataSuffix), (layout.volumes, CatalogLayout.blockDataSuffix),
            (layout.snapshots, CatalogLayout.blockDataSuffix),
        ]
        for (directory, dataSuffix) in kinds {
            let names = try Files.list(directory)
            let present = Set(names)
            for name in names.sorted() {
                let path = "\(directory)/\(name)"
                if Files.isTemporary(name) {
                    if try removeIfAbandoned(path) { report.removedTemporaryFiles.append(path) }
                } else if name.hasSuffix(dataSuffix), let id = CatalogID(String(name.dropLast(dataSuffix.count))),
                    !present.contains("\(id.value).json")
                {
                    try Files.remove(path)
                    report.removedOrphanedData.append(path)
                } else if name.hasSuffix(CatalogLayout.verifiedSuffix),
                    let id = CatalogID(String(name.dropLast(CatalogLayout.verifiedSuffix.count))),
                    !present.contains("\(id.value).json")
                {
                    // The stamp of data that is gone (a delete that died between its steps).
                    try Files.remove(path)
                    report.removedOrphanedData.append(path)
                } else if name.hasSuffix(".json"), let id = CatalogID(String(name.dropLast(5))) {
                    try inspectRecord(path, id: id, directory: directory, dataSuffix: dataSuffix, report: &report)
                }
            }
        }
        if !report.removedTemporaryFiles.isEmpty || !report.removedOrphanedData.isEmpty {
            for directory in kinds.map(\.directory) { try Files.syncDirectory(directory) }
        }
        return report
    }

    /// A temporary file whose writer still lives holds a lock on it; one nobody holds is abandoned.
    private func removeIfAbandoned(_ path: String) throws(CatalogError) -> Bool {
        var fd: Int32
        repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { return false }  // Renamed or removed by its writer meanwhile.
        let descriptor = Descriptor(raw: fd, path: path)
        defer { descriptor.closeQuietly() }
        guard try Files.lock(descriptor, exclusive: true, wait: false) else { return false }
        try Files.remove(path)
        return true
    }

    private func inspectRecord(
        _ path: String, id: CatalogID, directory: String, dataSuffix: String, report: inout SweepReport
    ) throws(CatalogError) {
        let dataPath = "\(directory)/\(id.value)\(dataSuffix)"
        do throws(CatalogError) {
            if directory == layout.images {
                let image = try loadImage(id)
                if image.status == "active" && !image.isPlaceholder && !Files.exists(dataPath) {
                    report.recordsMissingData.append(path)
                }
            } else if directory == layout.volumes {
                _ = try loadVolume(id)
                if !Files.exists(dataPath) { report.recordsMissingData.append(path) }
            } else {
                _ = try loadSnapshot(id)
                if !Files.exists(dataPath) { report.recordsMissingData.append(path) }
            }
        } catch {
            report.unreadableRecords.append("\(path): \(error.message)")
        }
    }
}

/// Where each record and data file lives. Paths are built only from `CatalogID`s.
struct CatalogLayout: Sendable {
    static let imageDataSuffix = ".data"
    static let blockDataSuffix = ".img"
    static let verifiedSuffix = ".verified"

    let root: String
    var lockFile: String { "\(root)/.lock" }
    var images: String { "\(root)/images" }
    var volumes: String { "\(root)/volumes" }
    var snapshots: String { "\(root)/snapshots" }

    func imageRecord(_ id: CatalogID) -> String { "\(images)/\(id.value).json" }
    func imageData(_ id: CatalogID) -> String { "\(images)/\(id.value)\(Self.imageDataSuffix)" }
    /// The stamp of the image data's last verification (`DataStamp`), kept beside the data.
    func imageVerified(_ id: CatalogID) -> String { "\(images)/\(id.value)\(Self.verifiedSuffix)" }
    func volumeRecord(_ id: CatalogID) -> String { "\(volumes)/\(id.value).json" }
    func volumeData(_ id: CatalogID) -> String { "\(volumes)/\(id.value)\(Self.blockDataSuffix)" }
    func snapshotRecord(_ id: CatalogID) -> String { "\(snapshots)/\(id.value).json" }
    func snapshotData(_ id: CatalogID) -> String { "\(snapshots)/\(id.value)\(Self.blockDataSuffix)" }
}

/// Failure injection for tests: makes a named step of a commit fail, to prove nothing half-written stays.
struct CatalogFaults: Sendable {
    enum Step: Sendable, Equatable {
        /// Data copied into its temporary file, before the lock is taken.
        case dataStaged
        /// Under the lock, checks passed, nothing renamed yet.
        case beforeCommit
        /// Data renamed into place, record not yet.
        case dataCommitted
    }

    var failing: @Sendable (Step) -> Bool = { _ in false }

    func check(_ step: Step) throws(CatalogError) {
        if failing(step) { throw .unavailable("injected failure at \(step) (test)") }
    }
}
