/// The boot request's per-VM `metadata` (seed 000: "Kernel Args per VM"): six keys override the image for this
/// instance; every other key is stored with the instance and handed to the guest, never interpreted.
///
/// Limits, as Nova's server metadata with one exception:
/// - at most 128 keys (Nova's default `metadata_items` quota);
/// - keys 1–255 bytes of `A–Z a–z 0–9 - _ : .` and space (Nova's server-metadata key pattern);
/// - values at most 65535 bytes (Nova allows 255, too short for a 2048-byte `kernel_args`), with no control
///   characters other than tab, line feed and carriage return (the guest reads them from JSON, and libvirt's
///   XML cannot hold the others).
///
/// Keys that name an image property Berth or Nova interprets (`kernel_id`, `vm_mode`, ...) or start with
/// `hw_` or `kernel_` but are not overridable are refused rather than stored: a typo such as `hw_disk_buss`
/// would otherwise be silently ignored and the VM would boot with the image's bus.
public struct VMOverrides: Sendable, Equatable, Hashable {
    public static let maxKeys = 128
    public static let maxKeyBytes = 255
    public static let maxValueBytes = 65535

    /// The keys that override the image, in the order messages list them.
    public static let allowedKeys = [
        ImageProperty.kernelArgs, ImageProperty.kernelExtraArgs, "timezone", ImageProperty.diskBus,
        ImageProperty.vifModel, ImageProperty.machineType,
    ]

    public var kernelArgs: String?
    public var kernelExtraArgs: String?
    public var timezone: Timezone?
    public var diskBus: DiskBus?
    public var vifModel: VIFModel?
    public var machineType: String?
    /// Every key that is not an override, as given.
    public var stored: [String: String]

    /// Unchecked; `init(metadata:)` is the way in for input from the bus.
    public init(
        kernelArgs: String? = nil, kernelExtraArgs: String? = nil, timezone: Timezone? = nil, diskBus: DiskBus? = nil,
        vifModel: VIFModel? = nil, machineType: String? = nil, stored: [String: String] = [:]
    ) {
        self.kernelArgs = kernelArgs
        self.kernelExtraArgs = kernelExtraArgs
        self.timezone = timezone
        self.diskBus = diskBus
        self.vifModel = vifModel
        self.machineType = machineType
        self.stored = stored
    }

    /// Validates the whole metadata dictionary and interprets the override keys. Throws `InvalidMetadata` naming
    /// the key, the problem and what is allowed.
    public init(metadata: [String: String]) throws(BerthError) {
        self.init()
        guard metadata.count <= Self.maxKeys else {
            throw .invalidMetadata(
                "metadata has \(metadata.count) keys; at most \(Self.maxKeys) are allowed. Store fewer keys")
        }
        // Sorted so that, of several bad keys, the same one is reported every time.
        for key in metadata.keys.sorted() {
            let value = metadata[key]!
            try Self.checkKey(key)
            try Self.checkValue(value, key: key)
            try interpret(key: key, value: value)
        }
    }

    private mutating func interpret(key: String, value: String) throws(BerthError) {
        switch key {
        case ImageProperty.kernelArgs:
            try KernelCommandLine.check(value, part: .metadata(key))
            kernelArgs = value.isEmpty ? nil : value
        case ImageProperty.kernelExtraArgs:
            try KernelCommandLine.check(value, part: .metadata(key))
            kernelExtraArgs = value.isEmpty ? nil : value
        case "timezone":
            timezone = try Timezone(validating: value)
        case ImageProperty.diskBus:
            guard let bus = DiskBus(rawValue: value) else {
                throw .invalidMetadata(
                    "metadata hw_disk_bus \(quoted(value)) is not a disk bus; allowed: \(DiskBus.allowedList)")
            }
            diskBus = bus
        case ImageProperty.vifModel:
            guard let model = VIFModel(rawValue: value) else {
                throw .invalidMetadata(
                    "metadata hw_vif_model \(quoted(value)) is not a NIC model; allowed: \(VIFModel.allowedList)")
            }
            vifModel = model
        case ImageProperty.machineType:
            guard PropertyRules.isValidMachineType(value) else {
                throw .invalidMetadata(
                    "metadata hw_machine_type \(quoted(value)) is not valid; use \(PropertyRules.machineTypeRule)")
            }
            machineType = value
        default:
            if Self.isReserved(key) {
                throw .invalidMetadata(
                    "metadata key \(quoted(key)) names an image property that cannot be set per VM; the keys that "
                        + "override the image are: \(Self.allowedKeys.joined(separator: ", ")). Fix the key, or "
                        + "set the property on the image (`glance image-update --property`)")
            }
            stored[key] = value
        }
    }

    static func isReserved(_ key: String) -> Bool {
        ImageProperty.known.contains(key) || key.hasPrefix("hw_") || key.hasPrefix("kernel_")
            || key.hasPrefix("ramdisk_")
    }

    private static func checkKey(_ key: String) throws(BerthError) {
        let bytes = key.utf8.count
        guard bytes >= 1, bytes <= maxKeyBytes else {
            throw .invalidMetadata(
                "metadata key \(quoted(key)) is \(bytes) bytes; keys must be 1-\(maxKeyBytes) bytes")
        }
        let allowed = key.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ":", ".", " ": true
            default: false
            }
        }
        guard allowed else {
            throw .invalidMetadata(
                "metadata key \(quoted(key)) has characters outside A-Z a-z 0-9 - _ : . and space; rename the key")
        }
    }

    private static func checkValue(_ value: String, key: String) throws(BerthError) {
        let bytes = value.utf8.count
        guard bytes <= maxValueBytes else {
            throw .invalidMetadata(
                "metadata \(quoted(key)) value is \(bytes) bytes; values may be at most \(maxValueBytes) bytes")
        }
        for scalar in value.unicodeScalars
        where (isControl(scalar) && scalar != "\t" && scalar != "\n" && scalar != "\r")
            || !XMLWriter.isAllowed(scalar)
        {
            throw .invalidMetadata(
                "metadata \(quoted(key)) value contains \(describeCharacter(scalar)); remove control characters "
                    + "(only tab, line feed and carriage return are allowed)")
        }
    }

    /// The overrides as image properties (`hw_disk_bus` → `virtio`, ...), the top layer of the effective
    /// properties. The timezone has no Glance property and stays out.
    public var properties: [String: String] {
        var result: [String: String] = [:]
        result[ImageProperty.kernelArgs] = kernelArgs
        result[ImageProperty.kernelExtraArgs] = kernelExtraArgs
        result[ImageProperty.diskBus] = diskBus?.rawValue
        result[ImageProperty.vifModel] = vifModel?.rawValue
        result[ImageProperty.machineType] = machineType
        return result
    }
}

/// An IANA time zone name for `<clock offset='timezone'>`. Checked by shape, not against a tz database: the
/// worker has no business reading /usr/share/zoneinfo from pure code, and QEMU falls back to UTC for a name it
/// does not know, which is the documented default anyway.
public struct Timezone: Sendable, Hashable, CustomStringConvertible {
    public let name: String

    public static let maxLength = 64
    /// The IANA areas (the first part of `Area/Location`).
    public static let areas = [
        "Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific",
        "Etc",
    ]
    /// Names accepted without an area.
    public static let bareNames = ["UTC", "GMT"]

    public init(validating name: String) throws(BerthError) {
        let rule =
            "an IANA time zone name such as Europe/Paris, America/Argentina/Buenos_Aires or UTC: Area/Location "
            + "with Area one of \(Self.areas.joined(separator: ", ")), letters, digits and _ + - only, at most "
            + "\(Self.maxLength) characters"
        guard !Self.bareNames.contains(name) else {
            self.name = name
            return
        }
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard name.utf8.count <= Self.maxLength, parts.count >= 2, Self.areas.contains(String(parts[0])) else {
            throw .invalidMetadata("metadata timezone \(quoted(name)) is not valid; use \(rule)")
        }
        for part in parts.dropFirst() {
            // Each part starts with a letter, which also rules out "." and ".." path tricks.
            guard let first = part.unicodeScalars.first, isASCIILetter(first),
                part.unicodeScalars.allSatisfy(isTimezoneCharacter)
            else {
                throw .invalidMetadata("metadata timezone \(quoted(name)) is not valid; use \(rule)")
            }
        }
        self.name = name
    }

    public var description: String { name }
}

private func isASCIILetter(_ scalar: Unicode.Scalar) -> Bool {
    ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
}

private func isTimezoneCharacter(_ scalar: Unicode.Scalar) -> Bool {
    isASCIILetter(scalar) || ("0"..."9").contains(scalar) || scalar == "_" || scalar == "+" || scalar == "-"
}
