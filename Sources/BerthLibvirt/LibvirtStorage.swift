import CLibvirt
import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// A disk image format libvirt and QEMU name in `<format type=...>`.
public enum DiskFormat: String, Sendable, CaseIterable {
    case raw
    case qcow2
}

/// The one owner of a `virStoragePoolPtr` reference, freed in `deinit`. Blocks; use inside
/// `LibvirtHost.withConnection`.
public final class LibvirtStoragePool {
    private let handle: virStoragePoolPtr
    public let name: String

    init(owning handle: virStoragePoolPtr) {
        self.handle = handle
        self.name = LibvirtCall.borrowedString { virStoragePoolGetName(handle) }
    }

    deinit {
        LibvirtCall.release { virStoragePoolFree(handle) }
    }

    public func isActive() throws -> Bool {
        try LibvirtCall.flag(doing: "cannot tell whether storage pool \(name) is active") {
            virStoragePoolIsActive(handle)
        }
    }

    /// Creates what the pool stands on; for a `dir` pool, its directory (existing is fine).
    public func build() throws {
        try LibvirtCall.check(doing: "cannot build storage pool \(name)") { virStoragePoolBuild(handle, 0) }
    }

    /// Activates the defined pool (`virsh pool-start`); libvirt scans its volumes.
    public func start() throws {
        try LibvirtCall.check(doing: "cannot start storage pool \(name)") { virStoragePoolCreate(handle, 0) }
    }

    public func setAutostart(_ autostart: Bool) throws {
        try LibvirtCall.check(doing: "cannot set autostart of storage pool \(name)") {
            virStoragePoolSetAutostart(handle, autostart ? 1 : 0)
        }
    }

    /// Rescans the pool, so files that appeared or went behind libvirt's back are seen as they are.
    public func refresh() throws {
        try LibvirtCall.check(doing: "cannot refresh storage pool \(name)") { virStoragePoolRefresh(handle, 0) }
    }

    public func xmlDesc() throws -> String {
        try LibvirtCall.ownedString(doing: "cannot read the XML of storage pool \(name)") {
            virStoragePoolGetXMLDesc(handle, 0)
        }
    }

    /// Creates a volume from `<volume>` XML (see `StorageXML.overlayVolume`).
    public func createVolume(xml: String) throws -> LibvirtStorageVolume {
        let volume = try LibvirtCall.run(doing: "cannot create a volume in storage pool \(name)") {
            virStorageVolCreateXML(handle, xml, 0)
        }
        return LibvirtStorageVolume(owning: volume)
    }

    /// Nil when the pool has no such volume (as of its last refresh).
    public func lookupVolume(name volumeName: String) throws -> LibvirtStorageVolume? {
        try LibvirtCall.lookup(
            doing: "cannot look up volume \(volumeName) in storage pool \(name)", notFound: VIR_ERR_NO_STORAGE_VOL
        ) { virStorageVolLookupByName(handle, volumeName) }.map(LibvirtStorageVolume.init(owning:))
    }

    /// Removes the definition of an inactive pool; its directory and files stay.
    func undefine() throws {
        try LibvirtCall.check(doing: "cannot undefine storage pool \(name)") {
            virStoragePoolUndefine(handle)
        }
    }
}

@available(*, unavailable)
extension LibvirtStoragePool: Sendable {}

/// The one owner of a `virStorageVolPtr` reference, freed in `deinit`.
public final class LibvirtStorageVolume {
    private let handle: virStorageVolPtr
    public let name: String

    init(owning handle: virStorageVolPtr) {
        self.handle = handle
        self.name = LibvirtCall.borrowedString { virStorageVolGetName(handle) }
    }

    deinit {
        LibvirtCall.release { virStorageVolFree(handle) }
    }

    /// The file (or device) path QEMU opens; what a `<disk type='file'>` names.
    public func path() throws -> String {
        try LibvirtCall.ownedString(doing: "cannot read the path of volume \(name)") {
            virStorageVolGetPath(handle)
        }
    }

    /// Deletes the volume and its file.
    public func delete() throws {
        try LibvirtCall.check(doing: "cannot delete volume \(name)") { virStorageVolDelete(handle, 0) }
    }
}

@available(*, unavailable)
extension LibvirtStorageVolume: Sendable {}

extension LibvirtConnection {
    /// Nil when no pool has this name.
    public func lookupStoragePool(name: String) throws -> LibvirtStoragePool? {
        let context = "cannot look up storage pool \(name)"
        let handle = try liveHandle(doing: context)
        return try LibvirtCall.lookup(doing: context, notFound: VIR_ERR_NO_STORAGE_POOL) {
            virStoragePoolLookupByName(handle, name)
        }.map(LibvirtStoragePool.init(owning:))
    }

    /// Defines a persistent pool; does not build or start it.
    public func defineStoragePool(xml: String) throws -> LibvirtStoragePool {
        let context = "cannot define a storage pool"
        let handle = try liveHandle(doing: context)
        let pool = try LibvirtCall.run(doing: context) { virStoragePoolDefineXML(handle, xml, 0) }
        return LibvirtStoragePool(owning: pool)
    }

    /// Makes sure a `dir` pool `name` over `path` exists, is active and freshly scanned: defines, builds, starts
    /// and autostarts it when missing; builds and starts it when defined but inactive (its directory may have
    /// been removed since). An existing pool of another type or over another directory is an error rather
    /// than silently used: volumes would land where the operator does not expect them.
    @discardableResult
    public func ensureDirectoryPool(name: String, path: String) throws -> LibvirtStoragePool {
        if let pool = try lookupStoragePool(name: name) {
            let target = try StorageXML.poolTarget(xml: pool.xmlDesc())
            guard target.type == "dir", StorageXML.samePath(target.path, path) else {
                let found = "a \(target.type ?? "?") pool over \(target.path ?? "nothing")"
                throw LibvirtError(
                    code: Int32(VIR_ERR_OPERATION_INVALID.rawValue), domain: Int32(VIR_FROM_STORAGE.rawValue),
                    message: "storage pool \(name) is \(found), not a dir pool over \(path); use another pool "
                        + "name or remove that pool (virsh pool-destroy \(name); virsh pool-undefine \(name))",
                    libvirtMessage: "")
            }
            if try !pool.isActive() {
                try pool.build()
                try pool.start()
            }
            try pool.refresh()
            return pool
        }
        let pool = try defineStoragePool(xml: StorageXML.directoryPool(name: name, path: path))
        do {
            try pool.build()
            try pool.start()
            try pool.setAutostart(true)
        } catch {
            // Leaving a defined pool behind would make the next attempt find it "existing" with whatever
            // went wrong (a bad path) baked in.
            if (try? pool.isActive()) == false {
                try? pool.undefine()
            }
            throw error
        }
        return pool
    }

    /// The volume in pool `pool`; throws when the pool does not exist, since that is a configuration error.
    public func createVolume(pool poolName: String, xml: String) throws -> LibvirtStorageVolume {
        try requirePool(poolName).createVolume(xml: xml)
    }

    /// Nil when the pool or the volume does not exist.
    public func lookupVolume(pool poolName: String, name: String) throws -> LibvirtStorageVolume? {
        try lookupStoragePool(name: poolName)?.lookupVolume(name: name)
    }

    func requirePool(_ name: String) throws -> LibvirtStoragePool {
        guard let pool = try lookupStoragePool(name: name) else {
            throw LibvirtError(
                code: Int32(VIR_ERR_NO_STORAGE_POOL.rawValue), domain: Int32(VIR_FROM_STORAGE.rawValue),
                message: "storage pool \(name) does not exist; the worker creates it at startup (ensurePool)",
                libvirtMessage: "")
        }
        return pool
    }
}

/// The pool and volume documents Berth hands libvirt, with every value escaped.
public enum StorageXML {
    public static func directoryPool(name: String, path: String) -> String {
        """
        <pool type='dir'>
          <name>\(escape(name))</name>
          <target>
            <path>\(escape(path))</path>
          </target>
        </pool>
        """
    }

    /// A qcow2 copy-on-write overlay over `backingPath`: the instance writes to the overlay, the cached image
    /// underneath is shared and never written. `capacityBytes` is the guest's disk size (at least the
    /// backing image's, or QEMU refuses).
    public static func overlayVolume(
        name: String, capacityBytes: UInt64, backingPath: String, backingFormat: DiskFormat
    ) -> String {
        """
        <volume>
          <name>\(escape(name))</name>
          <capacity unit='bytes'>\(capacityBytes)</capacity>
          <target>
            <format type='qcow2'/>
          </target>
          <backingStore>
            <path>\(escape(backingPath))</path>
            <format type='\(backingFormat.rawValue)'/>
          </backingStore>
        </volume>
        """
    }

    /// A raw volume of `capacityBytes`, sparse until written (libvirt allocates nothing up front).
    public static func rawVolume(name: String, capacityBytes: UInt64) -> String {
        """
        <volume>
          <name>\(escape(name))</name>
          <capacity unit='bytes'>\(capacityBytes)</capacity>
          <allocation unit='bytes'>0</allocation>
          <target>
            <format type='raw'/>
          </target>
        </volume>
        """
    }

    /// Escapes text and single- or double-quoted attribute values. The main writer is BerthCore's, which this
    /// module cannot import; these documents are small and fixed, so this is all they need.
    static func escape(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for character in value {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }

    /// libvirt stores a pool path without a trailing slash; an operator may write one.
    static func samePath(_ a: String?, _ b: String) -> Bool {
        func normal(_ path: String) -> Substring {
            var path = Substring(path)
            while path.count > 1 && path.hasSuffix("/") { path = path.dropLast() }
            return path
        }
        return a.map { normal($0) == normal(b) } ?? false
    }

    /// The `type` attribute and `<target><path>` of a pool's XML.
    static func poolTarget(xml: String) throws -> (type: String?, path: String?) {
        let reader = PoolTargetReader()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.delegate = reader
        guard parser.parse() else {
            throw LibvirtError(
                code: Int32(VIR_ERR_XML_ERROR.rawValue), domain: Int32(VIR_FROM_STORAGE.rawValue),
                message: "libvirt returned storage pool XML that does not parse", libvirtMessage: "")
        }
        return (reader.type, reader.path)
    }
}

private final class PoolTargetReader: NSObject, XMLParserDelegate {
    var type: String?
    var path: String?
    private var elements: [String] = []
    private var text = ""

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        if elements.isEmpty && elementName == "pool" {
            type = attributes["type"]
        }
        elements.append(elementName)
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
    }

    func parser(
        _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
    ) {
        if elements == ["pool", "target", "path"] {
            path = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        elements.removeLast()
    }
}
