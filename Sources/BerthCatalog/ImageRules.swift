import BerthCore
import BerthJSON

/// What the catalog accepts on write, checked before anything touches the disk. Glance's own limits
/// and reserved names where Glance has them, so an image that the local catalog stores can also be
/// stored in Glance unchanged.
enum ImageRules {
    static let diskFormats: [String] = ["raw", "qcow2", "aki", "ari", "ami", "iso", "vmdk", "vdi", "vhd"]
    static let containerFormats: [String] = ["bare", "aki", "ari", "ami", "ovf"]
    static let diskBuses: [String] = ["virtio", "scsi", "sata", "ide", "xen", "usb"]
    static let vmModes: [String] = ["hvm", "xen"]

    static let maxProperties = 128
    static let maxKeyBytes = 255
    static let maxValueBytes = 65535
    static let maxNameBytes = 255
    /// The kernel command line limit of DESIGN §4, applied to each part when it is stored.
    static let maxKernelArgumentBytes = 2048

    /// Glance's core attributes: as properties they would shadow or fight the real fields, and Glance
    /// refuses them ("Attribute ... is reserved").
    static let reservedKeys: Set<String> = [
        "id", "name", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "disk_format",
        "container_format", "min_disk", "min_ram", "created_at", "updated_at", "owner", "visibility", "protected",
        "os_hidden", "tags", "locations", "direct_url", "self", "file", "schema", "deleted", "deleted_at",
    ]

    static let kernelArgumentKeys: Set<String> = ["kernel_args", "kernel_extra_args", "os_command_line"]

    /// An id inside a property that must name an existing record; checked under the catalog lock,
    /// where the answer cannot change before the write lands.
    struct Reference: Sendable, Equatable {
        enum Target: Sendable, Equatable {
            case kernel, ramdisk, snapshot, volume
        }

        let target: Target
        /// Where the id was found, for the message: `kernel_id`, `boot_options[1].ramdisk_id`.
        let location: String
        let id: CatalogID

        /// For a kernel or ramdisk reference: the disk format the named image must have, and what it is called.
        var bootFile: (diskFormat: String, what: String)? {
            switch target {
            case .kernel: ("aki", "kernel")
            case .ramdisk: ("ari", "ramdisk")
            case .snapshot, .volume: nil
            }
        }

        /// The named kernel or ramdisk image, which `catalogName` ("the catalog", "Glance") did not find.
        func missingBootFile(in catalogName: String) -> CatalogError {
            guard let (wanted, what) = bootFile else { preconditionFailure("\(target) references name no boot file") }
            return .invalidProperty(
                "\(location) names image \(id), which is not in \(catalogName); upload the \(what) first "
                    + "(disk_format \(wanted)) and use its id")
        }

        /// Refuses a kernel or ramdisk reference to an image of another disk format.
        func checkBootFile(_ image: CatalogImage) throws(CatalogError) {
            guard let (wanted, what) = bootFile, image.diskFormat != wanted else { return }
            throw .invalidProperty(
                "\(location) names image \(id) (\(CatalogID.quoted(image.name))), which has disk_format "
                    + "\(image.diskFormat); a \(what) must be an image with disk_format \(wanted)")
        }
    }

    static func checkName(_ name: String, of what: String) throws(CatalogError) {
        guard !name.isEmpty, name.utf8.count <= maxNameBytes else {
            throw .invalidProperty(
                "\(what) name is \(name.utf8.count) bytes; give a name of 1 to \(maxNameBytes) bytes")
        }
        if let bad = name.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            throw .invalidProperty(
                "\(what) name \(CatalogID.quoted(name)) holds the control character \(bad.escaped(asASCII: true)); "
                    + "use printable characters only")
        }
    }

    static func checkFormats(disk: String, container: String) throws(CatalogError) {
        guard diskFormats.contains(disk) else {
            throw .invalidProperty(
                "disk_format \(CatalogID.quoted(disk)) is not supported; use one of "
                    + diskFormats.joined(separator: ", "))
        }
        guard containerFormats.contains(container) else {
            throw .invalidProperty(
                "container_format \(CatalogID.quoted(container)) is not supported; use one of "
                    + containerFormats.joined(separator: ", "))
        }
        // Glance's rule: the Amazon formats describe the whole image, so disk and container must agree.
        let amazon: Set = ["aki", "ari", "ami"]
        if (amazon.contains(disk) || amazon.contains(container)) && disk != container {
            throw .invalidProperty(
                "disk_format \(disk) with container_format \(container) is an invalid mix: when either is aki, ari "
                    + "or ami, both must be the same (a kernel is disk_format aki, container_format aki)")
        }
    }

    /// Checks a set of properties being written (new values only; what is already stored was checked when
    /// it was written) and returns the ids they reference.
    static func check(_ properties: [String: String]) throws(CatalogError) -> [Reference] {
        var references: [Reference] = []
        for key in properties.keys.sorted() {
            let value = properties[key]!
            try checkKey(key)
            guard value.utf8.count <= maxValueBytes else {
                throw .invalidProperty(
                    "property \(key) is \(value.utf8.count) bytes; values may be at most \(maxValueBytes) bytes")
            }
            guard !value.utf8.contains(0) else {
                throw .invalidProperty("property \(key) holds a NUL byte; property values are text without NUL")
            }
            references += try checkKnown(key: key, value: value)
        }
        return references
    }

    static func checkCount(_ count: Int) throws(CatalogError) {
        guard count <= maxProperties else {
            throw .invalidProperty(
                "the image would have \(count) properties; at most \(maxProperties) are allowed. Remove unused "
                    + "properties first")
        }
    }

    static func checkKey(_ key: String) throws(CatalogError) {
        let bytes = key.utf8
        guard !bytes.isEmpty, bytes.count <= maxKeyBytes else {
            throw .invalidProperty(
                "property name \(CatalogID.quoted(key)) is \(bytes.count) bytes; names are 1 to \(maxKeyBytes) bytes")
        }
        let allowed = bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"),
                UInt8(ascii: "-"):
                true
            default: false
            }
        }
        guard allowed else {
            throw .invalidProperty(
                "property name \(CatalogID.quoted(key)) has characters outside A-Z a-z 0-9 _ . : -; rename it")
        }
        guard !reservedKeys.contains(key) else {
            throw .invalidProperty(
                "property name \(key) is reserved for the image's own field (as in Glance); set the field instead "
                    + "or pick another name")
        }
    }

    private static func checkKnown(key: String, value: String) throws(CatalogError) -> [Reference] {
        switch key {
        case "kernel_id":
            return [try reference(value, location: key, target: .kernel)]
        case "ramdisk_id":
            return [try reference(value, location: key, target: .ramdisk)]
        case "hw_disk_bus":
            try checkChoice(value, location: key, among: diskBuses, meaning: "disk bus")
        case "vm_mode":
            try checkChoice(value, location: key, among: vmModes, meaning: "vm mode")
        case _ where kernelArgumentKeys.contains(key):
            try checkKernelArguments(value, location: key)
        case "boot_options":
            return try checkBootOptions(value)
        case "block_device_mapping":
            return try checkBlockDeviceMapping(value)
        default:
            break
        }
        return []
    }

    private static func reference(_ value: String, location: String, target: Reference.Target) throws(CatalogError)
        -> Reference
    {
        guard let id = CatalogID(value) else {
            let what =
                switch target {
                case .kernel: "the id of a kernel image (disk_format aki)"
                case .ramdisk: "the id of a ramdisk image (disk_format ari)"
                case .snapshot: "the id of a volume snapshot"
                case .volume: "the id of a volume"
                }
            throw .invalidProperty("\(location) is \(CatalogID.quoted(value)), not a UUID; it must be \(what)")
        }
        return Reference(target: target, location: location, id: id)
    }

    private static func checkChoice(_ value: String, location: String, among choices: [String], meaning: String)
        throws(CatalogError)
    {
        guard choices.contains(value) else {
            throw .invalidProperty(
                "\(location)=\(CatalogID.quoted(value)) is not a \(meaning) Berth knows; use one of "
                    + choices.joined(separator: ", "))
        }
    }

    private static func checkKernelArguments(_ value: String, location: String) throws(CatalogError) {
        guard value.utf8.count <= maxKernelArgumentBytes else {
            throw .invalidProperty(
                "\(location) is \(value.utf8.count) bytes; a kernel command line may be at most "
                    + "\(maxKernelArgumentBytes) bytes")
        }
        if let bad = value.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            throw .invalidProperty(
                "\(location) holds the control character \(bad.escaped(asASCII: true)); a kernel command line is "
                    + "one line of printable text")
        }
    }

    /// `boot_options`: the virt-image variants of DESIGN §4, a JSON list of objects.
    private static func checkBootOptions(_ value: String) throws(CatalogError) -> [Reference] {
        let variants = try jsonListOfObjects(
            value, key: "boot_options",
            example: #"[{"hypervisor_type": "qemu", "vm_mode": "hvm", "architecture": "x86_64"}]"#)
        var references: [Reference] = []
        for (index, variant) in variants.enumerated() {
            let place = "boot_options[\(index)]"
            for field in ["kernel_id", "ramdisk_id", "hw_disk_bus", "vm_mode", "kernel_args"] {
                guard let member = variant[field], !member.isNull else { continue }
                guard let text = member.stringValue else {
                    throw .invalidProperty("\(place).\(field) is a \(member.typeName); it must be a string")
                }
                switch field {
                case "kernel_id": references.append(try reference(text, location: "\(place).\(field)", target: .kernel))
                case "ramdisk_id":
                    references.append(try reference(text, location: "\(place).\(field)", target: .ramdisk))
                case "hw_disk_bus":
                    try checkChoice(text, location: "\(place).\(field)", among: diskBuses, meaning: "disk bus")
                case "vm_mode": try checkChoice(text, location: "\(place).\(field)", among: vmModes, meaning: "vm mode")
                default: try checkKernelArguments(text, location: "\(place).\(field)")
                }
            }
        }
        return references
    }

    /// `block_device_mapping`: Nova's image BDM list (DESIGN §5); the snapshots and volumes it names must
    /// exist, which is also what lets the catalog refuse to delete them later.
    private static func checkBlockDeviceMapping(_ value: String) throws(CatalogError) -> [Reference] {
        let mappings = try jsonListOfObjects(
            value, key: "block_device_mapping",
            example: #"[{"source_type": "snapshot", "destination_type": "volume", "snapshot_id": "<uuid>", "#
                + #""boot_index": 0}]"#)
        var references: [Reference] = []
        for (index, mapping) in mappings.enumerated() {
            for (field, target) in [("snapshot_id", Reference.Target.snapshot), ("volume_id", .volume)] {
                guard let member = mapping[field], !member.isNull else { continue }
                let place = "block_device_mapping[\(index)].\(field)"
                guard let text = member.stringValue else {
                    throw .invalidProperty("\(place) is a \(member.typeName); it must be a string id")
                }
                references.append(try reference(text, location: place, target: target))
            }
        }
        return references
    }

    private static func jsonListOfObjects(_ value: String, key: String, example: String) throws(CatalogError)
        -> [JSONObject]
    {
        let parsed: JSONValue
        do {
            parsed = try JSONCodec.parse(value)
        } catch {
            throw .invalidProperty("\(key) is not JSON (\(error.message)); it must be a JSON list such as \(example)")
        }
        guard let list = parsed.arrayValue else {
            throw .invalidProperty("\(key) is a JSON \(parsed.typeName); it must be a JSON list such as \(example)")
        }
        var objects: [JSONObject] = []
        for (index, element) in list.enumerated() {
            guard let object = element.objectValue else {
                throw .invalidProperty(
                    "\(key)[\(index)] is a JSON \(element.typeName); every element must be an object, as in \(example)")
            }
            objects.append(object)
        }
        return objects
    }

    /// The snapshot and volume ids a stored `block_device_mapping` names; unreadable values name none
    /// (they were validated on write, so only a hand-edited record can have one).
    static func blockDeviceReferences(_ properties: [String: String]) -> (snapshots: Set<String>, volumes: Set<String>)
    {
        guard let value = properties["block_device_mapping"],
            let list = (try? JSONCodec.parse(value))?.arrayValue
        else { return ([], []) }
        var snapshots: Set<String> = []
        var volumes: Set<String> = []
        for mapping in list {
            if let id = mapping["snapshot_id"]?.stringValue.flatMap(CatalogID.init) { snapshots.insert(id.value) }
            if let id = mapping["volume_id"]?.stringValue.flatMap(CatalogID.init) { volumes.insert(id.value) }
        }
        return (snapshots, volumes)
    }
}
