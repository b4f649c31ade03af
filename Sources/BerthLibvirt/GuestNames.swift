/// The names operators put in Glance image properties (`architecture`, `hypervisor_type`, `vm_mode`), reduced
/// to the names libvirt's capabilities use. Follows Nova's `canonicalize` rules so an image that Nova would
/// place is accepted here too. Pure: no C, no I/O.
public enum GuestNames {
    /// Nova's architecture list.
    static let architectures: Set<String> = [
        "alpha", "armv6", "armv7l", "armv7b", "aarch64", "cris", "i686", "ia64", "lm32", "m68k", "microblaze",
        "microblazeel", "mips", "mipsel", "mips64", "mips64el", "openrisc", "parisc", "parisc64", "ppc", "ppcle",
        "ppc64", "ppc64le", "ppcemb", "riscv32", "riscv64", "s390", "s390x", "sh4", "sh4eb", "sparc", "sparc64",
        "unicore32", "x86_64", "xtensa", "xtensaeb",
    ]

    static let architectureAliases: [String: String] = [
        "i386": "i686", "i486": "i686", "i586": "i686", "x86": "i686",
        // Xen called 32-bit x86 this before Icehouse; Nova still accepts it.
        "x86_32": "i686", "x86_32p": "i686",
        "amd64": "x86_64", "x64": "x86_64", "x86-64": "x86_64",
        "arm64": "aarch64",
    ]

    /// libvirt domain types and Nova's hypervisor types.
    static let hypervisorTypes: Set<String> = [
        "qemu", "kqemu", "kvm", "xen", "lxc", "uml", "openvz", "test", "vmware", "hyperv", "vbox", "phyp",
        "parallels", "virtuozzo", "vz", "bhyve", "baremetal", "ironic", "docker", "fake", "lxd", "zvm", "powervm",
    ]

    static let hypervisorTypeAliases: [String: String] = ["xapi": "xen"]

    static let vmModes: Set<String> = ["hvm", "xen", "uml", "exe"]

    static let vmModeAliases: [String: String] = [
        // Pre-Folsom Nova names, still found on old images.
        "pv": "xen", "hv": "hvm", "baremetal": "hvm",
        // libvirt's older name for a Xen paravirtual guest's os_type.
        "linux": "xen",
    ]

    /// `x86_64` for "AMD64", nil for a name that is no architecture.
    public static func architecture(_ name: String) -> String? {
        canonical(name, valid: architectures, aliases: architectureAliases)
    }

    public static func hypervisorType(_ name: String) -> String? {
        canonical(name, valid: hypervisorTypes, aliases: hypervisorTypeAliases)
    }

    /// `xen` for the legacy "pv", nil for a name that is no vm mode.
    public static func vmMode(_ name: String) -> String? {
        canonical(name, valid: vmModes, aliases: vmModeAliases)
    }

    private static func canonical(_ name: String, valid: Set<String>, aliases: [String: String]) -> String? {
        let lowered = name.trimmingSpaces().lowercased()
        let resolved = aliases[lowered] ?? lowered
        return valid.contains(resolved) ? resolved : nil
    }
}

extension String {
    fileprivate func trimmingSpaces() -> Substring {
        let start = firstIndex { !$0.isWhitespace } ?? endIndex
        let end = lastIndex { !$0.isWhitespace }.map(index(after:)) ?? start
        return self[start..<end]
    }
}
