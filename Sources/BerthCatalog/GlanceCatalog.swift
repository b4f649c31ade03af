import BerthBlocking
import BerthCore
import BerthJSON
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Images in Glance v2, for a pool across hosts (DESIGN §1, §9); volumes and volume snapshots stay in a
/// local catalog on this host (`volumes`), as Cinder would be a separate service (docs/glance.md).
///
/// Image data reaches the host through `localImageData`: downloaded once into `cacheDirectory/<id>`,
/// hashed while it streams, compared with Glance's `os_hash_value` (and md5 `checksum`) and judged by
/// `ImageInspector` before it is renamed into place, so a reader never sees a partial, unverified or
/// uninspected file. The cache is private to Berth's user (files 0600 in a 0700 directory): images may hold
/// other tenants' data. A per-image `flock` makes concurrent boots on the host, in this process or another,
/// wait for one download instead of racing.
///
/// Placeholders: Glance keeps an image without data `queued`; one with a `block_device_mapping` is still a
/// placeholder (`CatalogImage.isPlaceholder`: size 0 and a mapping) and boots from its volume or snapshot.
public final class GlanceCatalog: Catalog {
    public let endpoint: GlanceEndpoint
    public let cacheDirectory: String
    /// Where volumes and volume snapshots live; placeholders in Glance name their ids.
    public let volumes: LocalCatalog
    let transport: GlanceTransport
    /// Cache files already hashed by this process, with the file identity at that time.
    private let verified: VerifiedData

    /// Images per listing request.
    static let pageSize = 100

    public convenience init(endpoint: GlanceEndpoint, token: String?, cacheDirectory: String, volumes: LocalCatalog) {
        self.init(endpoint: endpoint, token: GlanceToken(token), cacheDirectory: cacheDirectory, volumes: volumes)
    }

    /// `token`: shared with whoever replaces it (the worker, on SIGHUP).
    public init(endpoint: GlanceEndpoint, token: GlanceToken, cacheDirectory: String, volumes: LocalCatalog) {
        self.endpoint = endpoint
        let directory = URL(fileURLWithPath: cacheDirectory).standardizedFileURL.path
        self.cacheDirectory = directory
        // Each cache file's `DataStamp`, so a verification outlives the process that downloaded or hashed it.
        self.verified = VerifiedData(stampPath: { "\(directory)/.\($0.value)\(CatalogLayout.verifiedSuffix)" })
        self.volumes = volumes
        self.transport = GlanceTransport(endpoint: endpoint, token: token)
    }

    /// Runs blocking work on the host cache (hashing, inspecting, renaming) on its own threads, to completion.
    func perform<T: Sendable>(_ body: @escaping @Sendable () throws(CatalogError) -> T) async throws(CatalogError) -> T
    {
        try await CatalogThreads.glanceCache.runToCompletion(body)
    }

    // MARK: Images

    public func image(id: String) async throws(CatalogError) -> CatalogImage {
        try await fetch(try LocalCatalog.existingID(id, notFound: CatalogError.imageNotFound, kind: "image"))
    }

    func fetch(_ id: CatalogID) async throws(CatalogError) -> CatalogImage {
        guard let answer = try await transport.json("GET", endpoint.image(id), operation: .read(imageID: id.value))
        else { throw GlanceRecord.malformed("an empty answer for an image") }
        return try GlanceRecord.image(answer)
    }

    public func images() async throws(CatalogError) -> [CatalogImage] {
        var images: [CatalogImage] = []
        var next: String? = endpoint.images(limit: Self.pageSize)
        var pages = 0
        while let url = next {
            pages += 1
            guard pages <= 10_000 else { throw GlanceRecord.malformed("the image listing does not end") }
            guard let answer = try await transport.json("GET", url, operation: .list) else {
                throw GlanceRecord.malformed("an empty image listing")
            }
            let page = try GlanceRecord.page(answer)
            images += page.images
            next = page.images.isEmpty ? nil : page.next.flatMap(endpoint.next)
        }
        return images
    }

    public func createImage(
        id: String?, name: String, diskFormat: String, containerFormat: String, properties: [String: String],
        data: ImageDataSource?
    ) async throws(CatalogError) -> CatalogImage {
        // The local catalog's rules first, so both catalogs accept and refuse the same images with the same words.
        let id = try LocalCatalog.newID(id, kind: "image")
        try ImageRules.checkName(name, of: "image")
        try ImageRules.checkFormats(disk: diskFormat, container: containerFormat)
        try ImageRules.checkCount(properties.count)
        try await checkReferences(try ImageRules.check(properties))
        let body = try await prepareUpload(data, diskFormat: diskFormat)
        _ = try await transport.json(
            "POST", endpoint.createImage,
            body: GlanceRecord.createBody(
                id: id, name: name, diskFormat: diskFormat, containerFormat: containerFormat, properties: properties),
            operation: .create(imageID: id.value), expect: [201])
        if let body {
            do throws(CatalogError) {
                try await transport.upload(endpoint.file(id), body: body, operation: .upload(imageID: id.value))
            } catch {
                // Nothing half-made: an image whose data did not land is removed again (a snapshot stores nothing).
                _ = try? await transport.json(
                    "DELETE", endpoint.image(id), operation: .delete(imageID: id.value), expect: [204, 404])
                throw error
            }
        }
        return try await fetch(id)
    }

    public func uploadImageData(id: String, data: ImageDataSource) async throws(CatalogError) -> CatalogImage {
        let id = try LocalCatalog.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
        let image = try await fetch(id)
        guard image.status == "queued", !image.isPlaceholder else {
            throw CatalogError.invalidRequest(
                "image \(image.id) is \(image.isPlaceholder ? "a placeholder" : image.status), not queued for data: "
                    + "it already has data or boots from a volume. Create a new image for new data")
        }
        guard let body = try await prepareUpload(data, diskFormat: image.diskFormat) else { return image }
        try await transport.upload(endpoint.file(id), body: body, operation: .upload(imageID: id.value))
        return try await fetch(id)
    }

    public func updateImage(id: String, setProperties: [String: String], removeProperties: Set<String>) async throws(CatalogError)
        -> CatalogImage
    {
        let id = try LocalCatalog.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
        if let both = setProperties.keys.sorted().first(where: removeProperties.contains) {
            throw CatalogError.invalidRequest(
                "property \(both) is both set and removed in one update; do one or the other")
        }
        let references = try ImageRules.check(setProperties)
        let current = try await fetch(id)
        var after = current.properties
        for key in removeProperties { after[key] = nil }
        after.merge(setProperties) { _, new in new }
        try ImageRules.checkCount(after.count)
        try await checkReferences(references)
        let patch = GlanceRecord.patchBody(current: current.properties, set: setProperties, remove: removeProperties)
        guard patch.arrayValue?.isEmpty == false else { return current }
        guard
            let answer = try await transport.json(
                "PATCH", endpoint.image(id), body: patch, contentType: "application/openstack-images-v2.1-json-patch",
                operation: .update(imageID: id.value))
        else { throw GlanceRecord.malformed("an empty answer to an update") }
        return try GlanceRecord.image(answer)
    }

    public func deleteImage(id: String) async throws(CatalogError) {
        let id = try LocalCatalog.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
        _ = try await transport.json("DELETE", endpoint.image(id), operation: .delete(imageID: id.value), expect: [204])
        let path = cachePath(id)
        _ = try? await perform { () throws(CatalogError) in
            Files.discard(path)
            self.verified.withdraw(id)
        }
    }

    public func localImageData(id: String) async throws(CatalogError) -> String {
        let id = try LocalCatalog.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
        return try await cachedData(try await fetch(id), always: false)
    }

    public func verifyImageData(id: String) async throws(CatalogError) {
        let id = try LocalCatalog.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
        _ = try await cachedData(try await fetch(id), always: true)
    }

    // MARK: The host cache

    func cachePath(_ id: CatalogID) -> String { "\(cacheDirectory)/\(id.value)" }

    /// The cache file of `image`, downloaded (and verified while downloading) if this host has none, else
    /// hashed once per process (or every time with `always`) while the file is unchanged.
    private func cachedData(_ image: CatalogImage, always: Bool) async throws(CatalogError) -> String {
        try LocalCatalog.requireData(image)
        guard let name = image.osHashAlgo, let algorithm = GlanceHash.Algorithm(name), image.osHashValue != nil else {
            throw .invalidImage(
                "image \(image.id) has no os_hash_value Berth can check (os_hash_algo "
                    + "\(image.osHashAlgo ?? "none")); Berth boots only verified data. Re-upload it to a Glance that "
                    + "records sha512 (its hashing_algorithm default)")
        }
        let id = CatalogID(image.id)!
        let path = cachePath(id)
        let lock = try await lockImage(id)
        defer { lock.closeQuietly() }  // Closing the descriptor drops the flock.
        if let existing = try await perform({ () throws(CatalogError) -> Handoff? in
            var fd: Int32
            repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
            if fd < 0 {
                guard errno == ENOENT else { throw Files.failure("open", path, errno) }
                return nil
            }
            return Handoff(Descriptor(raw: fd, path: path))
        })?.descriptor {
            try await checkCached(existing, id: id, image: image, algorithm: algorithm, always: always)
            return path
        }
        try await download(image, id: id, algorithm: algorithm, to: path)
        return path
    }

    private func checkCached(
        _ file: Descriptor, id: CatalogID, image: CatalogImage, algorithm: GlanceHash.Algorithm, always: Bool
    ) async throws(CatalogError) {
        defer { file.closeQuietly() }
        let stamp = DataStamp(try Files.status(file), checksum: image.osHashValue)
        if !always, verified.isVerified(id, stamp) { return }
        let handoff = Handoff(file)
        let result = try await perform { () throws(CatalogError) in
            try GlanceHash.file(handoff.descriptor, algorithm: algorithm)
        }
        if let mismatch = GlanceHash.mismatch(result, image: image) {
            // The cached copy is wrong (changed on disk, or the image in Glance was replaced): drop it, so the
            // next boot downloads it again instead of failing forever.
            verified.withdraw(id)
            Files.discard(file.path)
            throw .invalidImage(
                "the cached data of image \(image.id) (\(file.path)) does not match Glance's record (\(mismatch)); "
                    + "it was removed and the next boot downloads it again")
        }
        // A stamp vouches for the hash and the inspection together: a file cached before the inspector existed
        // is judged here once, as a download is.
        do throws(CatalogError) {
            let path = file.path
            try await perform { () throws(CatalogError) in try self.inspect(path, image: image) }
        } catch {
            verified.withdraw(id)
            Files.discard(file.path)
            throw error
        }
        verified.record(id, stamp)
    }

    private func download(_ image: CatalogImage, id: CatalogID, algorithm: GlanceHash.Algorithm, to path: String)
        async throws(CatalogError)
    {
        let temporary = try await perform { () throws(CatalogError) in
            try Files.makeDirectory(self.cacheDirectory, private: true)
            return Handoff(try Files.createTemporary(for: path, mode: 0o600))
        }.descriptor
        defer { temporary.closeQuietly() }
        do throws(CatalogError) {
            let result = try await transport.download(
                endpoint.file(id), into: temporary, expectedSize: image.size, algorithm: algorithm,
                operation: .download(imageID: id.value))
            if let mismatch = GlanceHash.mismatch(result, image: image) {
                throw .invalidImage(
                    "the data of image \(id) downloaded from Glance at \(endpoint) does not match the image's "
                        + "checksum (\(mismatch)): the data in Glance's store is corrupt or was changed. Nothing was "
                        + "cached; re-upload the image to Glance")
            }
            let handoff = Handoff(temporary)
            try await perform { () throws(CatalogError) in
                let temporary = handoff.descriptor
                try self.inspect(temporary.path, image: image)
                try Files.sync(temporary)
                try Files.rename(temporary.path, to: path)
                try Files.syncDirectory(self.cacheDirectory)
            }
            // Hashed while it arrived: verified, here and for later processes.
            verified.record(id, DataStamp(try Files.status(temporary), checksum: image.osHashValue))
        } catch {
            Files.discard(temporary.path)
            throw error
        }
    }

    /// `ImageInspector`'s verdict on data about to be cached or handed out, in the words of a refused download.
    private func inspect(_ path: String, image: CatalogImage) throws(CatalogError) {
        do throws(CatalogError) {
            _ = try ImageDataInspection.inspect(path: path, declared: image.diskFormat)
        } catch  where error.kind == .invalidImage {
            throw .invalidImage(
                "image \(image.id) from Glance at \(endpoint) cannot be used and no copy of it is kept on this host: "
                    + error.message)
        }
    }

    /// An exclusive `flock` on `cacheDirectory/.<id>.lock`, waited for on `CatalogThreads.cacheLocks`: the holder
    /// finishes its download on the cache's threads, which waiters must therefore not fill.
    private func lockImage(_ id: CatalogID) async throws(CatalogError) -> Descriptor {
        let path = "\(cacheDirectory)/.\(id.value).lock"
        return try await CatalogThreads.cacheLocks.runToCompletion { () throws(CatalogError) in
            try Files.makeDirectory(self.cacheDirectory, private: true)
            let descriptor = try Files.open(path, O_RDONLY | O_CREAT, mode: 0o600, action: "open the cache lock")
            _ = try Files.lock(descriptor, exclusive: true)
            return Handoff(descriptor)
        }.descriptor
    }

    // MARK: Helpers

    /// The request body for image data, inspected (as the local catalog does) before anything is created in
    /// Glance: a snapshot or upload that QEMU must not open never reaches the catalog.
    private func prepareUpload(_ data: ImageDataSource?, diskFormat: String) async throws(CatalogError)
        -> GlanceTransport.UploadBody?
    {
        switch data {
        case nil: return nil
        case .bytes(let bytes):
            try await perform { () throws(CatalogError) in
                // The inspector reads files: the bytes go to a private temporary file for it, then away.
                try Files.makeDirectory(self.cacheDirectory, private: true)
                let staged = try Files.stage(bytes, for: "\(self.cacheDirectory)/upload")
                defer {
                    staged.closeQuietly()
                    Files.discard(staged.path)
                }
                _ = try ImageDataInspection.inspect(path: staged.path, declared: diskFormat)
            }
            return .bytes(Data(bytes))
        case .file(let path):
            return try await perform { () throws(CatalogError) in
                let descriptor = try DataCopy.openSource(path)
                defer { descriptor.closeQuietly() }
                let end = lseek(descriptor.raw, 0, SEEK_END)
                guard end >= 0 else { throw Files.failure("find the size of", path, errno) }
                _ = try ImageDataInspection.inspect(path: path, declared: diskFormat)
                return .file(URL(fileURLWithPath: path), size: Int64(end))
            }
        }
    }

    /// Kernels and ramdisks must be Glance images of the right format; snapshots and volumes local records.
    private func checkReferences(_ references: [ImageRules.Reference]) async throws(CatalogError) {
        for reference in references {
            let location = reference.location
            let id = reference.id
            switch reference.target {
            case .kernel, .ramdisk:
                let image: CatalogImage
                do throws(CatalogError) {
                    image = try await fetch(id)
                } catch  where error.kind == .imageNotFound {
                    throw reference.missingBootFile(in: "Glance")
                }
                try reference.checkBootFile(image)
            case .snapshot:
                do throws(CatalogError) {
                    _ = try await volumes.snapshot(id: id.value)
                } catch  where error.kind == .snapshotNotFound {
                    throw .invalidProperty(
                        "\(location) names volume snapshot \(id), which is not in this host's volume catalog "
                            + "(\(volumes.root)); snapshot the volume first and use the snapshot's id")
                }
            case .volume:
                do throws(CatalogError) {
                    _ = try await volumes.volume(id: id.value)
                } catch  where error.kind == .volumeNotFound {
                    throw .invalidProperty(
                        "\(location) names volume \(id), which is not in this host's volume catalog "
                            + "(\(volumes.root)); use the id of an existing volume")
                }
            }
        }
    }

    /// Placeholders in Glance that name the volume or snapshot: the local catalog cannot see them.
    private func placeholdersReferencing(
        volume: String? = nil, snapshot: String? = nil
    ) async throws(CatalogError) -> [CatalogImage] {
        try await images().filter { image in
            let references = ImageRules.blockDeviceReferences(image.properties)
            return (volume.map { references.volumes.contains($0.lowercased()) } ?? false)
                || (snapshot.map { references.snapshots.contains($0.lowercased()) } ?? false)
        }
    }

    // MARK: Volumes and snapshots: the local catalog

    public func volume(id: String) async throws(CatalogError) -> CatalogVolume { try await volumes.volume(id: id) }
    public func volumes() async throws(CatalogError) -> [CatalogVolume] { try await volumes.volumes() }

    public func createVolume(
        id: String?, name: String, sizeGB: Int, fromImage: String?, fromSnapshot: String?, bootable: Bool
    ) async throws(CatalogError) -> CatalogVolume {
        guard let fromImage else {
            return try await volumes.createVolume(
                id: id, name: name, sizeGB: sizeGB, fromImage: nil, fromSnapshot: fromSnapshot, bootable: bootable)
        }
        if fromSnapshot != nil {
            throw CatalogError.invalidRequest(
                "a volume is made from an image or from a snapshot, not both; give one source")
        }
        // The image's data comes through the host cache, verified, then the local catalog copies it.
        let image = try await image(id: fromImage)
        let path = try await localImageData(id: image.id)
        return try await volumes.createVolume(
            id: id, name: name, sizeGB: sizeGB, imageSource: .external(image, dataPath: path), fromSnapshot: nil,
            bootable: bootable)
    }

    public func deleteVolume(id: String, force: Bool) async throws(CatalogError) {
        if !force {
            let users = try await placeholdersReferencing(volume: id)
            if !users.isEmpty {
                throw CatalogError.inUse(
                    "volume \(id) is named by the block_device_mapping of \(LocalCatalog.describe(users)) in Glance; "
                        + "delete those images first, or force the delete (booting them will then fail)")
            }
        }
        try await volumes.deleteVolume(id: id, force: force)
    }

    public func volumeDataPath(id: String) async throws(CatalogError) -> String { try await volumes.volumeDataPath(id: id) }

    public func snapshotVolume(id volumeID: String, snapshotID: String?, name: String) async throws(CatalogError) -> VolumeSnapshot {
        try await volumes.snapshotVolume(id: volumeID, snapshotID: snapshotID, name: name)
    }

    public func snapshot(id: String) async throws(CatalogError) -> VolumeSnapshot { try await volumes.snapshot(id: id) }
    public func snapshots() async throws(CatalogError) -> [VolumeSnapshot] { try await volumes.snapshots() }

    public func deleteSnapshot(id: String, force: Bool) async throws(CatalogError) {
        if !force {
            let users = try await placeholdersReferencing(snapshot: id)
            if !users.isEmpty {
                throw CatalogError.inUse(
                    "volume snapshot \(id) is named by the block_device_mapping of \(LocalCatalog.describe(users)) in "
                        + "Glance; delete those images first, or force the delete (booting them will then fail)")
            }
        }
        try await volumes.deleteSnapshot(id: id, force: force)
    }
}

/// A descriptor handed from one step of an operation to the next across the catalog's threads: one owner at a
/// time, never used by two threads at once.
struct Handoff: @unchecked Sendable {
    let descriptor: Descriptor

    init(_ descriptor: Descriptor) { self.descriptor = descriptor }
}
