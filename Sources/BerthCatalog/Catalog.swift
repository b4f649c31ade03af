import BerthCore

/// Where the data of a new image comes from.
public enum ImageDataSource: Sendable, Equatable {
    /// A file (or block device) on this host, read and copied; the catalog never moves or keeps it.
    case file(String)
    /// Data already in memory, such as a small kernel built by a test.
    case bytes([UInt8])
}

/// The image, volume and snapshot store a worker boots from: the local directory catalog on one host,
/// Glance v2 beyond it (DESIGN §1, §9). Shaped after Glance so both fit behind it: images carry free-form
/// string properties; image data reaches the worker as a local file (the catalog's own file, or Glance's
/// download into the host cache), checked against the image's checksum.
///
/// Every method throws `CatalogError`; ids are canonical UUIDs, and an id that is not one is reported as
/// not found (ids come from the bus and must never be used unchecked).
public protocol Catalog: Sendable {
    // MARK: Images

    func image(id: String) async throws(CatalogError) -> CatalogImage
    /// Newest first, as Glance lists them.
    func images() async throws(CatalogError) -> [CatalogImage]

    /// Creates an image; with `data`, uploads it in the same step (status `active`), without, stores a
    /// record only: a placeholder (`active`, size 0) when `properties` has a `block_device_mapping`,
    /// otherwise a `queued` image waiting for `uploadImageData`. `id` nil mints a new UUID; a caller that
    /// must not create twice on redelivery passes its own (Glance accepts a client-chosen id too), and a
    /// second create with that id fails with `alreadyExists`.
    func createImage(
        id: String?, name: String, diskFormat: String, containerFormat: String, properties: [String: String],
        data: ImageDataSource?
    ) async throws(CatalogError) -> CatalogImage

    /// Uploads the data of a `queued` image, which becomes `active`.
    func uploadImageData(id: String, data: ImageDataSource) async throws(CatalogError) -> CatalogImage

    /// Sets and removes properties in one write; removing a property the image lacks is not an error, so
    /// a repeated request has the same effect.
    func updateImage(id: String, setProperties: [String: String], removeProperties: Set<String>) async throws(CatalogError)
        -> CatalogImage

    func deleteImage(id: String) async throws(CatalogError)

    /// A file on this host holding the image's data, verified against the image's checksum before it is
    /// first handed out (local catalog: its own file, checked once per process while the file is unchanged;
    /// Glance: the host-cache copy, checked while downloading). Read it; never write it.
    func localImageData(id: String) async throws(CatalogError) -> String

    /// Re-reads the image's data and compares it with the stored `os_hash_value` and `checksum`.
    func verifyImageData(id: String) async throws(CatalogError)

    // MARK: Volumes

    func volume(id: String) async throws(CatalogError) -> CatalogVolume
    func volumes() async throws(CatalogError) -> [CatalogVolume]

    /// A blank volume, or a copy of an image's data (with the image's properties as
    /// `volume_image_metadata`, as Cinder does) or of a snapshot's data and metadata. `sizeGB` may exceed
    /// the source; the rest reads as zeros.
    func createVolume(
        id: String?, name: String, sizeGB: Int, fromImage: String?, fromSnapshot: String?, bootable: Bool
    ) async throws(CatalogError) -> CatalogVolume

    /// Refused while an image's `block_device_mapping` names the volume or it is `in-use`, unless `force`.
    func deleteVolume(id: String, force: Bool) async throws(CatalogError)

    /// The file holding the volume's blocks (raw), for attaching it to a domain.
    func volumeDataPath(id: String) async throws(CatalogError) -> String

    // MARK: Volume snapshots

    func snapshotVolume(id volumeID: String, snapshotID: String?, name: String) async throws(CatalogError) -> VolumeSnapshot
    func snapshot(id: String) async throws(CatalogError) -> VolumeSnapshot
    func snapshots() async throws(CatalogError) -> [VolumeSnapshot]

    /// Refused while a placeholder image's `block_device_mapping` names the snapshot, unless `force`
    /// (after which booting that placeholder fails with VolumeNotFound).
    func deleteSnapshot(id: String, force: Bool) async throws(CatalogError)
}

extension Catalog {
    /// Creates an image with a fresh id; the container format follows Glance's rule for kernels and
    /// ramdisks (`aki`/`ari`/`ami` disk and container formats match) and is `bare` otherwise.
    public func createImage(
        name: String, diskFormat: String, containerFormat: String? = nil, properties: [String: String] = [:],
        data: ImageDataSource? = nil
    ) async throws(CatalogError) -> CatalogImage {
        let container = containerFormat ?? (["aki", "ari", "ami"].contains(diskFormat) ? diskFormat : "bare")
        return try await createImage(
            id: nil, name: name, diskFormat: diskFormat, containerFormat: container, properties: properties, data: data)
    }

    public func createVolume(
        name: String, sizeGB: Int, fromImage: String? = nil, fromSnapshot: String? = nil, bootable: Bool = false
    ) async throws(CatalogError) -> CatalogVolume {
        try await createVolume(
            id: nil, name: name, sizeGB: sizeGB, fromImage: fromImage, fromSnapshot: fromSnapshot, bootable: bootable)
    }

    public func snapshotVolume(id volumeID: String, name: String) async throws(CatalogError) -> VolumeSnapshot {
        try await snapshotVolume(id: volumeID, snapshotID: nil, name: name)
    }

    public func deleteVolume(id: String) async throws(CatalogError) { try await deleteVolume(id: id, force: false) }
    public func deleteSnapshot(id: String) async throws(CatalogError) { try await deleteSnapshot(id: id, force: false) }
}

/// `--property k=v` arguments of `berth images create|update` as a property set.
public enum PropertyArguments {
    /// Splits each argument at its first `=`, so values may contain `=` (kernel arguments do); an argument
    /// without one, or a key given twice, is refused rather than guessed at. Keys are checked by the catalog.
    public static func parse(_ arguments: [String]) throws(CatalogError) -> [String: String] {
        var properties: [String: String] = [:]
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "=") else {
                throw .invalidRequest(
                    "property \(CatalogID.quoted(argument)) has no '='; write it as key=value, e.g. hw_disk_bus=virtio")
            }
            let key = String(argument[..<equals])
            guard properties.updateValue(String(argument[argument.index(after: equals)...]), forKey: key) == nil else {
                throw .invalidRequest("property \(key) is given twice; give each property once")
            }
        }
        return properties
    }
}
