import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// What Berth records about an instance inside its libvirt domain (`<metadata>`), so that a worker that
/// restarts, or another worker on the host, can answer `get_instance`, tag metrics with the image id and tell a
/// repeated boot from a clashing one without any state of its own.
public struct DomainMetadata: Sendable, Hashable {
    /// Berth's XML namespace. libvirt keeps one metadata element per namespace; changing it orphans the
    /// metadata of every existing domain, so a new layout needs a new version here and a reader for both.
    public static let namespace = "https://berth.example/xmlns/instance/1.0"
    public static let prefix = "berth"
    public static let rootElement = "instance"

    public var instanceName: String
    public var imageID: String
    public var flavor: Flavor
    public var requestID: String?
    /// Whose instance it is: the boot's `project_id`, else the oslo context's; metrics samples carry both.
    public var projectID: String?
    public var userID: String?
    /// The volume a volume-backed instance boots from.
    public var volumeID: String?
    public var kernelCmdline: String?
    /// `BootVariantSelection.summary` of the chosen variant.
    public var bootVariant: String?
    /// The config drive's filesystem (`vfat`) when one is attached; nil: none.
    public var configDrive: String?
    /// The digest of `DomainSpec.canonicalText` (`sha256:<hex>`), set by the worker before it renders the domain.
    public var fingerprint: String?

    public init(
        instanceName: String, imageID: String, flavor: Flavor, requestID: String? = nil, projectID: String? = nil,
        userID: String? = nil, volumeID: String? = nil, kernelCmdline: String? = nil, bootVariant: String? = nil, configDrive: String? = nil,
        fingerprint: String? = nil
    ) {
        self.instanceName = instanceName
        self.imageID = imageID
        self.flavor = flavor
        self.requestID = requestID
        self.projectID = projectID
        self.userID = userID
        self.volumeID = volumeID
        self.kernelCmdline = kernelCmdline
        self.bootVariant = bootVariant
        self.configDrive = configDrive
        self.fingerprint = fingerprint
    }

    /// The optional text fields in document order with their element names; one table for writing and reading.
    /// Computed because key paths are not Sendable and a static table would have to be.
    static var textFields: [(String, WritableKeyPath<DomainMetadata, String?>)] {
        [
            ("request_id", \.requestID), ("project_id", \.projectID), ("user_id", \.userID), ("volume_id", \.volumeID),
            ("kernel_cmdline", \.kernelCmdline), ("boot_variant", \.bootVariant), ("config_drive", \.configDrive),
            ("fingerprint", \.fingerprint),
        ]
    }

    /// Characters XML cannot carry would come back different; refuse them before the domain exists.
    func validate() throws(BerthError) {
        let values: [(String, String?)] =
            [("instance name", instanceName), ("image_id", imageID), ("flavor name", flavor.name)]
            + Self.textFields.map { ($0.0, self[keyPath: $0.1]) }
        for case (let what, let value?) in values {
            if let bad = value.unicodeScalars.first(where: { !XMLWriter.isAllowed($0) || isControl($0) }) {
                throw .invalidRequest(
                    "\(what) \(quoted(value)) contains \(describeCharacter(bad)), which a libvirt domain cannot "
                        + "store; remove it")
            }
        }
    }

    /// Writes `<berth:instance xmlns:berth=...>` with its children.
    func write(to writer: inout XMLWriter) {
        let p = Self.prefix + ":"
        writer.element(p + Self.rootElement, [("xmlns:" + Self.prefix, Self.namespace)]) { w in
            w.element(p + "name", text: instanceName)
            w.element(p + "image_id", text: imageID)
            w.element(
                p + "flavor",
                [
                    ("name", flavor.name), ("vcpus", String(flavor.vcpus)), ("memory_mb", String(flavor.memoryMB)),
                    ("root_gb", String(flavor.rootGB)),
                ])
            for (name, path) in Self.textFields {
                if let value = self[keyPath: path] { w.element(p + name, text: value) }
            }
        }
    }

    /// Reads Berth's metadata from a whole domain XML (`virDomainGetXMLDesc`) or from the metadata element alone
    /// (`virDomainGetMetadata`). Matching is by namespace, not prefix, because libvirt may write it back with
    /// another prefix. Returns nil when the XML has no Berth metadata: the domain is not Berth's.
    public static func parse(xml: String) throws(BerthError) -> DomainMetadata? {
        let reader = MetadataReader()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.shouldProcessNamespaces = true
        parser.delegate = reader
        // swift-corelibs-foundation's XMLParser reports success for a document cut off inside an element, so
        // the reader also checks that the root element was closed.
        guard parser.parse(), reader.rootClosed else {
            let detail = parser.parserError.map { "\($0)" } ?? "the document ends before its root element is closed"
            throw .buildFailed("domain XML is not well-formed (line \(parser.lineNumber)): \(detail)")
        }
        guard reader.found else { return nil }
        func required(_ key: String) throws(BerthError) -> String {
            guard let value = reader.texts[key] else {
                throw .buildFailed(
                    "Berth metadata of the domain lacks <\(key)>; the domain was changed outside Berth. Delete and "
                        + "boot the instance again")
            }
            return value
        }
        let flavorAttributes = reader.flavor ?? [:]
        func flavorNumber(_ key: String) throws(BerthError) -> Int {
            guard let text = flavorAttributes[key], let number = Int(text) else {
                throw .buildFailed(
                    "Berth metadata of the domain has no valid flavor \(key); the domain was changed outside Berth")
            }
            return number
        }
        var metadata = DomainMetadata(
            instanceName: try required("name"), imageID: try required("image_id"),
            flavor: Flavor(
                name: flavorAttributes["name"] ?? "", vcpus: try flavorNumber("vcpus"),
                memoryMB: try flavorNumber("memory_mb"), rootGB: try flavorNumber("root_gb")))
        for (name, path) in textFields {
            metadata[keyPath: path] = reader.texts[name]
        }
        return metadata
    }

    /// What differs between two instances' records, for an `InstanceExists` message; empty when they describe
    /// the same boot. The request id is left out: a retry carries a new one and is still the same boot.
    public func differences(from other: DomainMetadata) -> [String] {
        var result: [String] = []
        func compare(_ what: String, _ mine: String?, _ theirs: String?) {
            if mine != theirs {
                result.append("\(what): \(mine.map { quoted($0) } ?? "none") vs \(theirs.map { quoted($0) } ?? "none")")
            }
        }
        compare("image_id", imageID, other.imageID)
        compare("name", instanceName, other.instanceName)
        if flavor != other.flavor {
            result.append("flavor: \(flavor) vs \(other.flavor)")
        }
        compare("project_id", projectID, other.projectID)
        compare("volume_id", volumeID, other.volumeID)
        compare("kernel_cmdline", kernelCmdline, other.kernelCmdline)
        compare("boot_variant", bootVariant, other.bootVariant)
        compare("config_drive", configDrive, other.configDrive)
        if result.isEmpty, let mine = fingerprint, let theirs = other.fingerprint, mine != theirs {
            result.append("domain settings (disk bus, NIC model, machine type or timezone) differ")
        }
        return result
    }
}

/// XMLParser's delegate. Collects the text of each child of Berth's element; only this parse uses it, on the
/// calling thread, so it needs no synchronisation.
private final class MetadataReader: NSObject, XMLParserDelegate {
    var found = false
    var texts: [String: String] = [:]
    var flavor: [String: String]?
    private(set) var rootClosed = false
    private var depth = 0
    private var depthInside = 0
    private var current: String?
    private var buffer = ""

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        depth += 1
        if depthInside > 0 {
            depthInside += 1
            // Only direct children of <instance> are fields; deeper elements belong to a future layout.
            guard depthInside == 2, namespaceURI == DomainMetadata.namespace else { return }
            if elementName == "flavor" {
                flavor = attributes
            } else {
                current = elementName
                buffer = ""
            }
        } else if !found, elementName == DomainMetadata.rootElement, namespaceURI == DomainMetadata.namespace {
            found = true
            depthInside = 1
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if current != nil { buffer += string }
    }

    func parser(
        _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
    ) {
        depth -= 1
        if depth == 0 { rootClosed = true }
        guard depthInside > 0 else { return }
        if depthInside == 2, let name = current {
            texts[name] = buffer
            current = nil
        }
        depthInside -= 1
    }
}
