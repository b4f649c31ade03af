import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// One `<guest>` of libvirt's capabilities: a kind of domain this host can run.
public struct GuestCapability: Sendable, Equatable {
    /// libvirt's `os_type`: "hvm", "xen", "exe", ...
    public var osType: String
    public var arch: String
    public var wordsize: Int?
    public var emulator: String?
    public var machines: [String]
    /// `<domain type=...>` values, e.g. ["qemu", "kvm"] or ["test"].
    public var domainTypes: [String]
    /// Names of the `<features>` children: "pae", "nonpae", "acpi", ...
    public var features: [String]

    public init(
        osType: String, arch: String, wordsize: Int? = nil, emulator: String? = nil, machines: [String] = [],
        domainTypes: [String], features: [String] = []
    ) {
        self.osType = osType
        self.arch = arch
        self.wordsize = wordsize
        self.emulator = emulator
        self.machines = machines
        self.domainTypes = domainTypes
        self.features = features
    }

    /// `osType` as a Nova vm_mode ("linux" becomes "xen"); the raw value when it has no Nova name.
    public var vmMode: String { GuestNames.vmMode(osType) ?? osType }

    public var canonicalArch: String { GuestNames.architecture(arch) ?? arch }

    /// Whether this guest boots a kernel built with (`true`) or without (`false`) PAE. libvirt lists
    /// pae/nonpae only for 32-bit x86 guests: a 64-bit x86 guest runs in long mode, which implies PAE, and a
    /// full HVM machine that does not mention PAE also boots a non-PAE kernel. A paravirtual guest runs the
    /// kernel on the hypervisor's terms, so it accepts only what it lists.
    public func accepts(pae: Bool) -> Bool {
        let listsPAE = features.contains("pae")
        let listsNonPAE = features.contains("nonpae")
        if pae {
            return listsPAE || canonicalArch == "x86_64"
        }
        return listsNonPAE || (vmMode == "hvm" && !listsPAE)
    }
}

/// Why a capabilities document could not be used.
public struct CapabilitiesParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case malformedXML
        case notCapabilities
        case missingElement
    }

    public var code: Code
    public var message: String

    public var description: String { message }
}

/// The parts of libvirt's capabilities XML that decide what this host can boot.
public struct HostCapabilities: Sendable, Equatable {
    public var hostArchitecture: String
    public var hostCPUModel: String?
    /// Both `<feature name='vmx'/>` (real hosts) and `<features><pae/></features>` (older and test drivers).
    public var hostCPUFeatures: [String]
    public var guests: [GuestCapability]

    public init(
        hostArchitecture: String, hostCPUModel: String? = nil, hostCPUFeatures: [String] = [],
        guests: [GuestCapability]
    ) {
        self.hostArchitecture = hostArchitecture
        self.hostCPUModel = hostCPUModel
        self.hostCPUFeatures = hostCPUFeatures
        self.guests = guests
    }

    /// Guest architectures, in document order, without repeats.
    public var architectures: [String] { unique(guests.map(\.canonicalArch)) }

    /// libvirt domain types ("qemu", "kvm", "xen", "test"), which Nova reports as hypervisor types.
    public var hypervisorTypes: [String] { unique(guests.flatMap(\.domainTypes)) }

    /// Guest os types as Nova vm modes ("hvm", "xen", "exe").
    public var vmModes: [String] { unique(guests.map(\.vmMode)) }

    /// Whether some guest on this host boots a PAE kernel.
    public var supportsPAE: Bool { guests.contains { $0.accepts(pae: true) } }

    public static func parse(xml: String) throws -> HostCapabilities {
        let reader = CapabilitiesReader()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.delegate = reader
        if !parser.parse() {
            let detail = parser.parserError.map { "\($0.localizedDescription)" } ?? "unknown error"
            throw CapabilitiesParseError(
                code: .malformedXML,
                message: "libvirt capabilities are not well-formed XML (line \(parser.lineNumber)): \(detail)")
        }
        return try reader.result()
    }

    /// Why this host cannot run a guest with these image properties; empty when it can. Each nil is "any".
    /// Names are normalised as Nova does (amd64 is x86_64, pv is xen, ...), and a (architecture, hypervisor
    /// type, vm mode) triple must be offered by one guest together, as in Nova's ImagePropertiesFilter.
    public func canRun(hypervisorType: String?, vmMode: String?, architecture: String?, pae: Bool?) -> [String] {
        var reasons: [String] = []
        let wantedArch = wanted(architecture, as: "architecture", GuestNames.architecture, &reasons)
        let wantedType = wanted(hypervisorType, as: "hypervisor_type", GuestNames.hypervisorType, &reasons)
        let wantedMode = wanted(vmMode, as: "vm_mode", GuestNames.vmMode, &reasons)
        guard reasons.isEmpty else { return reasons }

        func offered(_ name: String, _ wanted: String?, _ available: [String]) {
            if let wanted, !available.contains(wanted) {
                let list = available.isEmpty ? "none" : available.joined(separator: ", ")
                reasons.append("\(name) \(wanted) is not offered by this host (offered: \(list))")
            }
        }
        offered("architecture", wantedArch, architectures)
        offered("hypervisor_type", wantedType, hypervisorTypes)
        offered("vm_mode", wantedMode, vmModes)
        guard reasons.isEmpty else { return reasons }

        let asked = [("vm_mode", wantedMode), ("architecture", wantedArch), ("hypervisor_type", wantedType)]
            .compactMap { name, value in value.map { "\(name)=\($0)" } }
        // As in Nova: an image that names none of these runs anywhere (the PAE check below still applies).
        if asked.isEmpty && pae == nil {
            return []
        }
        guard !guests.isEmpty else {
            return ["this host offers no guests at all (libvirt capabilities list no <guest>)"]
        }
        let matching = guests.filter { guest in
            (wantedArch.map { $0 == guest.canonicalArch } ?? true)
                && (wantedMode.map { $0 == guest.vmMode } ?? true)
                && (wantedType.map { guest.domainTypes.contains($0) } ?? true)
        }
        if matching.isEmpty {
            let together = asked.joined(separator: ", ")
            return ["no guest on this host has \(together) together (offered: \(offerList(guests)))"]
        }
        if let pae, !matching.contains(where: { $0.accepts(pae: pae) }) {
            let kind = pae ? "a PAE kernel" : "a non-PAE kernel"
            return ["\(kind) cannot run in the matching guests (\(offerList(matching)))"]
        }
        return []
    }

    private func wanted(
        _ value: String?, as name: String, _ canonical: (String) -> String?, _ reasons: inout [String]
    ) -> String? {
        guard let value else { return nil }
        guard let result = canonical(value) else {
            reasons.append("\(name) '\(value)' is not a known \(name) name")
            return nil
        }
        return result
    }

    /// "hvm/x86_64/qemu+kvm" per guest: what an operator compares against the image's properties.
    private func offerList(_ guests: [GuestCapability]) -> String {
        guests.map { "\($0.vmMode)/\($0.canonicalArch)/\($0.domainTypes.joined(separator: "+"))" }
            .joined(separator: ", ")
    }
}

private func unique(_ values: [String]) -> [String] {
    var seen = Set<String>()
    return values.filter { seen.insert($0).inserted }
}

/// XMLParser's delegate; collects elements by their path from the root.
private final class CapabilitiesReader: NSObject, XMLParserDelegate {
    private var path: [String] = []
    private var text = ""
    private var root: String?
    private var rootClosed = false
    private var hostArchitecture: String?
    private var hostCPUModel: String?
    private var hostCPUFeatures: [String] = []
    private var guests: [GuestCapability] = []
    private var guest: PartialGuest?
    private var guestsSeen = 0
    private var missing: [String] = []

    private struct PartialGuest {
        var osType: String?
        var arch: String?
        var wordsize: Int?
        var emulator: String?
        var machines: [String] = []
        var domainTypes: [String] = []
        var features: [String] = []
    }

    func result() throws -> HostCapabilities {
        // Foundation's parser on Linux accepts an empty or truncated document, so check for a whole one here.
        guard let root, rootClosed else {
            throw CapabilitiesParseError(
                code: .malformedXML,
                message: "libvirt capabilities are not well-formed XML: "
                    + (root.map { "the document ends before </\($0)>" } ?? "the document is empty"))
        }
        guard root == "capabilities" else {
            throw CapabilitiesParseError(
                code: .notCapabilities,
                message: "expected a libvirt <capabilities> document, found <\(root)>")
        }
        guard let hostArchitecture else {
            missing.insert("<host><cpu><arch>", at: 0)
            throw missingError()
        }
        guard missing.isEmpty else { throw missingError() }
        return HostCapabilities(
            hostArchitecture: hostArchitecture, hostCPUModel: hostCPUModel, hostCPUFeatures: hostCPUFeatures,
            guests: guests)
    }

    private func missingError() -> CapabilitiesParseError {
        CapabilitiesParseError(
            code: .missingElement,
            message: "libvirt capabilities lack \(missing.joined(separator: ", "))")
    }

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if root == nil {
            root = elementName
        }
        path.append(elementName)
        text = ""
        switch path {
        case ["capabilities", "host", "cpu", "feature"]:
            if let name = attributes["name"] {
                hostCPUFeatures.append(name)
            }
        case ["capabilities", "host", "cpu", "features", elementName]:
            hostCPUFeatures.append(elementName)
        case ["capabilities", "guest"]:
            guest = PartialGuest()
            guestsSeen += 1
        case ["capabilities", "guest", "arch"]:
            guest?.arch = attributes["name"]
        case ["capabilities", "guest", "arch", "domain"]:
            if let type = attributes["type"] {
                guest?.domainTypes.append(type)
            }
        case ["capabilities", "guest", "features", elementName]:
            guest?.features.append(elementName)
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
    }

    func parser(
        _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
    ) {
        let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
        switch path {
        case ["capabilities", "host", "cpu", "arch"]:
            hostArchitecture = value
        case ["capabilities", "host", "cpu", "model"]:
            hostCPUModel = value
        case ["capabilities", "guest", "os_type"]:
            guest?.osType = value
        case ["capabilities", "guest", "arch", "wordsize"]:
            guest?.wordsize = Int(value)
        case ["capabilities", "guest", "arch", "emulator"]:
            guest?.emulator = value
        case ["capabilities", "guest", "arch", "machine"]:
            guest?.machines.append(value)
        case ["capabilities", "guest"]:
            finishGuest()
        default:
            break
        }
        path.removeLast()
        text = ""
        rootClosed = path.isEmpty
    }

    private func finishGuest() {
        guard let partial = guest else { return }
        guest = nil
        guard let osType = partial.osType, let arch = partial.arch else {
            missing.append("<os_type> or <arch name=...> in <guest> number \(guestsSeen)")
            return
        }
        guests.append(
            GuestCapability(
                osType: osType, arch: arch, wordsize: partial.wordsize, emulator: partial.emulator,
                machines: partial.machines, domainTypes: partial.domainTypes, features: partial.features))
    }
}
