import BerthCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension LocalCatalog {
    // MARK: Volumes

    public func volume(id: String) async throws(CatalogError) -> CatalogVolume {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.volumeNotFound, kind: "volume")
            return try self.withLock(exclusive: false) { () throws(CatalogError) in try self.loadVolume(id) }
        }
    }

    public func volumes() async throws(CatalogError) -> [CatalogVolume] {
        try await perform { () throws(CatalogError) in
            try self.withLock(exclusive: false) { () throws(CatalogError) in
                try self.listRecords(CatalogVolume.self, in: self.layout.volumes, recordID: \.id)
            }.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        }
    }

    public func createVolume(
        id: String?, name: String, sizeGB: Int, fromImage: String?, fromSnapshot: String?, bootable: Bool
    ) async throws(CatalogError) -> CatalogVolume {
        try await createVolume(
            id: id, name: name, sizeGB: sizeGB, imageSource: fromImage.map(ImageForVolume.catalog),
            fromSnapshot: fromSnapshot, bootable: bootable)
    }

    /// Where the image of a new volume is: in this catalog, or elsewhere (Glance) with its data on this host.
    enum ImageForVolume {
        case catalog(String)
        case external(CatalogImage, dataPath: String)
    }

    func createVolume(
        id: String?, name: String, sizeGB: Int, imageSource fromImage: ImageForVolume?, fromSnapshot: String?,
        bootable: Bool
    ) async throws(CatalogError) -> CatalogVolume {
        try await perform { () throws(CatalogError) in
            let id = try Self.newID(id, kind: "volume")
            try ImageRules.checkName(name, of: "volume")
            guard (1...Self.maxVolumeGB).contains(sizeGB) else {
                throw .invalidRequest("volume size \(sizeGB) GB is out of range; give 1 to \(Self.maxVolumeGB) GB")
            }
            if fromImage != nil && fromSnapshot != nil {
                throw .invalidRequest("a volume is made from an image or from a snapshot, not both; give one source")
            }
            let bytes = Int64(sizeGB) << 30
            var volume = CatalogVolume(
                id: id.value, name: name, sizeGB: sizeGB, bootable: bootable, createdAt: RecordCoding.now())
            var source: VolumeSource?
            if let fromImage {
                let (image, data) = try self.openImageForVolume(fromImage, sizeBytes: bytes, sizeGB: sizeGB)
                source = .image(image, data)
                volume.volumeImageMetadata = Self.volumeImageMetadata(of: image)
                // Cinder marks a volume made from an image bootable: it holds that image's disk.
                volume.bootable = true
            } else if let fromSnapshot {
                let (snapshot, data) = try self.openSnapshotForVolume(fromSnapshot, sizeGB: sizeGB)
                source = .snapshot(snapshot, data)
                volume.volumeImageMetadata = snapshot.volumeImageMetadata
                volume.snapshotID = snapshot.id
                volume.bootable = bootable || !snapshot.volumeImageMetadata.isEmpty
            }
            try self.prepareLayout()
            let staged = try self.stageVolumeData(from: source, sizeBytes: bytes, for: self.layout.volumeData(id))
            do throws(CatalogError) {
                try self.commitNew(
                    record: try RecordCoding.encode(volume), at: self.layout.volumeRecord(id), data: staged,
                    at: self.layout.volumeData(id)
                ) { () throws(CatalogError) in
                    guard !Files.exists(self.layout.volumeRecord(id)) else { throw Self.alreadyExists("volume", id) }
                }
            } catch {
                Files.discard(staged.path)
                throw error
            }
            return volume
        }
    }

    public func deleteVolume(id: String, force: Bool) async throws(CatalogError) {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.volumeNotFound, kind: "volume")
            try self.withLock(exclusive: true) { () throws(CatalogError) in
                let volume = try self.loadVolume(id)
                if !force {
                    guard volume.status != "in-use" else {
                        throw .inUse(
                            "volume \(id) is in-use (attached to an instance); delete the instance first, or force "
                                + "the delete if that instance is gone")
                    }
                    let users = try self.imagesReferencing(volume: id)
                    guard users.isEmpty else {
                        throw .inUse(
                            "volume \(id) is named by the block_device_mapping of \(Self.describe(users)); delete "
                                + "those images first, or force the delete (booting them will then fail)")
                    }
                }
                try Files.remove(self.layout.volumeRecord(id))
                try Files.syncDirectory(self.layout.volumes)
                try Files.remove(self.layout.volumeData(id))
            }
        }
    }

    public func volumeDataPath(id: String) async throws(CatalogError) -> String {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.volumeNotFound, kind: "volume")
            return try self.withLock(exclusive: false) { () throws(CatalogError) in
                _ = try self.loadVolume(id)
                let path = self.layout.volumeData(id)
                guard Files.exists(path) else {
                    throw .unavailable(
                        "the data file of volume \(id) (\(path)) is missing; restore it from a backup or delete the "
                            + "volume")
                }
                return path
            }
        }
    }

    // MARK: Snapshots

    public func snapshotVolume(id volumeID: String, snapshotID: String?, name: String) async throws(CatalogError) -> VolumeSnapshot {
        try await perform { () throws(CatalogError) in
            let volumeID = try Self.existingID(volumeID, notFound: CatalogError.volumeNotFound, kind: "volume")
            let id = try Self.newID(snapshotID, kind: "snapshot")
            try ImageRules.checkName(name, of: "snapshot")
            let (volume, data) = try self.withLock(exclusive: false) { () throws(CatalogError) in
                let volume = try self.loadVolume(volumeID)
                return (volume, try self.openData(self.layout.volumeData(volumeID), of: "volume \(volumeID)"))
            }
            let snapshot = VolumeSnapshot(
                id: id.value, volumeID: volume.id, name: name, sizeGB: volume.sizeGB,
                volumeImageMetadata: volume.volumeImageMetadata, createdAt: RecordCoding.now())
            try self.prepareLayout()
            // A copy, not a reference: the snapshot outlives changes to (and the deletion of) its volume.
            // Crash-consistent only: an attached volume is copied as the guest left it on disk.
            let staged = try self.stageVolumeData(
                from: .volume(data), sizeBytes: Int64(volume.sizeGB) << 30, for: self.layout.snapshotData(id))
            do throws(CatalogError) {
                try self.commitNew(
                    record: try RecordCoding.encode(snapshot), at: self.layout.snapshotRecord(id), data: staged,
                    at: self.layout.snapshotData(id)
                ) { () throws(CatalogError) in
                    guard !Files.exists(self.layout.snapshotRecord(id)) else {
                        throw Self.alreadyExists("snapshot", id)
                    }
                }
            } catch {
                Files.discard(staged.path)
                throw error
            }
            return snapshot
        }
    }

    public func snapshot(id: String) async throws(CatalogError) -> VolumeSnapshot {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.snapshotNotFound, kind: "snapshot")
            return try self.withLock(exclusive: false) { () throws(CatalogError) in try self.loadSnapshot(id) }
        }
    }

    public func snapshots() async throws(CatalogError) -> [VolumeSnapshot] {
        try await perform { () throws(CatalogError) in
            try self.withLock(exclusive: false) { () throws(CatalogError) in
                try self.listRecords(VolumeSnapshot.self, in: self.layout.snapshots, recordID: \.id)
            }.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        }
    }

    public func deleteSnapshot(id: String, force: Bool) async throws(CatalogError) {
        try await perform { () throws(CatalogError) in
            let id = try Self.existingID(id, notFound: CatalogError.snapshotNotFound, kind: "snapshot")
            try self.withLock(exclusive: true) { () throws(CatalogError) in
                _ = try self.loadSnapshot(id)
                if !force {
                    let users = try self.imagesReferencing(snapshot: id)
                    guard users.isEmpty else {
                        throw .inUse(
                            "snapshot \(id) is named by the block_device_mapping of \(Self.describe(users)); delete "
                                + "those images first, or force the delete (booting them will then fail)")
                    }
                }
                try Files.remove(self.layout.snapshotRecord(id))
                try Files.syncDirectory(self.layout.snapshots)
                try Files.remove(self.layout.snapshotData(id))
            }
        }
    }

    // MARK: Helpers

    enum VolumeSource {
        case image(CatalogImage, Descriptor)
        case snapshot(VolumeSnapshot, Descriptor)
        case volume(Descriptor)
    }

    static func describe(_ images: [CatalogImage]) -> String {
        let named = images.prefix(5).map { "image \($0.id) (\(CatalogID.quoted($0.name)))" }
        let more = images.count > 5 ? " and \(images.count - 5) more" : ""
        return named.joined(separator: ", ") + more
    }

    /// What Cinder copies into `volume_image_metadata`: the image's properties plus its identity and core
    /// fields, the lowest layer of a volume-backed instance's effective properties (DESIGN §4).
    static func volumeImageMetadata(of image: CatalogImage) -> [String: String] {
        var metadata = image.properties
        metadata["image_id"] = image.id
        metadata["image_name"] = image.name
        metadata["disk_format"] = image.diskFormat
        metadata["container_format"] = image.containerFormat
        metadata["min_disk"] = String(image.minDiskGB)
        metadata["min_ram"] = String(image.minRAMMB)
        metadata["size"] = String(image.size)
        if let checksum = image.checksum { metadata["checksum"] = checksum }
        return metadata
    }

    func openData(_ path: String, of what: String) throws(CatalogError) -> Descriptor {
        var fd: Int32
        repeat { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            if errno == ENOENT {
                throw .unavailable(
                    "the data file of \(what) (\(path)) is missing; restore it from a backup or delete the record")
            }
            throw Files.failure("open", path, errno)
        }
        return Descriptor(raw: fd, path: path)
    }

    private func openImageForVolume(_ source: ImageForVolume, sizeBytes: Int64, sizeGB: Int) throws(CatalogError)
        -> (CatalogImage, Descriptor)
    {
        let image: CatalogImage
        let data: Descriptor
        switch source {
        case .catalog(let text):
            let imageID = try Self.existingID(text, notFound: CatalogError.imageNotFound, kind: "image")
            (image, data) = try withLock(exclusive: false) { () throws(CatalogError) in
                let image = try loadImage(imageID)
                try Self.requireData(image)
                return (image, try openData(layout.imageData(imageID), of: "image \(imageID)"))
            }
        case .external(let external, let path):
            image = external
            data = try openData(path, of: "image \(external.id)")
        }
        // Volumes are raw block devices; the local catalog copies bytes and does not convert formats.
        guard image.diskFormat == "raw" else {
            throw .invalidImage(
                "image \(image.id) is disk_format \(image.diskFormat); a volume can only be made from a raw image "
                    + "here. Convert it (`qemu-img convert -O raw`) and upload the raw image")
        }
        let needed = max(image.virtualSize ?? image.size, image.size, Int64(image.minDiskGB) << 30)
        guard sizeBytes >= needed else {
            let gigabytes = (needed + (1 << 30) - 1) >> 30
            throw .invalidRequest(
                "a \(sizeGB) GB volume cannot hold image \(image.id), which needs \(needed) bytes; ask for at least "
                    + "\(gigabytes) GB")
        }
        return (image, data)
    }

    private func openSnapshotForVolume(_ text: String, sizeGB: Int) throws(CatalogError)
        -> (VolumeSnapshot, Descriptor)
    {
        let snapshotID = try Self.existingID(text, notFound: CatalogError.snapshotNotFound, kind: "snapshot")
        let (snapshot, data) = try withLock(exclusive: false) { () throws(CatalogError) in
            let snapshot = try loadSnapshot(snapshotID)
            return (snapshot, try openData(layout.snapshotData(snapshotID), of: "snapshot \(snapshotID)"))
        }
        guard sizeGB >= snapshot.sizeGB else {
            throw .invalidRequest(
                "snapshot \(snapshot.id) is \(snapshot.sizeGB) GB; a volume made from it needs at least that size")
        }
        return (snapshot, data)
    }

    /// A temporary volume file of `sizeBytes` holding the source's bytes (holes where it is zero) and reading
    /// as zeros beyond them. Image sources are hashed on the way and must match the image's digests.
    private func stageVolumeData(from source: VolumeSource?, sizeBytes: Int64, for path: String)
        throws(CatalogError) -> Descriptor
    {
        let temporary = try Files.createTemporary(for: path)
        do throws(CatalogError) {
            switch source {
            case .image(let image, let data):
                defer { data.closeQuietly() }
                let copied = try DataCopy.copy(from: .descriptor(data), to: temporary, hashing: true, sparse: true)
                guard copied.size == image.size, image.osHashValue == nil || image.osHashValue == copied.sha512,
                    image.checksum == nil || image.checksum == copied.md5
                else {
                    throw .invalidImage(
                        "the data of image \(image.id) does not match its checksum; it was changed or corrupted on "
                            + "disk. Delete the image and upload it again")
                }
            case .snapshot(_, let data), .volume(let data):
                defer { data.closeQuietly() }
                _ = try DataCopy.copy(from: .descriptor(data), to: temporary, hashing: false, sparse: true)
            case nil:
                break
            }
            if ftruncate(temporary.raw, off_t(sizeBytes)) != 0 {
                throw Files.failure("set the size of", temporary.path, errno)
            }
            try faults.check(.dataStaged)
            try Files.sync(temporary)
            return temporary
        } catch {
            Files.discard(temporary.path)
            throw error
        }
    }
}
