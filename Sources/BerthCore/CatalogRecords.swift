import Foundation

/// An image in the catalog, shaped like a Glance v2 image so the local catalog and Glance are
/// interchangeable. `properties` are Glance's free-form image properties (all strings, as in Glance).
public struct CatalogImage: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    /// `raw`, `qcow2`, `aki` (kernel), `ari` (ramdisk), `ami`, ... Glance's disk formats.
    public var diskFormat: String
    /// `bare`, `aki`, `ari`, `ami`, ...
    public var containerFormat: String
    /// `active` (has data or is a placeholder), `queued` (no data yet), `deleted`.
    public var status: String
    /// Bytes of image data; 0 for a placeholder image.
    public var size: Int64
    /// Bytes the disk has inside the guest (qcow2 virtual size; = size for raw); nil when unknown.
    public var virtualSize: Int64?
    /// md5 hex of the data, as Glance's legacy `checksum`.
    public var checksum: String?
    public var osHashAlgo: String?
    public var osHashValue: String?
    public var minDiskGB: Int
    public var minRAMMB: Int
    public var properties: [String: String]
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String, name: String, diskFormat: String, containerFormat: String = "bare", status: String = "active",
        size: Int64 = 0, virtualSize: Int64? = nil, checksum: String? = nil, osHashAlgo: String? = nil,
        osHashValue: String? = nil, minDiskGB: Int = 0, minRAMMB: Int = 0, properties: [String: String] = [:],
        createdAt: Date = Date(), updatedAt: Date = Date()
    ) {
        self.id = id
        self.name = name
        self.diskFormat = diskFormat
        self.containerFormat = containerFormat
        self.status = status
        self.size = size
        self.virtualSize = virtualSize
        self.checksum = checksum
        self.osHashAlgo = osHashAlgo
        self.osHashValue = osHashValue
        self.minDiskGB = minDiskGB
        self.minRAMMB = minRAMMB
        self.properties = properties
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    enum CodingKeys: String, CodingKey {
        case id, name, status, size, checksum, properties
        case diskFormat = "disk_format"
        case containerFormat = "container_format"
        case virtualSize = "virtual_size"
        case osHashAlgo = "os_hash_algo"
        case osHashValue = "os_hash_value"
        case minDiskGB = "min_disk"
        case minRAMMB = "min_ram"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }

    /// A kernel image (`disk_format` aki), usable as a `kernel_id`.
    public var isKernel: Bool { diskFormat == "aki" }
    /// A ramdisk image (`disk_format` ari), usable as a `ramdisk_id`.
    public var isRamdisk: Bool { diskFormat == "ari" }
    /// A content-free image that boots from a volume or snapshot (DESIGN §5).
    public var isPlaceholder: Bool { properties["block_device_mapping"] != nil && size == 0 }
}

/// A block volume in the local catalog (Cinder-like), bootable when it holds an OS.
public struct CatalogVolume: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var sizeGB: Int
    /// `available`, `in-use`, `creating`, `error`, `deleting`.
    public var status: String
    public var bootable: Bool
    /// The image properties the volume carries from the image it was made from (Cinder's
    /// `volume_image_metadata`); the lowest layer of a volume-backed instance's effective properties.
    public var volumeImageMetadata: [String: String]
    /// The snapshot it was created from, if any.
    public var snapshotID: String?
    public var createdAt: Date

    public init(
        id: String, name: String, sizeGB: Int, status: String = "available", bootable: Bool = false,
        volumeImageMetadata: [String: String] = [:], snapshotID: String? = nil, createdAt: Date = Date()
    ) {
        self.id = id
        self.name = name
        self.sizeGB = sizeGB
        self.status = status
        self.bootable = bootable
        self.volumeImageMetadata = volumeImageMetadata
        self.snapshotID = snapshotID
        self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, name, status, bootable
        case sizeGB = "size"
        case volumeImageMetadata = "volume_image_metadata"
        case snapshotID = "snapshot_id"
        case createdAt = "created_at"
    }
}

/// A point-in-time copy of a volume (Cinder-like).
public struct VolumeSnapshot: Sendable, Equatable, Codable {
    public var id: String
    public var volumeID: String
    public var name: String
    public var sizeGB: Int
    public var status: String
    /// Copied from the volume at snapshot time, so a volume made from it keeps the image properties.
    public var volumeImageMetadata: [String: String]
    public var createdAt: Date

    public init(
        id: String, volumeID: String, name: String, sizeGB: Int, status: String = "available",
        volumeImageMetadata: [String: String] = [:], createdAt: Date = Date()
    ) {
        self.id = id
        self.volumeID = volumeID
        self.name = name
        self.sizeGB = sizeGB
        self.status = status
        self.volumeImageMetadata = volumeImageMetadata
        self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, name, status
        case volumeID = "volume_id"
        case sizeGB = "size"
        case volumeImageMetadata = "volume_image_metadata"
        case createdAt = "created_at"
    }
}
