import BerthJSONValue

/// The properties a boot actually uses (DESIGN §4), lowest layer first:
/// 1. a volume-backed image's volume `volume_image_metadata` (the properties of the image the volume was made
///    from),
/// 2. the catalog image's own properties (for a placeholder image: what its creator set on top),
/// 3. the chosen boot variant's `kernel_id`, `ramdisk_id`, `kernel_args`, `hw_disk_bus` and host constraints,
/// 4. the per-VM overrides from the boot request's metadata.
public enum EffectiveProperties {
    /// All layers merged. Every image-side value Berth interprets is validated, so a bad image fails here with
    /// `InvalidImage` naming the property instead of half-way through building the domain. `codec` parses the
    /// properties that hold JSON (`boot_options`).
    public static func resolve(
        image: CatalogImage, volumeImageMetadata: [String: String]? = nil, variant: BootVariant? = nil,
        overrides: VMOverrides = VMOverrides(), codec: any JSONTextCodec.Type
    ) throws(BerthError) -> [String: String] {
        var merged = try imageLayer(
            image: image, volumeImageMetadata: volumeImageMetadata, variant: variant, codec: codec)
        merged.merge(overrides.properties) { _, override in override }
        return merged
    }

    /// Layers 1–3: what the image side says, before the boot request has its say. `KernelCommandLine` needs
    /// this layer apart from the overrides to blame the right party for a bad line.
    public static func imageLayer(
        image: CatalogImage, volumeImageMetadata: [String: String]? = nil, variant: BootVariant? = nil,
        codec: any JSONTextCodec.Type
    ) throws(BerthError) -> [String: String] {
        if let volumeImageMetadata {
            try validate(
                volumeImageMetadata, source: "volume_image_metadata of image \(quoted(image.id))'s volume",
                codec: codec)
        }
        try validate(image.properties, source: "image \(quoted(image.id))", codec: codec)
        var merged = volumeImageMetadata ?? [:]
        merged.merge(image.properties) { _, imageValue in imageValue }
        if let variant {
            merged = variant.applied(to: merged)
        }
        return merged
    }

    /// Checks the interpreted properties of one layer. `source` names the layer in messages.
    public static func validate(
        _ properties: [String: String], source: String, codec: any JSONTextCodec.Type
    ) throws(BerthError) {
        func bad(_ key: String, _ value: String, _ what: String) -> BerthError {
            .invalidImage(
                "\(source) property \(key) \(quoted(value)) is not valid: \(what). Fix it with "
                    + "`glance image-update --property \(key)=...` or remove it")
        }
        if let value = properties[ImageProperty.diskBus], DiskBus(rawValue: value) == nil {
            throw bad(ImageProperty.diskBus, value, "allowed: \(DiskBus.allowedList)")
        }
        if let value = properties[ImageProperty.vifModel], VIFModel(rawValue: value) == nil {
            throw bad(ImageProperty.vifModel, value, "allowed: \(VIFModel.allowedList)")
        }
        if let value = properties[ImageProperty.machineType], !PropertyRules.isValidMachineType(value) {
            throw bad(ImageProperty.machineType, value, "use \(PropertyRules.machineTypeRule)")
        }
        if let value = properties[ImageProperty.vmMode], VMMode(name: value) == nil {
            throw bad(ImageProperty.vmMode, value, "allowed: \(VMMode.allowedList) (Berth runs no exe or uml guests)")
        }
        for key in [ImageProperty.kernelID, ImageProperty.ramdiskID] {
            if let value = properties[key], !value.isEmpty, !CatalogID.isValid(value) {
                throw bad(key, value, CatalogID.rule)
            }
        }
        if let value = properties[ImageProperty.bootOptions] {
            _ = try BootVariant.parseList(value, source: source, codec: codec)
        }
    }
}

/// Catalog ids (images, volumes, snapshots, kernels). The local catalog keeps one directory per id, so an id
/// must never be able to name a path: no `/`, no leading `.`.
public enum CatalogID {
    public static let maxLength = 255
    static let rule = "an id is 1-255 characters of letters, digits, '.', '_', '-', not starting with '.' or '-'"

    public static func isValid(_ id: String) -> Bool {
        guard let first = id.unicodeScalars.first, id.utf8.count <= maxLength, first != ".", first != "-" else {
            return false
        }
        return id.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-": true
            default: false
            }
        }
    }
}
