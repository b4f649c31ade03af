import Testing

@testable import BerthLibvirt

@Suite("Capabilities parser")
struct HostCapabilitiesParserTests {
    @Test func testDriverDocument() throws {
        let caps = try HostCapabilities.parse(xml: testDriverCapabilities)
        #expect(caps.hostArchitecture == "i686")
        #expect(caps.hostCPUFeatures == ["pae", "nonpae"])
        #expect(caps.guests.count == 2)
        #expect(
            caps.guests.first
                == GuestCapability(
                    osType: "hvm", arch: "i686", wordsize: 32, emulator: "/usr/bin/test-hv", domainTypes: ["test"],
                    features: ["pae", "nonpae"]))
        #expect(caps.architectures == ["i686"])
        #expect(caps.hypervisorTypes == ["test"])
        #expect(caps.vmModes == ["hvm", "xen"])
        #expect(caps.supportsPAE)
    }

    @Test func qemuHostDocument() throws {
        let caps = try HostCapabilities.parse(xml: qemuHostCapabilities)
        #expect(caps.hostArchitecture == "x86_64")
        #expect(caps.hostCPUModel == "Skylake-Client-noTSX-IBRS")
        #expect(caps.hostCPUFeatures == ["ds", "acpi", "ss", "vmx", "pdcm", "pdpe1gb", "invtsc"])
        #expect(caps.guests.map(\.arch) == ["i686", "x86_64"])
        #expect(caps.guests.allSatisfy { $0.domainTypes == ["qemu", "kvm"] && $0.osType == "hvm" })
        #expect(caps.guests[0].machines == ["pc-q35-7.2", "q35", "pc-i440fx-7.2", "pc", "isapc"])
        #expect(caps.guests[0].features.prefix(2) == ["pae", "nonpae"])
        #expect(caps.guests[1].wordsize == 64)
        #expect(caps.guests[1].emulator == "/usr/bin/qemu-system-x86_64")
        #expect(caps.architectures == ["i686", "x86_64"])
        #expect(caps.hypervisorTypes == ["qemu", "kvm"])
        #expect(caps.vmModes == ["hvm"])
        #expect(caps.supportsPAE)
    }

    @Test func xenHostDocument() throws {
        let caps = try HostCapabilities.parse(xml: xenHostCapabilities)
        #expect(caps.hostCPUFeatures == ["vmx"])
        #expect(caps.guests.map(\.osType) == ["xen", "xen", "hvm", "hvm"])
        #expect(caps.guests[1].features == ["pae"])
        #expect(caps.architectures == ["x86_64", "i686"])
        #expect(caps.hypervisorTypes == ["xen"])
        #expect(caps.vmModes == ["xen", "hvm"])
    }

    @Test func legacyLinuxOSTypeIsXen() throws {
        let xml = """
            <capabilities><host><cpu><arch>x86_64</arch></cpu></host>
            <guest><os_type>linux</os_type><arch name='x86_64'><domain type='xen'/></arch></guest></capabilities>
            """
        let caps = try HostCapabilities.parse(xml: xml)
        #expect(caps.guests[0].osType == "linux")
        #expect(caps.vmModes == ["xen"])
        #expect(caps.canRun(hypervisorType: "xen", vmMode: "pv", architecture: "x86_64", pae: nil).isEmpty)
    }

    @Test func hostWithoutGuestsRunsNothing() throws {
        let xml = "<capabilities><host><cpu><arch>aarch64</arch></cpu></host></capabilities>"
        let caps = try HostCapabilities.parse(xml: xml)
        #expect(caps.guests.isEmpty)
        #expect(!caps.supportsPAE)
        #expect(caps.canRun(hypervisorType: nil, vmMode: nil, architecture: nil, pae: nil).isEmpty)
        #expect(
            caps.canRun(hypervisorType: "qemu", vmMode: nil, architecture: nil, pae: nil)
                == ["hypervisor_type qemu is not offered by this host (offered: none)"])
        #expect(caps.canRun(hypervisorType: nil, vmMode: nil, architecture: nil, pae: true).count == 1)
    }

    static let broken: [(xml: String, code: CapabilitiesParseError.Code, says: String)] = [
        ("<capabilities><host>", .malformedXML, "not well-formed"),
        ("", .malformedXML, "the document is empty"),
        ("<capabilities><host><cpu><arch>x86_64</arch></cpu></host>", .malformedXML, "ends before </capabilities>"),
        ("<domain type='kvm'/>", .notCapabilities, "found <domain>"),
        ("<capabilities><host/></capabilities>", .missingElement, "<host><cpu><arch>"),
        (
            "<capabilities><host><cpu><arch>x86_64</arch></cpu></host><guest><arch name='x86_64'/></guest>"
                + "</capabilities>", .missingElement, "<guest> number 1"
        ),
    ]

    @Test(arguments: broken)
    func rejectsBrokenDocuments(_ example: (xml: String, code: CapabilitiesParseError.Code, says: String)) {
        #expect {
            try HostCapabilities.parse(xml: example.xml)
        } throws: { error in
            guard let error = error as? CapabilitiesParseError else { return false }
            return error.code == example.code && error.message.contains(example.says)
        }
    }
}

@Suite("Guest names")
struct GuestNamesTests {
    @Test(arguments: [
        ("x86_64", "x86_64"), ("AMD64", "x86_64"), ("amd64", "x86_64"), ("x64", "x86_64"), ("i686", "i686"),
        ("i386", "i686"), ("i586", "i686"), ("x86", "i686"), ("x86_32", "i686"), ("arm64", "aarch64"),
        (" ppc64le ", "ppc64le"),
    ])
    func architecture(_ name: String, _ expected: String) {
        #expect(GuestNames.architecture(name) == expected)
    }

    @Test(arguments: [("hvm", "hvm"), ("HVM", "hvm"), ("xen", "xen"), ("pv", "xen"), ("hv", "hvm"), ("exe", "exe")])
    func vmMode(_ name: String, _ expected: String) {
        #expect(GuestNames.vmMode(name) == expected)
    }

    @Test(arguments: [("qemu", "qemu"), ("KVM", "kvm"), ("xen", "xen"), ("xapi", "xen"), ("test", "test")])
    func hypervisorType(_ name: String, _ expected: String) {
        #expect(GuestNames.hypervisorType(name) == expected)
    }

    @Test(arguments: ["", "x87", "paravirt", "i786x"])
    func unknownNames(_ name: String) {
        #expect(GuestNames.architecture(name) == nil)
        #expect(GuestNames.vmMode(name) == nil)
        #expect(GuestNames.hypervisorType(name) == nil)
    }
}

/// One row of the "can this host run it" table.
struct RunCase: Sendable, CustomTestStringConvertible {
    var host: String
    var hypervisorType: String?
    var vmMode: String?
    var architecture: String?
    var pae: Bool?
    /// Fragments expected in the reasons, one per reason; empty when the host can run it.
    var reasons: [String] = []

    var testDescription: String {
        let asked = [hypervisorType ?? "-", vmMode ?? "-", architecture ?? "-", pae.map { "pae=\($0)" } ?? "-"]
        return "\(host): \(asked.joined(separator: " ")) -> \(reasons.isEmpty ? "runs" : "\(reasons.count) reason(s)")"
    }

    var capabilities: HostCapabilities {
        get throws {
            switch host {
            case "qemu": try HostCapabilities.parse(xml: qemuHostCapabilities)
            case "xen": try HostCapabilities.parse(xml: xenHostCapabilities)
            case "test": try HostCapabilities.parse(xml: testDriverCapabilities)
            default:
                // Every name offered somewhere, but never together.
                HostCapabilities(
                    hostArchitecture: "x86_64",
                    guests: [
                        GuestCapability(osType: "hvm", arch: "x86_64", wordsize: 64, domainTypes: ["qemu"]),
                        GuestCapability(
                            osType: "xen", arch: "i686", wordsize: 32, domainTypes: ["xen"], features: ["pae"]),
                    ])
            }
        }
    }
}

@Suite("canRun")
struct CanRunTests {
    static let cases: [RunCase] = [
        RunCase(host: "qemu"),
        RunCase(host: "qemu", hypervisorType: "qemu", vmMode: "hvm", architecture: "x86_64"),
        RunCase(host: "qemu", hypervisorType: "KVM", vmMode: "HVM", architecture: "amd64"),
        RunCase(host: "qemu", hypervisorType: "kvm", vmMode: "hvm", architecture: "i386", pae: true),
        RunCase(host: "qemu", hypervisorType: "qemu", vmMode: "hvm", architecture: "x86", pae: false),
        RunCase(host: "qemu", hypervisorType: "qemu", vmMode: "hvm", architecture: "x86_64", pae: true),
        RunCase(host: "qemu", hypervisorType: "qemu", vmMode: "hvm", architecture: "x86_64", pae: false),
        RunCase(host: "qemu", architecture: "i686"),
        RunCase(host: "qemu", pae: true),
        RunCase(
            host: "qemu", hypervisorType: "xen", vmMode: "hvm", architecture: "x86_64",
            reasons: ["hypervisor_type xen is not offered by this host (offered: qemu, kvm)"]),
        RunCase(
            host: "qemu", hypervisorType: "qemu", vmMode: "pv", architecture: "x86_64",
            reasons: ["vm_mode xen is not offered by this host (offered: hvm)"]),
        RunCase(
            host: "qemu", hypervisorType: "qemu", vmMode: "hvm", architecture: "aarch64",
            reasons: ["architecture aarch64 is not offered by this host (offered: i686, x86_64)"]),
        RunCase(
            host: "qemu", hypervisorType: "xen", vmMode: "xen", architecture: "arm64",
            reasons: ["architecture aarch64", "hypervisor_type xen", "vm_mode xen"]),
        RunCase(
            host: "qemu", hypervisorType: "qemu", vmMode: "hvm", architecture: "sparc9",
            reasons: ["architecture 'sparc9' is not a known architecture name"]),
        RunCase(
            host: "qemu", hypervisorType: "hyper-v", vmMode: "paravirt", architecture: "x86_64",
            reasons: ["hypervisor_type 'hyper-v' is not a known", "vm_mode 'paravirt' is not a known"]),
        RunCase(host: "xen", hypervisorType: "xen", vmMode: "pv", architecture: "x86_64"),
        RunCase(host: "xen", hypervisorType: "xen", vmMode: "xen", architecture: "i686", pae: true),
        RunCase(host: "xen", hypervisorType: "xapi", vmMode: "hvm", architecture: "i686", pae: false),
        RunCase(host: "xen", hypervisorType: "xen", vmMode: "hvm", architecture: "x86_64", pae: false),
        RunCase(
            host: "xen", hypervisorType: "xen", vmMode: "xen", architecture: "i686", pae: false,
            reasons: ["a non-PAE kernel cannot run in the matching guests (xen/i686/xen)"]),
        RunCase(
            host: "xen", vmMode: "xen", architecture: "x86_64", pae: false,
            reasons: ["a non-PAE kernel cannot run in the matching guests (xen/x86_64/xen)"]),
        RunCase(
            host: "xen", hypervisorType: "kvm", reasons: ["hypervisor_type kvm is not offered by this host"]),
        RunCase(host: "test", hypervisorType: "test", vmMode: "hvm", architecture: "i686", pae: true),
        RunCase(host: "test", hypervisorType: "test", vmMode: "xen", architecture: "i386", pae: false),
        RunCase(
            host: "test", hypervisorType: "qemu", vmMode: "hvm", architecture: "i686",
            reasons: ["hypervisor_type qemu is not offered by this host (offered: test)"]),
        RunCase(
            host: "test", hypervisorType: "test", architecture: "x86_64",
            reasons: ["architecture x86_64 is not offered by this host (offered: i686)"]),
        RunCase(host: "split", hypervisorType: "qemu", vmMode: "hvm", architecture: "x86_64"),
        RunCase(
            host: "split", hypervisorType: "qemu", vmMode: "xen", architecture: "x86_64",
            reasons: [
                "no guest on this host has vm_mode=xen, architecture=x86_64, hypervisor_type=qemu together "
                    + "(offered: hvm/x86_64/qemu, xen/i686/xen)"
            ]),
        RunCase(
            host: "split", vmMode: "hvm", pae: false,
            reasons: []),
        RunCase(
            host: "split", architecture: "i686", pae: false,
            reasons: ["a non-PAE kernel cannot run in the matching guests (xen/i686/xen)"]),
    ]

    @Test(arguments: cases)
    func canRun(_ example: RunCase) throws {
        let reasons = try example.capabilities.canRun(
            hypervisorType: example.hypervisorType, vmMode: example.vmMode, architecture: example.architecture,
            pae: example.pae)
        #expect(reasons.count == example.reasons.count, "\(reasons)")
        for (reason, fragment) in zip(reasons, example.reasons) {
            #expect(reason.contains(fragment), "\(reason)")
        }
    }

    @Test(arguments: [
        (GuestCapability(osType: "hvm", arch: "i686", domainTypes: ["qemu"], features: ["pae", "nonpae"]), true, true),
        (GuestCapability(osType: "hvm", arch: "i686", domainTypes: ["qemu"]), false, true),
        (GuestCapability(osType: "hvm", arch: "x86_64", domainTypes: ["qemu"]), true, true),
        (GuestCapability(osType: "xen", arch: "x86_64", domainTypes: ["xen"]), true, false),
        (GuestCapability(osType: "xen", arch: "i686", domainTypes: ["xen"], features: ["pae"]), true, false),
        (GuestCapability(osType: "hvm", arch: "aarch64", domainTypes: ["qemu"]), false, true),
    ])
    func paeRule(_ guest: GuestCapability, _ acceptsPAE: Bool, _ acceptsNonPAE: Bool) {
        #expect(guest.accepts(pae: true) == acceptsPAE)
        #expect(guest.accepts(pae: false) == acceptsNonPAE)
    }
}

@Suite("describe_host")
struct HostDescriptionTests {
    @Test func buildsFromLibvirtFacts() throws {
        let description = try HostDescription(
            host: "compute-1", capabilities: HostCapabilities.parse(xml: qemuHostCapabilities),
            nodeInfo: NodeInfo(cpuModel: "x86_64", memoryKiB: 16_250_620, cpus: 8),
            freeMemoryBytes: 6 * 1024 * 1024 * 1024 + 512 * 1024, activeVcpus: 3, libvirtVersion: "9.0.0",
            hypervisorVersion: "7.2.0")
        #expect(
            description
                == HostDescription(
                    host: "compute-1", architectures: ["i686", "x86_64"], hypervisorTypes: ["qemu", "kvm"],
                    vmModes: ["hvm"], pae: true, free: .init(vcpus: 5, memoryMB: 6144),
                    version: .init(libvirt: "9.0.0", hypervisor: "7.2.0")))
    }

    @Test func overcommittedHostHasNoFreeVcpus() throws {
        let description = try HostDescription(
            host: "h", capabilities: HostCapabilities.parse(xml: testDriverCapabilities),
            nodeInfo: NodeInfo(cpuModel: "i686", memoryKiB: 1024, cpus: 2), freeMemoryBytes: 0, activeVcpus: 9,
            libvirtVersion: "9.0.0", hypervisorVersion: "0.0.2")
        #expect(description.free == .init(vcpus: 0, memoryMB: 0))
    }

    @Test(arguments: [(9_000_000 as UInt, "9.0.0"), (7_002_000, "7.2.0"), (2, "0.0.2"), (10_010_001, "10.10.1")])
    func versionFormat(_ encoded: UInt, _ expected: String) {
        #expect(LibvirtConnection.formatVersion(encoded) == expected)
    }
}
