/// Everything Berth decides about a libvirt domain, before it is XML. The worker fills in the host-side parts
/// (pool, paths, domain type); `DomainXML.render` turns it into libvirt's domain XML.
public struct DomainSpec: Sendable, Hashable {
    /// libvirt `<domain type>`. `test` is the in-process test driver; `qemu` is TCG, `kvm` needs /dev/kvm.
    public enum DomainType: String, Sendable, Hashable, CaseIterable {
        case qemu, kvm, xen, test
    }

    public enum Boot: Sendable, Hashable {
        /// Direct kernel boot (seed 003): host paths of the cached kernel and ramdisk, and the command line.
        case kernel(kernelPath: String, initrdPath: String?, cmdline: String)
        /// Boot from the first disk.
        case disk
    }

    public enum Clock: Sendable, Hashable {
        case utc
        /// `<clock offset='timezone' timezone='Europe/Paris'/>`: the guest's RTC runs in that zone.
        case timezone(Timezone)

        /// UTC unless the metadata named a zone; a zone of `UTC` is the same thing, written the plain way.
        public init(_ timezone: Timezone?) {
            if let timezone, timezone.name != "UTC" {
                self = .timezone(timezone)
            } else {
                self = .utc
            }
        }
    }

    public enum Network: Sendable, Hashable {
        /// No NIC: boots do not wire networking yet (DESIGN leaves it to a later module).
        case none
        /// QEMU user-mode networking (SLIRP): outbound only, needs no host set-up.
        case user(model: VIFModel)
        /// A NIC on a libvirt network (e.g. `default`).
        case network(name: String, model: VIFModel)
    }

    public static let namePrefix = "berth-"

    /// Instance uuid, canonical lowercase; also the libvirt domain uuid.
    public var uuid: String
    public var vcpus: Int
    public var memoryMB: Int
    public var domainType: DomainType
    public var osType: VMMode
    /// libvirt guest arch (`x86_64`); nil lets libvirt choose the host's.
    public var architecture: String?
    /// QEMU machine type (`q35`); nil lets libvirt choose its default.
    public var machineType: String?
    public var boot: Boot
    public var disks: [DiskSpec]
    public var network: Network
    public var clock: Clock
    /// Host path the serial console is written to; nil for none.
    public var consoleLogPath: String?
    public var metadata: DomainMetadata

    public init(
        uuid: String, vcpus: Int, memoryMB: Int, domainType: DomainType, osType: VMMode = .hvm,
        architecture: String? = nil, machineType: String? = nil, boot: Boot = .disk, disks: [DiskSpec],
        network: Network = .none, clock: Clock = .utc, consoleLogPath: String? = nil, metadata: DomainMetadata
    ) {
        self.uuid = uuid
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.domainType = domainType
        self.osType = osType
        self.architecture = architecture
        self.machineType = machineType
        self.boot = boot
        self.disks = disks
        self.network = network
        self.clock = clock
        self.consoleLogPath = consoleLogPath
        self.metadata = metadata
    }

    /// `berth-<uuid>`: unique per instance, and recognisable among other domains on the host.
    public var name: String { Self.namePrefix + uuid }

    /// libvirt `<target dev>` for each disk, in order: vda, vdb, sda, ... Buses that share a prefix (scsi, sata
    /// and usb all use `sd`) count together, as the guest kernel names them.
    public var diskTargets: [String] {
        var used: [String: Int] = [:]
        return disks.map { disk in
            let prefix = disk.bus.devicePrefix
            let index = used[prefix, default: 0]
            used[prefix] = index + 1
            return prefix + DiskSpec.letters(index)
        }
    }

    /// What the boot request determined, without the request id, one line per field, values escaped so no value
    /// can imitate another field. The worker stores its digest (`SHA256Digest.fingerprint`) in the domain
    /// metadata: a redelivered or retried request produces the same fingerprint and is answered as a repeat; any
    /// other difference means `InstanceExists`, and the check works from the existing domain alone.
    public var canonicalText: String {
        var lines: [String] = []
        func put(_ key: String, _ value: String?) {
            lines.append(key + "=" + (value.map { quoted($0, limit: .max) } ?? "nil"))
        }
        put("uuid", uuid)
        put("vcpus", String(vcpus))
        put("memory_mb", String(memoryMB))
        put("domain_type", domainType.rawValue)
        put("os_type", osType.rawValue)
        put("arch", architecture)
        put("machine", machineType)
        switch boot {
        case .disk:
            put("boot", "disk")
        case .kernel(let kernel, let initrd, let cmdline):
            put("boot", "kernel")
            put("kernel", kernel)
            put("initrd", initrd)
            put("cmdline", cmdline)
        }
        for (index, disk) in disks.enumerated() {
            put("disk\(index)", disk.canonicalText)
        }
        switch network {
        case .none: put("network", "none")
        case .user(let model): put("network", "user/" + model.rawValue)
        case .network(let name, let model): put("network", "network/" + name + "/" + model.rawValue)
        }
        switch clock {
        case .utc: put("clock", "utc")
        case .timezone(let zone): put("clock", zone.name)
        }
        put("console", consoleLogPath)
        put("image_id", metadata.imageID)
        put("instance_name", metadata.instanceName)
        let flavor = metadata.flavor
        put("flavor", "\(flavor.name)/\(flavor.vcpus)/\(flavor.memoryMB)/\(flavor.rootGB)")
        put("project_id", metadata.projectID)
        put("volume_id", metadata.volumeID)
        put("boot_variant", metadata.bootVariant)
        return lines.joined(separator: "\n")
    }

    /// Refuses values libvirt or XML cannot hold, with a message; run before rendering. Paths come from the
    /// worker, not the request, so a bad one is a `BuildFailed` (a worker configuration problem).
    public func validate() throws(BerthError) {
        guard BootRequest.isCanonicalUUID(uuid) else {
            throw .invalidRequest("domain uuid \(quoted(uuid)) is not a canonical lowercase UUID")
        }
        guard (1...Flavor.maxVCPUs).contains(vcpus), (Flavor.minMemoryMB...Flavor.maxMemoryMB).contains(memoryMB)
        else {
            throw .invalidRequest(
                "domain needs 1-\(Flavor.maxVCPUs) vcpus and \(Flavor.minMemoryMB)-\(Flavor.maxMemoryMB) MiB, got "
                    + "\(vcpus) vcpus and \(memoryMB) MiB")
        }
        if let machineType, !PropertyRules.isValidMachineType(machineType) {
            throw .invalidImage(
                "machine type \(quoted(machineType)) is not valid; use \(PropertyRules.machineTypeRule)")
        }
        var paths: [(String, String)] = disks.map { ("disk source", $0.source.pathOrName) }
        if case .kernel(let kernel, let initrd, let cmdline) = boot {
            paths.append(("kernel path", kernel))
            if let initrd { paths.append(("initrd path", initrd)) }
            try KernelCommandLine.check(cmdline, part: .image("kernel command line"))
        }
        if let consoleLogPath { paths.append(("console log path", consoleLogPath)) }
        if case .network(let name, _) = network { paths.append(("network name", name)) }
        for (what, value) in paths where value.isEmpty || value.unicodeScalars.contains(where: isControl) {
            throw .buildFailed(
                "\(what) \(quoted(value)) is empty or holds control characters; check the worker's storage "
                    + "configuration")
        }
        guard !disks.isEmpty || boot != .disk else {
            throw .buildFailed("domain has no disk to boot from; this is a bug in the boot handler")
        }
        try metadata.validate()
    }
}

/// One disk of the domain. Storage is described apart from how it maps into the guest (seed 004): `source`
/// and `format` are the host side, `bus` and `device` the guest side.
public struct DiskSpec: Sendable, Hashable {
    public enum Source: Sendable, Hashable {
        /// A volume in a libvirt storage pool: the copy-on-write overlay over a cached image, or a volume.
        case volume(pool: String, name: String)
        case file(path: String)
        case block(path: String)

        var pathOrName: String {
            switch self {
            // An empty pool or volume name reads as empty, which `validate` refuses.
            case .volume(let pool, let name): pool.isEmpty ? "" : name
            case .file(let path), .block(let path): path
            }
        }
    }

    public enum Format: String, Sendable, Hashable, CaseIterable {
        case qcow2, raw
    }

    public enum Device: String, Sendable, Hashable {
        case disk
        /// A read-only ISO, such as a config drive.
        case cdrom
    }

    public var source: Source
    public var format: Format
    public var bus: DiskBus
    public var device: Device
    public var readOnly: Bool

    public init(source: Source, format: Format, bus: DiskBus, device: Device = .disk, readOnly: Bool = false) {
        self.source = source
        self.format = format
        self.bus = bus
        self.device = device
        self.readOnly = readOnly || device == .cdrom
    }

    /// `a`…`z`, then `aa`, `ab`, … as the Linux kernel names disks past the 26th.
    static func letters(_ index: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz")
        var result = String(alphabet[index % 26])
        var rest = index / 26
        while rest > 0 {
            result = String(alphabet[(rest - 1) % 26]) + result
            rest = (rest - 1) / 26
        }
        return result
    }

    var canonicalText: String {
        let location: String
        switch source {
        case .volume(let pool, let name):
            location = "volume:" + quoted(pool, limit: .max) + ":" + quoted(name, limit: .max)
        case .file(let path): location = "file:" + quoted(path, limit: .max)
        case .block(let path): location = "block:" + quoted(path, limit: .max)
        }
        return [location, format.rawValue, bus.rawValue, device.rawValue, readOnly ? "ro" : "rw"].joined(separator: ",")
    }
}
