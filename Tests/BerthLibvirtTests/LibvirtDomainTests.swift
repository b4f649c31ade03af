import CLibvirt
import Foundation
import Testing

@testable import BerthLibvirt

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// A test-driver host of its own. `test:///default` is one shared state per process while any connection is
/// open, and other suites running in parallel count its running domains' vCPUs; a `test://<file>` URI gives
/// each connection a fresh, empty host (no domains, no pools) read from that file when it opens.
enum IsolatedTestDriver {
    /// Runs `open` with such a URI; the file is gone afterwards, so only what `open` connected can use it.
    static func with<T>(_ open: (String) async throws -> T) async throws -> T {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("berth-libvirt-\(UUID()).xml")
        try Data("<node>\n</node>\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        return try await open("test://\(file.path)")
    }

    static func host() async throws -> LibvirtHost {
        try await with { uri in
            let host = LibvirtHost(uri: uri)
            try await host.connect()
            return host
        }
    }

    static func connection() async throws -> LibvirtConnection {
        try await with { try LibvirtConnection(uri: $0) }
    }
}

let berthNamespace = "https://berth.example/xmlns/instance/1.0"

/// A test-driver domain carrying Berth's metadata element, with a value that needs escaping.
func testDomainXML(uuid: String, type: String = "test") -> String {
    """
    <domain type='\(type)'>
      <name>berth-\(uuid)</name>
      <uuid>\(uuid)</uuid>
      <memory unit='KiB'>65536</memory>
      <vcpu>1</vcpu>
      <os>
        <type arch='i686'>hvm</type>
      </os>
      <metadata>
        <berth:instance xmlns:berth='\(berthNamespace)'>
          <berth:name>web &amp; db</berth:name>
          <berth:image_id>img-42</berth:image_id>
        </berth:instance>
      </metadata>
    </domain>
    """
}

func newUUID() -> String { UUID().uuidString.lowercased() }

@Suite("Domains on the libvirt test driver")
struct LibvirtDomainTests {
    @Test func defineStartFindDestroyUndefine() async throws {
        let host = try await IsolatedTestDriver.host()
        let uuid = newUUID()

        let started = try await host.defineAndStart(xml: testDomainXML(uuid: uuid))
        #expect(started.name == "berth-\(uuid)")
        #expect(started.uuid == uuid)
        #expect(started.state == .running)
        #expect(started.xml.contains(berthNamespace))
        #expect(started.xml.contains("img-42"))

        let found = try #require(try await host.domain(uuid: uuid))
        #expect(found.name == started.name)
        #expect(found.state == .running)
        #expect(try await host.domain(name: "berth-\(uuid)")?.uuid == uuid)
        #expect(try await host.listDomains(prefix: "berth-").map(\.uuid) == [uuid])
        #expect(try await host.listDomains(prefix: "other-").isEmpty)

        let (info, metadata) = try await host.withConnection { connection in
            let domain = try #require(try connection.lookupDomain(uuid: uuid))
            return (try domain.info(), try domain.metadata(uri: berthNamespace))
        }
        #expect(info.vcpus == 1)
        #expect(info.maxMemoryKiB == 65536)
        #expect(info.state == .running)
        // libvirt hands the element back without its namespace or prefix: the uri is the key it was found by.
        #expect(metadata?.contains("<image_id>img-42</image_id>") == true)
        #expect(metadata?.contains("web &amp; db") == true)

        #expect(try await host.destroyAndUndefine(uuid: uuid))
        #expect(try await host.domain(uuid: uuid) == nil)
        #expect(try await host.domain(name: "berth-\(uuid)") == nil)
        #expect(try await host.listDomains(prefix: "berth-").isEmpty)
        #expect(try await !host.destroyAndUndefine(uuid: uuid))
    }

    @Test func startingARunningDomainAgainReportsIt() async throws {
        let host = try await IsolatedTestDriver.host()
        let uuid = newUUID()
        let first = try await host.defineAndStart(xml: testDomainXML(uuid: uuid))
        let again = try await host.defineAndStart(xml: testDomainXML(uuid: uuid))
        #expect(again.uuid == first.uuid)
        #expect(again.state == .running)
        #expect(try await host.listDomains(prefix: "").count == 1)
        #expect(try await host.destroyAndUndefine(uuid: uuid))
    }

    @Test func badXMLIsAClearErrorAndDefinesNothing() async throws {
        let host = try await IsolatedTestDriver.host()
        let error = await #expect(throws: LibvirtError.self) {
            try await host.defineAndStart(xml: "<domain type='test'><name>berth-x</name>")
        }
        #expect(error?.message.hasPrefix("cannot define a libvirt domain: ") == true)
        #expect(error.map { $0.hasCode(VIR_ERR_XML_ERROR) || $0.hasCode(VIR_ERR_XML_DETAIL) } == true)
        #expect(error?.libvirtMessage.isEmpty == false)
        #expect(try await host.listDomains(prefix: "").isEmpty)

        let missingName = await #expect(throws: LibvirtError.self) {
            try await host.defineAndStart(xml: "<domain type='test'><memory>1024</memory></domain>")
        }
        #expect(missingName?.message.contains("name") == true)
    }

    @Test func malformedUUIDIsAnErrorNotAbsence() async throws {
        let host = try await IsolatedTestDriver.host()
        let error = await #expect(throws: LibvirtError.self) { try await host.domain(uuid: "not-a-uuid") }
        #expect(error?.message.hasPrefix("cannot look up libvirt domain not-a-uuid: ") == true)
    }

    @Test func definedDomainLifecycleOnTheConnection() async throws {
        let connection = try await IsolatedTestDriver.connection()
        let uuid = newUUID()
        let domain = try connection.defineDomain(xml: testDomainXML(uuid: uuid))
        #expect(domain.uuidString == uuid)
        #expect(domain.name == "berth-\(uuid)")
        #expect(try domain.state() == .shutOff)
        #expect(try !domain.isActive())
        #expect(try domain.isPersistent())
        // Destroying what does not run is what the caller wanted: no error.
        #expect(try !domain.destroy())
        try domain.create()
        #expect(try domain.state() == .running)
        #expect(try domain.destroy())
        #expect(try domain.state() == .shutOff)
        // The test driver refuses the NVRAM flag, so this also covers the plain-undefine fallback.
        try domain.undefine()
        #expect(try connection.lookupDomain(uuid: uuid) == nil)
        let gone = #expect(throws: LibvirtError.self) { try domain.state() }
        #expect(gone?.hasCode(VIR_ERR_NO_DOMAIN) == true)
    }

    @Test func metadataCanBeSetReadAndRemoved() async throws {
        let connection = try await IsolatedTestDriver.connection()
        let uuid = newUUID()
        let xml = testDomainXML(uuid: uuid).replacingOccurrences(
            of: #"(?s)<metadata>.*</metadata>"#, with: "", options: .regularExpression)
        let domain = try connection.defineDomain(xml: xml)
        let uri = "https://berth.example/xmlns/test/1"
        #expect(try domain.metadata(uri: uri) == nil)

        try domain.setMetadata("<note kind='a&amp;b'>first</note>", key: "t", uri: uri)
        #expect(try domain.metadata(uri: uri)?.contains("first") == true)
        try domain.create()
        try domain.setMetadata("<note>second</note>", key: "t", uri: uri)
        #expect(try domain.metadata(uri: uri)?.contains("second") == true)
        #expect(try domain.xmlDesc().contains(uri))

        try domain.setMetadata(nil, key: "t", uri: uri)
        #expect(try domain.metadata(uri: uri) == nil)
        try domain.destroy()
        try domain.undefine()
    }

    @Test func listingFreesWhatItFiltersOut() async throws {
        let connection = try await IsolatedTestDriver.connection()
        let uuids = (0..<5).map { _ in newUUID() }
        for uuid in uuids {
            _ = try connection.defineDomain(xml: testDomainXML(uuid: uuid))
        }
        _ = try connection.defineDomain(
            xml: testDomainXML(uuid: newUUID()).replacingOccurrences(of: "<name>berth-", with: "<name>other-"))
        let listed = try connection.listDomains(namePrefix: "berth-")
        #expect(listed.map(\.uuidString) == uuids.sorted().map { $0 })
        #expect(listed.map(\.name) == listed.map(\.name).sorted())
        #expect(try connection.listDomains().count == 6)
        for domain in try connection.listDomains() {
            try domain.undefine()
        }
        #expect(try connection.listDomains().isEmpty)
    }

    @Test func manyConcurrentBootsOnOneHost() async throws {
        let host = try await IsolatedTestDriver.host()
        let uuids = (0..<20).map { _ in newUUID() }
        try await withThrowingTaskGroup(of: DomainState.self) { group in
            for uuid in uuids {
                group.addTask { try await host.defineAndStart(xml: testDomainXML(uuid: uuid)).state }
            }
            for try await state in group {
                #expect(state == .running)
            }
        }
        #expect(try await Set(host.listDomains(prefix: "berth-").map(\.uuid)) == Set(uuids))
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for uuid in uuids {
                group.addTask { try await host.destroyAndUndefine(uuid: uuid) }
            }
            for try await removed in group {
                #expect(removed)
            }
        }
        #expect(try await host.listDomains(prefix: "").isEmpty)
    }

    @Test(arguments: [
        (VIR_DOMAIN_NOSTATE, DomainState.noState, "nostate"), (VIR_DOMAIN_RUNNING, .running, "running"),
        (VIR_DOMAIN_BLOCKED, .blocked, "blocked"), (VIR_DOMAIN_PAUSED, .paused, "paused"),
        (VIR_DOMAIN_SHUTDOWN, .shuttingDown, "shutdown"), (VIR_DOMAIN_SHUTOFF, .shutOff, "shutoff"),
        (VIR_DOMAIN_CRASHED, .crashed, "crashed"), (VIR_DOMAIN_PMSUSPENDED, .pmSuspended, "pmsuspended"),
    ])
    func stateNames(raw: virDomainState, state: DomainState, name: String) {
        #expect(DomainState(libvirt: Int32(raw.rawValue)) == state)
        #expect(state.description == name)
    }

    @Test func unknownStateIsKept() {
        #expect(DomainState(libvirt: 99) == .unknown(99))
        #expect(DomainState.unknown(99).description == "unknown(99)")
        #expect(!DomainState.shutOff.isActive && DomainState.paused.isActive)
    }
}

@Suite("Storage on the libvirt test driver")
struct LibvirtStorageTests {
    @Test func ensurePoolIsIdempotent() async throws {
        let host = try await IsolatedTestDriver.host()
        try await host.ensurePool(name: "berth", path: "/berth-pool")
        try await host.ensurePool(name: "berth", path: "/berth-pool/")
        let (active, xml) = try await host.withConnection { connection in
            let pool = try #require(try connection.lookupStoragePool(name: "berth"))
            return (try pool.isActive(), try pool.xmlDesc())
        }
        #expect(active)
        #expect(try StorageXML.poolTarget(xml: xml).path == "/berth-pool")
        #expect(try StorageXML.poolTarget(xml: xml).type == "dir")
        #expect(try await host.withConnection { try $0.lookupStoragePool(name: "absent") == nil })
    }

    @Test func inactivePoolIsStarted() async throws {
        let connection = try await IsolatedTestDriver.connection()
        let defined = try connection.defineStoragePool(xml: StorageXML.directoryPool(name: "p", path: "/p"))
        #expect(try !defined.isActive())
        let ensured = try connection.ensureDirectoryPool(name: "p", path: "/p")
        #expect(try ensured.isActive())
        #expect(try defined.isActive())
    }

    @Test func poolOverAnotherPathIsRefused() async throws {
        let host = try await IsolatedTestDriver.host()
        try await host.ensurePool(name: "berth", path: "/berth-pool")
        let error = await #expect(throws: LibvirtError.self) {
            try await host.ensurePool(name: "berth", path: "/elsewhere")
        }
        let expected = "storage pool berth is a dir pool over /berth-pool, not a dir pool over /elsewhere; "
        #expect(error?.message.hasPrefix(expected) == true)
    }

    @Test func overlayCreateFindDelete() async throws {
        let host = try await IsolatedTestDriver.host()
        try await host.ensurePool(name: "berth", path: "/berth-pool")
        let path = try await host.createOverlay(
            pool: "berth", name: "disk-1.qcow2", backingPath: "/images/base.raw", backingFormat: .raw,
            capacityBytes: 16 << 20)
        #expect(path == "/berth-pool/disk-1.qcow2")
        #expect(try await host.volumePath(pool: "berth", name: "disk-1.qcow2") == path)

        let again = await #expect(throws: LibvirtError.self) {
            try await host.createOverlay(
                pool: "berth", name: "disk-1.qcow2", backingPath: "/images/base.raw", backingFormat: .raw,
                capacityBytes: 16 << 20)
        }
        #expect(again?.hasCode(VIR_ERR_STORAGE_VOL_EXIST) == true)
        #expect(again?.message.contains("already exists in storage pool berth") == true)

        #expect(try await host.deleteVolume(pool: "berth", name: "disk-1.qcow2"))
        #expect(try await host.volumePath(pool: "berth", name: "disk-1.qcow2") == nil)
        #expect(try await !host.deleteVolume(pool: "berth", name: "disk-1.qcow2"))
        #expect(try await !host.deleteVolume(pool: "no-such-pool", name: "disk-1.qcow2"))
    }

    @Test func startGuestMakesTheOverlayAndTheDomainInOneCall() async throws {
        let host = try await IsolatedTestDriver.host()
        let uuid = newUUID()
        let overlay = OverlayVolume(
            pool: "berth", poolPath: "/berth-pool", name: "\(uuid).qcow2", backingPath: "/images/base.raw",
            backingFormat: .raw, capacityBytes: 16 << 20)
        // The pool is made on first use; a leftover volume of a boot that died half-way is replaced.
        try await host.ensurePool(name: "berth", path: "/berth-pool")
        _ = try await host.createOverlay(
            pool: "berth", name: overlay.name, backingPath: "/old", backingFormat: .qcow2, capacityBytes: 1 << 20)
        #expect(try await host.startGuest(xml: testDomainXML(uuid: uuid), uuid: uuid, overlay: overlay) == "berth-\(uuid)")
        #expect(try await host.domain(uuid: uuid)?.state == .running)
        #expect(try await host.volumePath(pool: "berth", name: overlay.name) == "/berth-pool/\(uuid).qcow2")
        // Asked again (a redelivered request), the running domain is reported, not started twice.
        #expect(try await host.startGuest(xml: testDomainXML(uuid: uuid), uuid: uuid, overlay: nil) == "berth-\(uuid)")
    }

    @Test func startGuestChecksAPoolAgainWhenItIsNotThere() async throws {
        let host = try await IsolatedTestDriver.host()
        // The host believes the pool ready (checked earlier), but it is gone: the boot checks again and makes it.
        await host.believePoolReady(name: "berth", path: "/berth-pool")
        let uuid = newUUID()
        let overlay = OverlayVolume(
            pool: "berth", poolPath: "/berth-pool", name: "\(uuid).qcow2", backingPath: "/images/base.raw",
            backingFormat: .raw, capacityBytes: 16 << 20)
        _ = try await host.startGuest(xml: testDomainXML(uuid: uuid), uuid: uuid, overlay: overlay)
        #expect(try await host.volumePath(pool: "berth", name: overlay.name) != nil)
    }

    @Test func startGuestThatCannotStartLeavesNothing() async throws {
        let host = try await IsolatedTestDriver.host()
        let overlay = OverlayVolume(
            pool: "berth", poolPath: "/berth-pool", name: "x.qcow2", backingPath: "/images/base.raw",
            backingFormat: .raw, capacityBytes: 16 << 20)
        let failure = await #expect(throws: GuestStartFailure.self) {
            try await host.startGuest(
                xml: "<domain type='test'><name>berth-x</name></domain>", uuid: newUUID(), overlay: overlay)
        }
        #expect(failure?.stage == .domain)
        #expect(try await host.volumePath(pool: "berth", name: "x.qcow2") == nil)
        #expect(try await host.domain(name: "berth-x") == nil)

        // A pool that cannot be made is the root disk's failure.
        let elsewhere = OverlayVolume(
            pool: "berth", poolPath: "/elsewhere", name: "y.qcow2", backingPath: "/b", backingFormat: .raw,
            capacityBytes: 1 << 20)
        let refused = await #expect(throws: GuestStartFailure.self) {
            try await host.startGuest(xml: testDomainXML(uuid: newUUID()), uuid: newUUID(), overlay: elsewhere)
        }
        #expect(refused?.stage == .rootDisk)
        #expect(refused?.description.contains("not a dir pool over /elsewhere") == true)
    }

    @Test func overlayInAMissingPoolSaysHowToFixIt() async throws {
        let host = try await IsolatedTestDriver.host()
        let error = await #expect(throws: LibvirtError.self) {
            try await host.createOverlay(
                pool: "nope", name: "d", backingPath: "/b", backingFormat: .qcow2, capacityBytes: 1 << 20)
        }
        #expect(error?.hasCode(VIR_ERR_NO_STORAGE_POOL) == true)
        #expect(error?.message == "storage pool nope does not exist; the worker creates it at startup (ensurePool)")
    }
}

@Suite("Storage XML")
struct StorageXMLTests {
    /// Reads back elements' text and attributes, to show escaped values survive a real XML parser.
    final class Reader: NSObject, XMLParserDelegate {
        var texts: [String: String] = [:]
        var attributes: [String: [String: String]] = [:]
        private var path: [String] = []
        private var text = ""

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
            qualifiedName: String?, attributes: [String: String] = [:]
        ) {
            path.append(elementName)
            self.attributes[path.joined(separator: "/")] = attributes
            text = ""
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

        func parser(
            _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
        ) {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !trimmed.isEmpty { texts[path.joined(separator: "/")] = trimmed }
            text = ""
            path.removeLast()
        }

        static func read(_ xml: String) -> Reader? {
            let reader = Reader()
            let parser = XMLParser(data: Data(xml.utf8))
            parser.delegate = reader
            return parser.parse() ? reader : nil
        }
    }

    @Test func overlayVolume() throws {
        let xml = StorageXML.overlayVolume(
            name: "a<b>&'c\"", capacityBytes: 10_737_418_240, backingPath: "/cache/it's & <odd>.img",
            backingFormat: .qcow2)
        let reader = try #require(Reader.read(xml))
        #expect(reader.texts["volume/name"] == "a<b>&'c\"")
        #expect(reader.texts["volume/capacity"] == "10737418240")
        #expect(reader.attributes["volume/capacity"] == ["unit": "bytes"])
        #expect(reader.attributes["volume/target/format"] == ["type": "qcow2"])
        #expect(reader.texts["volume/backingStore/path"] == "/cache/it's & <odd>.img")
        #expect(reader.attributes["volume/backingStore/format"] == ["type": "qcow2"])
        #expect(
            StorageXML.overlayVolume(name: "n", capacityBytes: 1, backingPath: "/b", backingFormat: .raw)
                .contains("<format type='raw'/>"))
    }

    @Test func directoryPool() throws {
        let reader = try #require(Reader.read(StorageXML.directoryPool(name: "p&q", path: "/var/lib/'x'")))
        #expect(reader.attributes["pool"] == ["type": "dir"])
        #expect(reader.texts["pool/name"] == "p&q")
        #expect(reader.texts["pool/target/path"] == "/var/lib/'x'")
    }

    @Test(arguments: [("/a/b", "/a/b/", true), ("/a/b//", "/a/b", true), ("/", "/", true), ("/a", "/b", false)])
    func samePath(a: String, b: String, same: Bool) {
        #expect(StorageXML.samePath(a, b) == same)
    }

    @Test func escapeLeavesOrdinaryTextAlone() {
        #expect(StorageXML.escape("berth-1234.qcow2 é") == "berth-1234.qcow2 é")
        #expect(StorageXML.escape("<&>'\"") == "&lt;&amp;&gt;&apos;&quot;")
    }
}

extension LibvirtHost {
    /// Tests: the state after an earlier boot checked a pool that has since gone.
    func believePoolReady(name: String, path: String) {
        readyPools[name] = path
    }
}
