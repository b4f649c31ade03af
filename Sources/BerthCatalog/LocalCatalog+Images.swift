import BerthCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension LocalCatalog {
    public func image(id: String) async throws(CatalogError) -> CatalogImage {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
            return try self.withLock(exclusive: false) { () throws(CatalogError) in try self.loadImage(id) }
        }
    }

    public func images() async throws(CatalogError) -> [CatalogImage] {
        try await perform { () throws(CatalogError) in
            try self.withLock(exclusive: false) { () throws(CatalogError) in
                try self.listRecords(CatalogImage.self, in: self.layout.images, recordID: \.id)
            }.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        }
    }

    public func createImage(
        id: String?, name: String, diskFormat: String, containerFormat: String, properties: [String: String],
        data: ImageDataSource?
    ) async throws(CatalogError) -> CatalogImage {
        try await perform { () throws(CatalogError) in
            let id = try Self.newID(id, kind: "image")
            try ImageRules.checkName(name, of: "image")
            try ImageRules.checkFormats(disk: diskFormat, container: containerFormat)
            try ImageRules.checkCount(properties.count)
            let references = try ImageRules.check(properties)
            let now = RecordCoding.now()
            var image = CatalogImage(
                id: id.value, name: name, diskFormat: diskFormat, containerFormat: containerFormat,
                status: "queued", properties: properties, createdAt: now, updatedAt: now)
            try self.prepareLayout()
            var staged: StagedImageData?
            if let data {
                staged = try self.stageImageData(data, diskFormat: diskFormat, for: self.layout.imageData(id))
                staged!.apply(to: &image)
            } else if image.isPlaceholder {
                // Content-free placeholder for a volume-backed image (DESIGN §5): usable as it is.
                image.status = "active"
            }
            do throws(CatalogError) {
                let status = try self.commitNew(
                    record: try RecordCoding.encode(image), at: self.layout.imageRecord(id), data: staged?.file,
                    at: self.layout.imageData(id)
                ) { () throws(CatalogError) in
                    guard !Files.exists(self.layout.imageRecord(id)) else { throw Self.alreadyExists("image", id) }
                    try self.checkReferences(references)
                }
                // Hashed while copied in: verified now, not again at the first boot or deploy.
                if let status { self.verified.record(id, Self.stamp(status, of: image)) }
            } catch {
                if let staged { Files.discard(staged.file.path) }
                throw error
            }
            return image
        }
    }

    public func uploadImageData(id: String, data: ImageDataSource) async throws(CatalogError) -> CatalogImage {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
            let queued = try self.withLock(exclusive: false) { () throws(CatalogError) in try self.loadImage(id) }
            try Self.requireQueued(queued)
            let staged = try self.stageImageData(data, diskFormat: queued.diskFormat, for: self.layout.imageData(id))
            defer { staged.file.closeQuietly() }
            do throws(CatalogError) {
                return try self.withLock(exclusive: true) { () throws(CatalogError) in
                    // Checked again under the lock: another upload may have won the race.
                    var image = try self.loadImage(id)
                    try Self.requireQueued(image)
                    try self.faults.check(.beforeCommit)
                    staged.apply(to: &image)
                    image.updatedAt = RecordCoding.now()
                    try Files.rename(staged.file.path, to: self.layout.imageData(id))
                    do throws(CatalogError) {
                        let status = try Files.status(staged.file)
                        try Files.syncDirectory(self.layout.images)
                        try self.faults.check(.dataCommitted)
                        try Files.writeAtomically(try RecordCoding.encode(image), to: self.layout.imageRecord(id))
                        self.verified.record(id, Self.stamp(status, of: image))
                    } catch {
                        // The queued record does not point at data; unless the new record landed, drop the data.
                        if (try? self.loadImage(id))?.status == "queued" { Files.discard(self.layout.imageData(id)) }
                        throw error
                    }
                    return image
                }
            } catch {
                Files.discard(staged.file.path)
                throw error
            }
        }
    }

    public func updateImage(id: String, setProperties: [String: String], removeProperties: Set<String>) async throws(CatalogError)
        -> CatalogImage
    {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
            if let both = setProperties.keys.sorted().first(where: removeProperties.contains) {
                throw .invalidRequest("property \(both) is both set and removed in one update; do one or the other")
            }
            let references = try ImageRules.check(setProperties)
            return try self.withLock(exclusive: true) { () throws(CatalogError) in
                var image = try self.loadImage(id)
                for key in removeProperties { image.properties[key] = nil }
                image.properties.merge(setProperties) { _, new in new }
                try ImageRules.checkCount(image.properties.count)
                try self.checkReferences(references)
                image.updatedAt = RecordCoding.now()
                try Files.writeAtomically(try RecordCoding.encode(image), to: self.layout.imageRecord(id))
                return image
            }
        }
    }

    public func deleteImage(id: String) async throws(CatalogError) {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.imageNotFound, kind: "image")
            try self.withLock(exclusive: true) { () throws(CatalogError) in
                _ = try self.loadImage(id)
                // Record first: without it the data is an orphan nobody reads, and `sweep()` removes it if
                // this process dies before the next line.
                try Files.remove(self.layout.imageRecord(id))
                try Files.syncDirectory(self.layout.images)
                try Files.remove(self.layout.imageData(id))
                self.verified.withdraw(id)
            }
        }
    }

    public func localImageData(id: String) async throws(CatalogError) -> String {
        try await perform { () throws(CatalogError) in try self.checkedImageData(id, always: false) }
    }

    public func verifyImageData(id: String) async throws(CatalogError) {
        _ = try await perform { () throws(CatalogError) in try self.checkedImageData(id, always: true) }
    }

    // MARK: Helpers

    /// The data path of an image, its content compared with the stored digests unless this process already
    /// did so for the same, unchanged file. The file is opened under the lock and hashed outside it; a
    /// delete meanwhile unlinks the name but not the open file, so the hash is of the right bytes.
    private func checkedImageData(_ text: String, always: Bool) throws(CatalogError) -> String {
        let id = try Self.existingID(text, notFound: CatalogError.imageNotFound, kind: "image")
        let path = layout.imageData(id)
        let (image, data) = try withLock(exclusive: false) { () throws(CatalogError) in
            let image = try loadImage(id)
            try Self.requireData(image)
            var fd: Int32
            repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
            guard fd >= 0 else {
                if errno == ENOENT {
                    throw .invalidImage(
                        "the data file of image \(id) (\(path)) is missing; restore it from a backup or delete the "
                            + "image and upload it again")
                }
                throw Files.failure("open", path, errno)
            }
            return (image, Descriptor(raw: fd, path: path))
        }
        defer { data.closeQuietly() }
        let stamp = Self.stamp(try Files.status(data), of: image)
        // Verified by this process, an earlier one or the import, and unchanged since.
        if !always, verified.isVerified(id, stamp) { return path }
        // As glanceclient verifies a download: os_hash_value (sha512) when the image has one, the legacy md5
        // checksum only when it has not. Hashing is most of the cost of a boot or deploy from a cold cache.
        let expected = (sha512: image.osHashValue, md5: image.osHashValue == nil ? image.checksum : nil)
        let digests = try DataCopy.digests(of: data, md5: expected.md5 != nil, sha512: expected.sha512 != nil)
        guard digests.size == image.size, expected.sha512 == nil || expected.sha512 == digests.sha512,
            expected.md5 == nil || expected.md5 == digests.md5
        else {
            verified.withdraw(id)
            throw .invalidImage(
                "the data of image \(id) (\(path)) does not match its record (size \(digests.size), expected "
                    + "\(image.size); sha512 \((digests.sha512 ?? "not computed").prefix(16))…, expected "
                    + "\((expected.sha512 ?? "none").prefix(16))…): it was changed or corrupted on disk. Delete the "
                    + "image and upload it again")
        }
        // A stamp vouches for the hash and the inspection together: data stored before the inspector existed is
        // judged here once.
        do throws(CatalogError) {
            _ = try ImageDataInspection.inspect(path: path, declared: image.diskFormat)
        } catch {
            verified.withdraw(id)
            throw error
        }
        verified.record(id, stamp)
        return path
    }

    /// The identity of an image's data file, with the checksum it is verified against.
    private static func stamp(_ status: stat, of image: CatalogImage) -> DataStamp {
        DataStamp(status, checksum: image.osHashValue ?? image.checksum)
    }

    static func requireData(_ image: CatalogImage) throws(CatalogError) {
        if image.isPlaceholder {
            throw .invalidImage(
                "image \(image.id) is a placeholder without data; boot it from the volume or snapshot its "
                    + "block_device_mapping names")
        }
        guard image.status == "active" else {
            throw .invalidImage(
                "image \(image.id) has no data yet (status \(image.status)); upload its data first")
        }
    }

    static func requireQueued(_ image: CatalogImage) throws(CatalogError) {
        guard image.status == "queued" else {
            throw .invalidRequest(
                "image \(image.id) is \(image.status), not queued: it already has data (or is a placeholder). "
                    + "Create a new image for new data")
        }
    }

    /// The referenced kernels, ramdisks, snapshots and volumes exist and are of the right kind. Run under
    /// the exclusive lock so they cannot disappear before the write.
    func checkReferences(_ references: [ImageRules.Reference]) throws(CatalogError) {
        for reference in references {
            let location = reference.location
            let id = reference.id
            switch reference.target {
            case .kernel, .ramdisk:
                guard let image = try readImage(id) else { throw reference.missingBootFile(in: "the catalog") }
                try reference.checkBootFile(image)
            case .snapshot:
                guard try readSnapshot(id) != nil else {
                    throw .invalidProperty(
                        "\(location) names volume snapshot \(id), which is not in the catalog; snapshot the volume "
                            + "first and use the snapshot's id")
                }
            case .volume:
                guard try readVolume(id) != nil else {
                    throw .invalidProperty(
                        "\(location) names volume \(id), which is not in the catalog; use the id of an existing volume")
                }
            }
        }
    }

    /// Copies image data into a temporary file next to its final name, hashing it and inspecting it.
    func stageImageData(_ source: ImageDataSource, diskFormat: String, for path: String) throws(CatalogError)
        -> StagedImageData
    {
        let input: DataCopy.Source
        switch source {
        case .file(let file): input = .descriptor(try DataCopy.openSource(file))
        case .bytes(let bytes): input = .bytes(bytes)
        }
        let temporary = try Files.createTemporary(for: path)
        do throws(CatalogError) {
            let copied = try DataCopy.copy(from: input, to: temporary, hashing: true, sparse: true)
            // The copy, not the source: what is inspected is what is stored, whatever the source does meanwhile.
            let virtualSize = try ImageDataInspection.inspect(path: temporary.path, declared: diskFormat)
            try faults.check(.dataStaged)
            try Files.sync(temporary)
            return StagedImageData(file: temporary, copied: copied, virtualSize: virtualSize)
        } catch {
            Files.discard(temporary.path)
            throw error
        }
    }
}

/// Image data copied into a temporary file, with what was learnt while copying it.
struct StagedImageData {
    let file: Descriptor
    let copied: DataCopy.Copied
    let virtualSize: Int64?

    func apply(to image: inout CatalogImage) {
        image.status = "active"
        image.size = copied.size
        image.virtualSize = virtualSize
        image.checksum = copied.md5
        image.osHashAlgo = "sha512"  // what Glance computes by default
        image.osHashValue = copied.sha512
    }
}
