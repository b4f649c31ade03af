/// The size of an instance, as Nova's flavor: name, vcpus, memory and root disk.
public struct Flavor: Sendable, Hashable, CustomStringConvertible {
    /// QEMU's `-smp` limit for the i440fx and q35 machines most guests use.
    public static let maxVCPUs = 256
    /// Below 64 MiB no current distribution kernel boots.
    public static let minMemoryMB = 64
    /// 1 TiB: far above any host here; a typo in the unit (GB given as MB × 1024) trips it.
    public static let maxMemoryMB = 1_048_576
    /// 64 TiB, the largest qcow2 image QEMU creates by default.
    public static let maxRootGB = 65536
    public static let maxNameLength = 255
    static let nameRule =
        "1-255 characters of letters, digits, '.', '_', '-' and spaces, not starting or ending "
        + "with a space (Nova's flavor name rule)"

    public var name: String
    public var vcpus: Int
    public var memoryMB: Int
    /// 0 means "the image's size", as in Nova.
    public var rootGB: Int

    /// Unchecked; use `validated()` or `BootRequest.decode` for input from the bus.
    public init(name: String, vcpus: Int, memoryMB: Int, rootGB: Int) {
        self.name = name
        self.vcpus = vcpus
        self.memoryMB = memoryMB
        self.rootGB = rootGB
    }

    /// `m1.small (1 vcpu, 512 MiB, 1 GB)`.
    public var description: String {
        "\(name) (\(vcpus) vcpu\(vcpus == 1 ? "" : "s"), \(memoryMB) MiB, \(rootGB) GB)"
    }

    /// Throws `InvalidRequest` naming the field under `path` (`instance.flavor.vcpus`).
    public func validate(path: String = "flavor") throws(BerthError) {
        guard Self.isValidName(name) else {
            throw .invalidRequest("\(path).name must be \(Self.nameRule), got \(quoted(name))")
        }
        guard (1...Self.maxVCPUs).contains(vcpus) else {
            throw .invalidRequest("\(path).vcpus must be an integer 1-\(Self.maxVCPUs), got \(vcpus)")
        }
        guard (Self.minMemoryMB...Self.maxMemoryMB).contains(memoryMB) else {
            throw .invalidRequest(
                "\(path).memory_mb must be an integer \(Self.minMemoryMB)-\(Self.maxMemoryMB) (MiB), got \(memoryMB)")
        }
        guard (0...Self.maxRootGB).contains(rootGB) else {
            throw .invalidRequest("\(path).root_gb must be an integer 0-\(Self.maxRootGB) (GB), got \(rootGB)")
        }
    }

    static func isValidName(_ name: String) -> Bool {
        guard !name.isEmpty, name.count <= maxNameLength, name.first != " ", name.last != " " else { return false }
        return name.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-", " ": true
            default: false
            }
        }
    }
}
