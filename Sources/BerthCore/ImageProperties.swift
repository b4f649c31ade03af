/// Names of the Glance/Nova image properties Berth reads. Spelled as Glance and Nova spell them, so an image
/// prepared for Nova boots the same way here.
public enum ImageProperty {
    public static let kernelID = "kernel_id"
    public static let ramdiskID = "ramdisk_id"
    /// Replaces the default kernel command line (seed 000).
    public static let kernelArgs = "kernel_args"
    /// Appended to the command line (seed 000).
    public static let kernelExtraArgs = "kernel_extra_args"
    /// Nova's name for a full replacement command line; used when `kernel_args` is absent.
    public static let osCommandLine = "os_command_line"
    public static let diskBus = "hw_disk_bus"
    public static let vifModel = "hw_vif_model"
    public static let machineType = "hw_machine_type"
    public static let architecture = "architecture"
    public static let hypervisorType = "hypervisor_type"
    public static let vmMode = "vm_mode"
    /// JSON list of virt-image style boot variants (DESIGN §4).
    public static let bootOptions = "boot_options"
    public static let osType = "os_type"
    public static let osDistro = "os_distro"
    public static let rootDeviceName = "root_device_name"
    public static let blockDeviceMapping = "block_device_mapping"
    public static let bdmV2 = "bdm_v2"
    public static let baseImageRef = "base_image_ref"
    public static let instanceUUID = "instance_uuid"
    public static let imageType = "image_type"

    /// Every name above: the properties that mean something to Berth or Nova. Per-VM metadata may not set
    /// these unless `VMOverrides.allowedKeys` lists them.
    public static let known: Set<String> = [
        kernelID, ramdiskID, kernelArgs, kernelExtraArgs, osCommandLine, diskBus, vifModel, machineType,
        architecture, hypervisorType, vmMode, bootOptions, osType, osDistro, rootDeviceName, blockDeviceMapping,
        bdmV2, baseImageRef, instanceUUID, imageType,
    ]
}

/// `hw_disk_bus`: how the root disk is attached, which also decides its device name in the guest.
public enum DiskBus: String, Sendable, Hashable, CaseIterable {
    case virtio, scsi, sata, ide, xen, usb

    /// The guest's name prefix for disks on this bus, as libvirt's `<target dev>` and the Linux kernel use it.
    public var devicePrefix: String {
        switch self {
        case .virtio: "vd"
        case .scsi, .sata, .usb: "sd"
        case .ide: "hd"
        case .xen: "xvd"
        }
    }

    /// `/dev/vda` for the first disk: the default `root=` of the kernel command line.
    public var rootDevice: String { "/dev/\(devicePrefix)a" }

    static let allowedList = allCases.map(\.rawValue).joined(separator: ", ")
}

/// `hw_vif_model`: the emulated NIC.
public enum VIFModel: String, Sendable, Hashable, CaseIterable {
    case virtio, e1000, e1000e, rtl8139
    case ne2kPCI = "ne2k_pci"
    case pcnet, netfront

    /// libvirt's `<model type>`. libvirt takes Nova's names unchanged today; a property keeps a future
    /// rename in one place.
    public var libvirtModel: String { rawValue }

    static let allowedList = allCases.map(\.rawValue).joined(separator: ", ")
}

/// `vm_mode`: full virtualisation or Xen paravirtualisation (libvirt os type `hvm` / `xen`).
public enum VMMode: String, Sendable, Hashable, CaseIterable {
    case hvm, xen

    /// Nova still accepts pre-Folsom names on old images (`pv`, `hv`), and libvirt's old `linux` for Xen PV.
    public init?(name: String) {
        switch name.lowercased() {
        case "hvm", "hv": self = .hvm
        case "xen", "pv", "linux": self = .xen
        default: return nil
        }
    }

    static let allowedList = "hvm, xen"
}

/// Checks of single property values, shared by image properties, boot variants and per-VM metadata so the
/// same value is accepted or refused whichever layer it comes from.
enum PropertyRules {
    /// Machine types as QEMU names them (`pc`, `q35`, `pc-i440fx-7.2`, `virt-8.0`); lowercase only, so the name
    /// cannot carry anything libvirt would read as more than a machine name.
    static func isValidMachineType(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard let first = bytes.first, bytes.count <= 64, isLowerAlnum(first) else { return false }
        return bytes.dropFirst().allSatisfy {
            isLowerAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
                || $0 == UInt8(ascii: "-")
        }
    }

    static let machineTypeRule =
        "a QEMU machine type such as pc, q35, pc-i440fx-7.2 or pc-q35-7.2 "
        + "(lowercase letters, digits, '.', '_', '-'; at most 64 characters)"

    private static func isLowerAlnum(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}

extension Dictionary where Key == String, Value == String {
    /// Typed reads of the effective properties. They assume the values were validated by
    /// `EffectiveProperties`, so an invalid value reads as absent rather than failing twice.
    public var diskBus: DiskBus? { self[ImageProperty.diskBus].flatMap(DiskBus.init(rawValue:)) }
    public var vifModel: VIFModel? { self[ImageProperty.vifModel].flatMap(VIFModel.init(rawValue:)) }
    public var vmMode: VMMode? { self[ImageProperty.vmMode].flatMap(VMMode.init(name:)) }
    public var machineType: String? { self[ImageProperty.machineType] }
    public var kernelID: String? { nonEmpty(ImageProperty.kernelID) }
    public var ramdiskID: String? { nonEmpty(ImageProperty.ramdiskID) }
    public var architecture: String? { nonEmpty(ImageProperty.architecture) }
    public var hypervisorType: String? { nonEmpty(ImageProperty.hypervisorType) }

    /// Glance leaves `kernel_id` as an empty string when a kernel is unset through some clients; that means none.
    private func nonEmpty(_ key: String) -> String? {
        guard let value = self[key], !value.isEmpty else { return nil }
        return value
    }
}
