import BerthJSONValue

/// One way to boot a multi-hypervisor image (seed 004, virt-image's `<boot>` elements): the host it needs and
/// the kernel and disk bus it uses there. Parsed from the image property `boot_options`, a JSON list such as
/// `[{"hypervisor_type": "xen", "vm_mode": "xen", "architecture": "x86_64", "kernel_id": "..."}, ...]`.
public struct BootVariant: Sendable, Hashable, CustomStringConvertible {
    public var hypervisorType: String?
    public var vmMode: VMMode?
    public var architecture: String?
    /// Whether the variant's kernel is built with PAE (`true`), without (`false`), or either (nil).
    public var pae: Bool?
    public var kernelID: String?
    public var ramdiskID: String?
    public var kernelArgs: String?
    public var diskBus: DiskBus?

    public init(
        hypervisorType: String? = nil, vmMode: VMMode? = nil, architecture: String? = nil, pae: Bool? = nil,
        kernelID: String? = nil, ramdiskID: String? = nil, kernelArgs: String? = nil, diskBus: DiskBus? = nil
    ) {
        self.hypervisorType = hypervisorType
        self.vmMode = vmMode
        self.architecture = architecture
        self.pae = pae
        self.kernelID = kernelID
        self.ramdiskID = ramdiskID
        self.kernelArgs = kernelArgs
        self.diskBus = diskBus
    }

    /// Keys a variant object may hold; anything else is refused so a misspelt constraint cannot be ignored.
    public static let fields = [
        "hypervisor_type", "vm_mode", "architecture", "pae", "kernel_id", "ramdisk_id", "kernel_args", "hw_disk_bus",
    ]

    /// More variants than any real image needs; the bound keeps a hostile image from making every boot slow.
    public static let maxVariants = 16

    /// `xen/xen/x86_64` (hypervisor type / vm mode / architecture, `any` where unconstrained), plus `/pae` or
    /// `/nonpae` when the variant says. The order follows how operators name hosts: hypervisor first.
    public var description: String {
        var parts = [hypervisorType ?? "any", vmMode?.rawValue ?? "any", architecture ?? "any"]
        if let pae { parts.append(pae ? "pae" : "nonpae") }
        return parts.joined(separator: "/")
    }

    /// Whether the variant says anything about the host; one that does not runs anywhere.
    public var hasHostConstraints: Bool {
        hypervisorType != nil || vmMode != nil || architecture != nil || pae != nil
    }

    /// The image properties with this variant's values in place of the image's. Constraints are copied too, so
    /// the rest of the boot sees e.g. `vm_mode=xen` and picks the Xen console and bus.
    ///
    /// A variant that names a kernel brings its own ramdisk or none: an initrd built for the image's other kernel
    /// would carry modules the variant's kernel cannot load.
    public func applied(to properties: [String: String]) -> [String: String] {
        var result = properties
        result[ImageProperty.hypervisorType] = hypervisorType ?? result[ImageProperty.hypervisorType]
        result[ImageProperty.vmMode] = vmMode?.rawValue ?? result[ImageProperty.vmMode]
        result[ImageProperty.architecture] = architecture ?? result[ImageProperty.architecture]
        if let kernelID {
            result[ImageProperty.kernelID] = kernelID
            result[ImageProperty.ramdiskID] = ramdiskID
        } else if let ramdiskID {
            result[ImageProperty.ramdiskID] = ramdiskID
        }
        result[ImageProperty.kernelArgs] = kernelArgs ?? result[ImageProperty.kernelArgs]
        result[ImageProperty.diskBus] = diskBus?.rawValue ?? result[ImageProperty.diskBus]
        return result
    }

    /// The variant with the constraints it leaves open taken from the image's own `hypervisor_type`, `vm_mode`
    /// and `architecture`: a variant narrows the image, it does not lift what the image says about itself.
    public func inheritingConstraints(from properties: [String: String]) -> BootVariant {
        var result = self
        result.hypervisorType = hypervisorType ?? properties.hypervisorType?.lowercased()
        result.vmMode = vmMode ?? properties.vmMode
        result.architecture = architecture ?? properties.architecture?.lowercased()
        return result
    }

    /// The variant as a JSON object with Glance's property names, for RPC results and events.
    public var jsonValue: JSONValue {
        var object = JSONObject()
        func put(_ key: String, _ value: String?) { if let value { object[key] = .string(value) } }
        put("hypervisor_type", hypervisorType)
        put("vm_mode", vmMode?.rawValue)
        put("architecture", architecture)
        if let pae { object["pae"] = .bool(pae) }
        put(ImageProperty.kernelID, kernelID)
        put(ImageProperty.ramdiskID, ramdiskID)
        put(ImageProperty.kernelArgs, kernelArgs)
        put(ImageProperty.diskBus, diskBus?.rawValue)
        return .object(object)
    }

    /// Parses a `boot_options` value with `codec`. `source` names the image in messages. Throws `InvalidImage`
    /// naming the variant (1-based, as an operator counts) and the field.
    public static func parseList(
        _ text: String, source: String = "image", codec: any JSONTextCodec.Type
    ) throws(BerthError) -> [BootVariant] {
        let json: JSONValue
        do {
            json = try codec.parse(text, limits: .default)
        } catch {
            throw .invalidImage(
                "\(source) property boot_options is not valid JSON (\(error.message)); it must be a JSON list of "
                    + "variant objects")
        }
        guard case .array(let elements) = json else {
            throw .invalidImage(
                "\(source) property boot_options must be a JSON list of variant objects, got \(json.typeName)")
        }
        guard !elements.isEmpty else {
            throw .invalidImage(
                "\(source) property boot_options is an empty list; add at least one variant or remove the property")
        }
        guard elements.count <= maxVariants else {
            throw .invalidImage(
                "\(source) property boot_options has \(elements.count) variants; at most \(maxVariants) are allowed")
        }
        var variants: [BootVariant] = []
        for (offset, element) in elements.enumerated() {
            variants.append(try parse(element, at: "\(source) property boot_options variant \(offset + 1)"))
        }
        return variants
    }

    private static func parse(_ value: JSONValue, at path: String) throws(BerthError) -> BootVariant {
        guard case .object(let object) = value else {
            throw .invalidImage("\(path) must be an object, got \(value.typeName)")
        }
        for key in object.keys where !fields.contains(key) {
            throw .invalidImage(
                "\(path) has unknown field \(quoted(key)); allowed fields: \(fields.joined(separator: ", "))")
        }
        func string(_ key: String) throws(BerthError) -> String? {
            switch object[key] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            case let other?: throw .invalidImage("\(path) field \(key) must be a string, got \(other.typeName)")
            }
        }
        var variant = BootVariant()
        if let name = try string("hypervisor_type") {
            guard isPlainName(name) else {
                throw .invalidImage(
                    "\(path) field hypervisor_type \(quoted(name)) is not a name such as kvm, qemu, xen")
            }
            variant.hypervisorType = name.lowercased()
        }
        if let name = try string("vm_mode") {
            guard let mode = VMMode(name: name) else {
                throw .invalidImage(
                    "\(path) field vm_mode \(quoted(name)) is not valid; allowed: \(VMMode.allowedList)")
            }
            variant.vmMode = mode
        }
        if let name = try string("architecture") {
            guard isPlainName(name) else {
                throw .invalidImage("\(path) field architecture \(quoted(name)) is not a name such as x86_64, i686")
            }
            variant.architecture = name.lowercased()
        }
        switch object["pae"] {
        case nil, .null?: break
        case .bool(let flag)?: variant.pae = flag
        case let other?: throw .invalidImage("\(path) field pae must be true or false, got \(other.typeName)")
        }
        for key in [ImageProperty.kernelID, ImageProperty.ramdiskID] {
            if let id = try string(key) {
                guard CatalogID.isValid(id) else {
                    throw .invalidImage("\(path) field \(key) \(quoted(id)) is not valid: \(CatalogID.rule)")
                }
                if key == ImageProperty.kernelID { variant.kernelID = id } else { variant.ramdiskID = id }
            }
        }
        if let args = try string(ImageProperty.kernelArgs) {
            try KernelCommandLine.check(args, part: .image("\(path) field kernel_args"))
            variant.kernelArgs = args
        }
        if let name = try string(ImageProperty.diskBus) {
            guard let bus = DiskBus(rawValue: name) else {
                throw .invalidImage(
                    "\(path) field hw_disk_bus \(quoted(name)) is not valid; allowed: \(DiskBus.allowedList)")
            }
            variant.diskBus = bus
        }
        return variant
    }

    /// Hypervisor and architecture names are matched by the host check; here they only need to be a name.
    private static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 32
            && name.unicodeScalars.allSatisfy { scalar in
                switch scalar {
                case "a"..."z", "A"..."Z", "0"..."9", "_", "-": true
                default: false
                }
            }
    }
}

/// What the host can run. The worker makes libvirt's capabilities conform; tests use a fake host.
public protocol HostRunCheck: Sendable {
    /// Why a guest with these constraints cannot run here, empty when it can. nil means "any".
    func reasonsCannotRun(hypervisorType: String?, vmMode: String?, architecture: String?, pae: Bool?) -> [String]
}

/// The variant a boot uses (DESIGN §4): the first of `boot_options` this host can run, or the image's own
/// `architecture`/`hypervisor_type`/`vm_mode` checked as one implicit variant.
public struct BootVariantSelection: Sendable, Hashable {
    /// The chosen variant; nil when the image states no host constraints at all.
    public var variant: BootVariant?
    /// 1-based position in `boot_options`; nil for the implicit variant or none.
    public var index: Int?

    public init(variant: BootVariant?, index: Int?) {
        self.variant = variant
        self.index = index
    }

    /// `variant 2 (kvm/hvm/x86_64)` or `image properties (kvm/hvm/x86_64)`; nil when nothing was chosen.
    /// This is what goes into the RPC result's `boot_variant` and the domain metadata.
    public var summary: String? {
        guard let variant else { return nil }
        if let index { return "variant \(index) (\(variant))" }
        return "image properties (\(variant))"
    }

    /// Picks the variant before anything is created, so an image this host cannot run costs nothing.
    ///
    /// - Parameters:
    ///   - properties: the image layer (or the effective properties: the overrides cannot change what is checked
    ///     here).
    ///   - codec: parses `boot_options`.
    /// - Throws: `InvalidImage` for a malformed `boot_options`, `HostIncompatible` listing every variant and why
    ///   it cannot run.
    public static func select(
        properties: [String: String], host: some HostRunCheck, codec: any JSONTextCodec.Type
    ) throws(BerthError) -> BootVariantSelection {
        if let text = properties[ImageProperty.bootOptions] {
            let variants = try BootVariant.parseList(text, codec: codec)
            var rejections: [String] = []
            for (offset, listed) in variants.enumerated() {
                let variant = listed.inheritingConstraints(from: properties)
                let reasons = reasons(variant, host: host)
                if reasons.isEmpty {
                    return BootVariantSelection(variant: variant, index: offset + 1)
                }
                rejections.append("variant \(offset + 1) (\(variant)): \(reasons.joined(separator: ", "))")
            }
            throw .hostIncompatible(
                "no boot_options variant of the image can run on this host: \(rejections.joined(separator: "; ")). "
                    + "Boot it on a host that offers one of them, or add a variant for this host to boot_options")
        }
        let implicit = BootVariant(
            hypervisorType: properties.hypervisorType, vmMode: properties.vmMode,
            architecture: properties.architecture)
        guard implicit.hasHostConstraints else {
            return BootVariantSelection(variant: nil, index: nil)
        }
        let reasons = reasons(implicit, host: host)
        guard reasons.isEmpty else {
            throw .hostIncompatible(
                "the image cannot run on this host: image properties (\(implicit)): "
                    + "\(reasons.joined(separator: ", ")). Boot it on a host that offers them, or correct the "
                    + "image's architecture, hypervisor_type and vm_mode properties")
        }
        return BootVariantSelection(variant: implicit, index: nil)
    }

    private static func reasons(_ variant: BootVariant, host: some HostRunCheck) -> [String] {
        host.reasonsCannotRun(
            hypervisorType: variant.hypervisorType, vmMode: variant.vmMode?.rawValue,
            architecture: variant.architecture, pae: variant.pae)
    }
}
