/// The result of the `describe_host` RPC. Codable with the wire's snake_case keys, so the RPC layer can encode
/// it as-is.
public struct HostDescription: Sendable, Equatable, Codable {
    public struct FreeCapacity: Sendable, Equatable, Codable {
        public var vcpus: Int
        public var memoryMB: Int

        public init(vcpus: Int, memoryMB: Int) {
            self.vcpus = vcpus
            self.memoryMB = memoryMB
        }

        enum CodingKeys: String, CodingKey {
            case vcpus
            case memoryMB = "memory_mb"
        }
    }

    public struct Versions: Sendable, Equatable, Codable {
        public var libvirt: String
        public var hypervisor: String

        public init(libvirt: String, hypervisor: String) {
            self.libvirt = libvirt
            self.hypervisor = hypervisor
        }
    }

    public var host: String
    public var architectures: [String]
    public var hypervisorTypes: [String]
    public var vmModes: [String]
    public var pae: Bool
    public var free: FreeCapacity
    public var version: Versions

    public init(
        host: String, architectures: [String], hypervisorTypes: [String], vmModes: [String], pae: Bool,
        free: FreeCapacity, version: Versions
    ) {
        self.host = host
        self.architectures = architectures
        self.hypervisorTypes = hypervisorTypes
        self.vmModes = vmModes
        self.pae = pae
        self.free = free
        self.version = version
    }

    /// Builds the description from what libvirt reported. Free vCPUs are the host's CPUs less those of running
    /// domains, never below zero: an overcommitted host has none free, not a negative number.
    public init(
        host: String, capabilities: HostCapabilities, nodeInfo: NodeInfo, freeMemoryBytes: UInt64,
        activeVcpus: Int, libvirtVersion: String, hypervisorVersion: String
    ) {
        self.init(
            host: host,
            architectures: capabilities.architectures,
            hypervisorTypes: capabilities.hypervisorTypes,
            vmModes: capabilities.vmModes,
            pae: capabilities.supportsPAE,
            free: FreeCapacity(
                vcpus: max(0, nodeInfo.cpus - activeVcpus),
                memoryMB: Int(freeMemoryBytes / (1024 * 1024))),
            version: Versions(libvirt: libvirtVersion, hypervisor: hypervisorVersion))
    }

    enum CodingKeys: String, CodingKey {
        case host
        case architectures
        case hypervisorTypes = "hypervisor_types"
        case vmModes = "vm_modes"
        case pae
        case free
        case version
    }
}

/// The host's size and what is left of it, for the worker's service reports.
public struct HostCapacity: Sendable, Equatable {
    public var vcpus: Int
    public var memoryMB: Int
    /// The host's CPUs less those of running domains, never below zero (an overcommitted host has none free).
    public var freeVcpus: Int
    public var freeMemoryMB: Int
    public var domains: Int

    public init(vcpus: Int, memoryMB: Int, freeVcpus: Int, freeMemoryMB: Int, domains: Int) {
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.freeVcpus = freeVcpus
        self.freeMemoryMB = freeMemoryMB
        self.domains = domains
    }
}
