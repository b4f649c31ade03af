import BerthJSONValue

/// The root entry of a placeholder image's `block_device_mapping` (Nova's image BDM, v2 format): where a
/// volume-backed instance's root disk comes from.
public struct RootBlockDevice: Sendable, Hashable {
    public enum Source: Sendable, Hashable {
        case snapshot(String)
        case volume(String)
    }

    public var source: Source
    public var volumeSizeGB: Int
    public var deviceName: String
    public var deleteOnTermination: Bool

    public init(source: Source, volumeSizeGB: Int, deviceName: String = "/dev/vda", deleteOnTermination: Bool = true) {
        self.source = source
        self.volumeSizeGB = volumeSizeGB
        self.deviceName = deviceName
        self.deleteOnTermination = deleteOnTermination
    }

    /// Nova's BDM entry as Glance stores it in the image property.
    public var jsonValue: JSONValue {
        var entry: JSONObject = [:]
        switch source {
        case .snapshot(let id):
            entry["source_type"] = "snapshot"
            entry["snapshot_id"] = .string(id)
        case .volume(let id):
            entry["source_type"] = "volume"
            entry["volume_id"] = .string(id)
        }
        entry["destination_type"] = "volume"
        entry["boot_index"] = 0
        entry["device_name"] = .string(deviceName)
        entry["volume_size"] = .int(Int64(volumeSizeGB))
        entry["delete_on_termination"] = .bool(deleteOnTermination)
        return .object(entry)
    }

    /// The boot entry (`boot_index` 0) of a `block_device_mapping` property, parsed with `codec`.
    public static func parse(
        blockDeviceMapping text: String, imageID: String, codec: any JSONTextCodec.Type
    ) throws(BerthError) -> RootBlockDevice {
        let value: JSONValue
        do {
            value = try codec.parse(text, limits: JSONLimits(maxBytes: 65536, maxDepth: 8))
        } catch {
            throw .invalidImage("image \(imageID): block_device_mapping is not JSON (\(error.message))")
        }
        guard let entries = value.arrayValue else {
            throw .invalidImage("image \(imageID): block_device_mapping must be a JSON list of mappings")
        }
        guard let root = entries.first(where: { $0["boot_index"]?.intValue == 0 }) ?? entries.first else {
            throw .invalidImage("image \(imageID): block_device_mapping is empty; it needs the root disk (boot_index 0)")
        }
        let size = Int(root["volume_size"]?.intValue ?? 0)
        let device = root["device_name"]?.stringValue ?? "/dev/vda"
        let delete = root["delete_on_termination"]?.boolValue ?? true
        switch root["source_type"]?.stringValue {
        case "snapshot":
            guard let id = root["snapshot_id"]?.stringValue else {
                throw .invalidImage("image \(imageID): the root block_device_mapping has source_type snapshot but no snapshot_id")
            }
            return RootBlockDevice(source: .snapshot(id), volumeSizeGB: size, deviceName: device, deleteOnTermination: delete)
        case "volume":
            guard let id = root["volume_id"]?.stringValue else {
                throw .invalidImage("image \(imageID): the root block_device_mapping has source_type volume but no volume_id")
            }
            return RootBlockDevice(source: .volume(id), volumeSizeGB: size, deviceName: device, deleteOnTermination: false)
        default:
            throw .invalidImage(
                "image \(imageID): the root block_device_mapping's source_type must be snapshot or volume")
        }
    }
}

/// What a new image inherits from the image its instance booted from (DESIGN §5), so that booting the
/// snapshot boots the same way.
public enum SnapshotProperties {
    /// Boot properties carried over: kernel and ramdisk, command lines, variants and hardware choices.
    public static func inherited(from base: [String: String]) -> [String: String] {
        base.filter { key, _ in
            ["kernel_id", "ramdisk_id", "kernel_args", "kernel_extra_args", "os_command_line", "boot_options",
             "architecture", "hypervisor_type", "vm_mode", "os_type", "os_distro"].contains(key)
                || key.hasPrefix("hw_")
        }
    }

    /// An image-backed instance's snapshot: the base image's boot properties, where it came from, and the
    /// caller's own properties on top.
    public static func imageSnapshot(
        base: CatalogImage, instanceUUID: String, extra: [String: String]
    ) -> [String: String] {
        var properties = inherited(from: base.properties)
        properties["base_image_ref"] = base.id
        properties["instance_uuid"] = instanceUUID
        properties["image_type"] = "snapshot"
        properties.merge(extra) { _, caller in caller }
        return properties
    }

    /// A content-free placeholder image for a volume snapshot or a volume (DESIGN §5); `codec` writes its
    /// `block_device_mapping`.
    public static func placeholder(
        root: RootBlockDevice, inheritedFrom base: [String: String], instanceUUID: String?, baseImageID: String?,
        extra: [String: String], codec: any JSONTextCodec.Type
    ) -> [String: String] {
        var properties = inherited(from: base)
        properties["block_device_mapping"] = codec.serializeString(.array([root.jsonValue]))
        properties["bdm_v2"] = "True"
        properties["root_device_name"] = root.deviceName
        if let instanceUUID {
            properties["instance_uuid"] = instanceUUID
            properties["image_type"] = "snapshot"
        }
        if let baseImageID { properties["base_image_ref"] = baseImageID }
        properties.merge(extra) { _, caller in caller }
        return properties
    }
}
