import BerthBlocking
import BerthCatalog
import BerthCore
import BerthJSON
import BerthLibvirt
import Foundation
import Logging

/// Snapshots and placeholder images (DESIGN §5): every instance has an image id, also after a snapshot of
/// a volume-backed instance, whose image is a content-free placeholder naming the volume snapshot.
extension ComputeService {
    public struct SnapshotResult: Sendable {
        public var imageID: String
        public var kind: String
        /// The image the snapshotted instance booted from, for the events.
        public var instanceImageID: String
        public var snapshotID: String?

        public var json: JSONObject {
            var object: JSONObject = ["image_id": .string(imageID), "kind": .string(kind)]
            if let snapshotID { object["snapshot_id"] = .string(snapshotID) }
            return object
        }
    }

    /// The image the instance booted from, without taking its lock: for the `.start` event.
    public func instanceImageID(_ uuid: String) async throws(BerthError) -> String {
        guard let domain = try await existingInstance(uuid), let metadata = try DomainMetadata.parse(xml: domain.xml)
        else { throw .instanceNotFound(uuid) }
        return metadata.imageID
    }

    /// Snapshots an instance's root disk into a new catalog image. The guest is paused while its disk is read
    /// so the copy is consistent; a failure leaves no image, snapshot or temporary file behind.
    public func snapshot(
        uuid: String, imageName: String, properties extra: [String: String], logger: Logger
    ) async throws(BerthError) -> SnapshotResult {
        try Self.checkImageName(imageName)
        return try await locks.withLock(uuid) { () async throws(BerthError) -> SnapshotResult in
            guard let domain = try await existingInstance(uuid),
                let metadata = try DomainMetadata.parse(xml: domain.xml)
            else { throw .instanceNotFound(uuid) }
            // The base image may be gone since the boot; the snapshot then inherits nothing from it.
            let base = try? await catalog.image(id: metadata.imageID)
            if let volumeID = metadata.volumeID {
                return try await snapshotVolumeBacked(
                    uuid: uuid, volumeID: volumeID, base: base, instanceImageID: metadata.imageID, name: imageName,
                    extra: extra, logger: logger)
            }
            guard let base else {
                throw .snapshotFailed(
                    "instance \(uuid)'s image \(metadata.imageID) is no longer in the catalog, so the snapshot could "
                        + "not inherit its boot properties; restore the image first")
            }
            return try await snapshotImageBacked(
                uuid: uuid, base: base, name: imageName, extra: extra, logger: logger)
        }
    }

    private func snapshotImageBacked(
        uuid: String, base: CatalogImage, name: String, extra: [String: String], logger: Logger
    ) async throws(BerthError) -> SnapshotResult {
        let overlay: String
        do {
            guard let path = try await libvirt.volumePath(pool: configuration.poolName, name: Self.rootVolumeName(uuid))
            else { throw BerthError.snapshotFailed("instance \(uuid) has no root disk in pool \(configuration.poolName)") }
            overlay = path
        } catch let error as BerthError {
            throw error
        } catch {
            throw .snapshotFailed("cannot find instance \(uuid)'s root disk: \(error)")
        }
        let directory = configuration.stateDirectory + "/snapshots"
        let temporary = "\(directory)/\(uuid)-\(UUID().uuidString.lowercased()).qcow2"
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .snapshotFailed("cannot create \(directory): \(error.localizedDescription)")
        }
        // qemu-img flattens the overlay and its cached base into one self-contained qcow2 image.
        try await whilePaused(uuid, logger: logger) { () async throws(BerthError) in
            try await QemuImg.convert(source: overlay, to: temporary)
        }
        let properties = SnapshotProperties.imageSnapshot(base: base, instanceUUID: uuid, extra: extra)
        let image: CatalogImage
        do throws(CatalogError) {
            image = try await catalog.createImage(
                name: name, diskFormat: "qcow2", containerFormat: "bare", properties: properties,
                data: .file(temporary))
        } catch {
            throw .snapshotCatalog(error)
        }
        logger.info("snapshot stored", metadata: ["instance_uuid": "\(uuid)", "snapshot_image_id": "\(image.id)"])
        return SnapshotResult(imageID: image.id, kind: "image", instanceImageID: base.id)
    }

    private func snapshotVolumeBacked(
        uuid: String, volumeID: String, base: CatalogImage?, instanceImageID: String, name: String,
        extra: [String: String], logger: Logger
    ) async throws(BerthError) -> SnapshotResult {
        let snapshot = try await whilePaused(uuid, logger: logger) { () async throws(BerthError) -> VolumeSnapshot in
            do throws(CatalogError) {
                return try await catalog.snapshotVolume(id: volumeID, snapshotID: nil, name: name)
            } catch {
                throw .snapshotCatalog(error)
            }
        }
        let root = RootBlockDevice(source: .snapshot(snapshot.id), volumeSizeGB: snapshot.sizeGB)
        // Inherit from what the instance booted with: the placeholder's properties over its volume's metadata.
        var inherited = snapshot.volumeImageMetadata
        inherited.merge(base?.properties ?? [:]) { _, image in image }
        let properties = SnapshotProperties.placeholder(
            root: root, inheritedFrom: inherited, instanceUUID: uuid, baseImageID: instanceImageID, extra: extra,
            codec: JSONCodec.self)
        do throws(CatalogError) {
            let image = try await catalog.createImage(
                name: name, diskFormat: "raw", containerFormat: "bare", properties: properties, data: nil)
            logger.info(
                "volume snapshot and placeholder image stored",
                metadata: ["instance_uuid": "\(uuid)", "snapshot_id": "\(snapshot.id)", "placeholder_image_id": "\(image.id)"])
            return SnapshotResult(
                imageID: image.id, kind: "placeholder", instanceImageID: instanceImageID, snapshotID: snapshot.id)
        } catch {
            // No placeholder, so nothing refers to the snapshot: remove it rather than leave half a result.
            try? await catalog.deleteSnapshot(id: snapshot.id, force: true)
            throw .snapshotCatalog(error)
        }
    }

    /// Mints a placeholder image for a volume or a volume snapshot (`create_placeholder_image`).
    public func createPlaceholder(
        volumeID: String?, snapshotID: String?, name: String, properties extra: [String: String]
    ) async throws(BerthError) -> CatalogImage {
        try await Self.mintPlaceholder(
            catalog: catalog, volumeID: volumeID, snapshotID: snapshotID, name: name, properties: extra)
    }

    /// The same without a worker, for `berth volumes image`: it needs only the catalog.
    public static func mintPlaceholder(
        catalog: any Catalog, volumeID: String?, snapshotID: String?, name: String, properties extra: [String: String]
    ) async throws(BerthError) -> CatalogImage {
        try checkImageName(name)
        let root: RootBlockDevice
        let metadata: [String: String]
        switch (volumeID, snapshotID) {
        case (let volume?, nil):
            let record = try await BerthError.catalog { () async throws(CatalogError) in
                try await catalog.volume(id: volume)
            }
            root = RootBlockDevice(source: .volume(record.id), volumeSizeGB: record.sizeGB, deleteOnTermination: false)
            metadata = record.volumeImageMetadata
        case (nil, let snapshot?):
            let record = try await BerthError.catalog { () async throws(CatalogError) in
                try await catalog.snapshot(id: snapshot)
            }
            root = RootBlockDevice(source: .snapshot(record.id), volumeSizeGB: record.sizeGB)
            metadata = record.volumeImageMetadata
        default:
            throw .invalidRequest("create_placeholder_image takes exactly one of volume_id and snapshot_id")
        }
        let properties = SnapshotProperties.placeholder(
            root: root, inheritedFrom: metadata, instanceUUID: nil, baseImageID: metadata["image_id"], extra: extra,
            codec: JSONCodec.self)
        return try await BerthError.catalog { () async throws(CatalogError) in
            try await catalog.createImage(
                name: name, diskFormat: "raw", containerFormat: "bare", properties: properties, data: nil)
        }
    }

    // MARK: Helpers

    /// Runs `body` with the guest's vCPUs paused (if it runs), resuming it whatever happens.
    private func whilePaused<T: Sendable>(
        _ uuid: String, logger: Logger, _ body: () async throws(BerthError) -> T
    ) async throws(BerthError) -> T {
        let paused: Bool
        do {
            paused = try await libvirt.pauseIfRunning(uuid: uuid)
        } catch {
            throw .snapshotFailed("cannot pause instance \(uuid) for a consistent snapshot: \(error)")
        }
        let result: Result<T, BerthError>
        do throws(BerthError) {
            result = .success(try await body())
        } catch {
            result = .failure(error)
        }
        if paused {
            do {
                try await libvirt.resume(uuid: uuid)
            } catch {
                logger.error("could not resume the instance after its snapshot", metadata: ["instance_uuid": "\(uuid)"])
            }
        }
        return try result.get()
    }

    static func checkImageName(_ name: String) throws(BerthError) {
        guard !name.isEmpty, name.utf8.count <= 255, !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw .invalidRequest("image_name must be 1 to 255 bytes without control characters")
        }
    }
}

extension BerthError {
    /// A catalog that refuses the new image (full, read-only) fails the snapshot; a bad property is the caller's.
    static func snapshotCatalog(_ error: CatalogError) -> BerthError {
        switch error.rpcClassName(operationFailure: "SnapshotFailed") {
        case "InvalidImage": .invalidRequest(error.message)
        case "SnapshotFailed": .snapshotFailed(error.message)
        default: .from(error)
        }
    }
}

/// `qemu-img`, run as a child process off the cooperative pool.
enum QemuImg {
    /// A snapshot whose request was cancelled (its reply timed out) before its turn starts no `qemu-img`.
    static func convert(source: String, to target: String) async throws(BerthError) {
        let result: Result<Void, BerthError>
        do {
            result = try await HostThreads.snapshots.run { () -> Result<Void, BerthError> in
                Result { () throws(BerthError) in try run(source: source, to: target) }
            }
        } catch {
            throw .snapshotFailed("the snapshot was cancelled before qemu-img started")
        }
        try result.get()
    }

    private static func run(source: String, to target: String) throws(BerthError) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-img")
        // -U: read a disk a paused (or running) guest holds open; the pause is what makes it consistent.
        process.arguments = ["convert", "-U", "-O", "qcow2", source, target]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw .snapshotFailed("cannot run qemu-img: \(error)")
        }
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = text.trimmingCharacters(in: .whitespacesAndNewlines).prefix(500)
            throw .snapshotFailed("cannot read the instance's disk: qemu-img: \(message)")
        }
    }
}
