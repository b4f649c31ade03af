import CLibvirt

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A domain's state as `virDomainGetState` reports it. The descriptions are the names Berth reports and logs.
public enum DomainState: Sendable, Hashable, CustomStringConvertible {
    case noState
    case running
    /// Running but waiting on a resource (libvirt's "idle" in virsh).
    case blocked
    case paused
    /// Being shut down: the guest was asked and has not finished.
    case shuttingDown
    case shutOff
    case crashed
    /// Suspended by guest power management (S3/S4).
    case pmSuspended
    /// A state newer than this code; kept so it is reported rather than misread.
    case unknown(Int32)

    init(libvirt value: Int32) {
        switch UInt32(bitPattern: value) {
        case VIR_DOMAIN_NOSTATE.rawValue: self = .noState
        case VIR_DOMAIN_RUNNING.rawValue: self = .running
        case VIR_DOMAIN_BLOCKED.rawValue: self = .blocked
        case VIR_DOMAIN_PAUSED.rawValue: self = .paused
        case VIR_DOMAIN_SHUTDOWN.rawValue: self = .shuttingDown
        case VIR_DOMAIN_SHUTOFF.rawValue: self = .shutOff
        case VIR_DOMAIN_CRASHED.rawValue: self = .crashed
        case VIR_DOMAIN_PMSUSPENDED.rawValue: self = .pmSuspended
        default: self = .unknown(value)
        }
    }

    /// Whether the domain has a QEMU process (anything but shut off or crashed, libvirt's "active").
    public var isActive: Bool {
        switch self {
        case .shutOff, .crashed, .noState: false
        default: true
        }
    }

    public var description: String {
        switch self {
        case .noState: "nostate"
        case .running: "running"
        case .blocked: "blocked"
        case .paused: "paused"
        case .shuttingDown: "shutdown"
        case .shutOff: "shutoff"
        case .crashed: "crashed"
        case .pmSuspended: "pmsuspended"
        case .unknown(let value): "unknown(\(value))"
        }
    }
}

/// What `virDomainGetInfo` reports.
public struct DomainInfo: Sendable, Equatable {
    public var state: DomainState
    public var maxMemoryKiB: UInt64
    public var memoryKiB: UInt64
    public var vcpus: Int
    public var cpuTimeNanoseconds: UInt64

    public init(state: DomainState, maxMemoryKiB: UInt64, memoryKiB: UInt64, vcpus: Int, cpuTimeNanoseconds: UInt64) {
        self.state = state
        self.maxMemoryKiB = maxMemoryKiB
        self.memoryKiB = memoryKiB
        self.vcpus = vcpus
        self.cpuTimeNanoseconds = cpuTimeNanoseconds
    }
}

/// The one owner of a `virDomainPtr` reference, freed in `deinit`.
///
/// Blocks like `LibvirtConnection`; use it inside `LibvirtHost.withConnection` and let it go there. libvirt's
/// domain object holds its own reference to the connection, so it stays usable even if the connection object
/// is released first.
public final class LibvirtDomain {
    let handle: virDomainPtr
    /// Read once: a domain object's name and uuid are fixed for its lifetime (a rename makes a new object).
    public let name: String
    /// The lower-case, hyphenated uuid; Berth uses the instance uuid.
    public let uuidString: String

    /// Takes over a reference the caller owns.
    init(owning handle: virDomainPtr) {
        self.handle = handle
        self.name = LibvirtCall.borrowedString { virDomainGetName(handle) }
        self.uuidString = Self.uuidString(of: handle)
    }

    deinit {
        LibvirtCall.release { virDomainFree(handle) }
    }

    /// "" for an invalid reference, which no owner holds (see `LibvirtCall.borrowedString`).
    static func uuidString(of handle: virDomainPtr) -> String {
        var buffer = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
        guard virDomainGetUUIDString(handle, &buffer) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Starts the defined domain (`virsh start`).
    public func create() throws {
        try LibvirtCall.check(doing: "cannot start domain \(name)") { virDomainCreate(handle) }
    }

    public func state() throws -> DomainState {
        var state: Int32 = 0
        var reason: Int32 = 0
        try LibvirtCall.check(doing: "cannot read the state of domain \(name)") {
            virDomainGetState(handle, &state, &reason, 0)
        }
        return DomainState(libvirt: state)
    }

    public func info() throws -> DomainInfo {
        var info = virDomainInfo()
        try LibvirtCall.check(doing: "cannot read CPU and memory of domain \(name)") {
            virDomainGetInfo(handle, &info)
        }
        return DomainInfo(
            state: DomainState(libvirt: Int32(info.state)), maxMemoryKiB: UInt64(info.maxMem),
            memoryKiB: UInt64(info.memory), vcpus: Int(info.nrVirtCpu), cpuTimeNanoseconds: UInt64(info.cpuTime))
    }

    public func isActive() throws -> Bool {
        try LibvirtCall.flag(doing: "cannot tell whether domain \(name) runs") { virDomainIsActive(handle) }
    }

    /// False for a transient domain, which libvirt forgets when it stops.
    public func isPersistent() throws -> Bool {
        try LibvirtCall.flag(doing: "cannot tell whether domain \(name) is persistent") {
            virDomainIsPersistent(handle)
        }
    }

    /// The live definition when running, else the persistent one. Without secure information (passwords).
    public func xmlDesc() throws -> String {
        try LibvirtCall.ownedString(doing: "cannot read the XML of domain \(name)") {
            virDomainGetXMLDesc(handle, 0)
        }
    }

    /// Stops the domain at once (pulls the plug). Returns false when it was not running, which is what the
    /// caller wanted anyway.
    @discardableResult
    public func destroy() throws -> Bool {
        do throws(LibvirtError) {
            try LibvirtCall.check(doing: "cannot stop domain \(name)") { virDomainDestroy(handle) }
            return true
        } catch {
            // libvirt says "domain is not running" as OPERATION_INVALID, a code other refusals share: ask again.
            if error.hasCode(VIR_ERR_OPERATION_INVALID), (try? isActive()) == false {
                return false
            }
            throw error
        }
    }

    /// Removes the persistent definition, with its managed save image, NVRAM, and snapshot and checkpoint
    /// metadata, all of which would otherwise make libvirt refuse. Drivers that do not know some of these
    /// flags (the test driver) get a plain undefine. A running domain becomes transient and goes when stopped.
    public func undefine() throws {
        let flags =
            VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.rawValue | VIR_DOMAIN_UNDEFINE_NVRAM.rawValue
            | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue | VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA.rawValue
        do throws(LibvirtError) {
            try LibvirtCall.check(doing: "cannot undefine domain \(name)") { virDomainUndefineFlags(handle, flags) }
        } catch {
            guard error.hasCode(VIR_ERR_INVALID_ARG) || error.hasCode(VIR_ERR_NO_SUPPORT) else { throw error }
            try LibvirtCall.check(doing: "cannot undefine domain \(name)") { virDomainUndefine(handle) }
        }
    }

    /// Sets (or with nil removes) the `<metadata>` element in namespace `uri`, written with prefix `key`, in
    /// both the persistent definition and the running domain, whichever exist.
    public func setMetadata(_ xml: String?, key: String, uri: String) throws {
        var flags: UInt32 = 0
        if try isPersistent() {
            flags |= VIR_DOMAIN_AFFECT_CONFIG.rawValue
        }
        if try isActive() {
            flags |= VIR_DOMAIN_AFFECT_LIVE.rawValue
        }
        let type = Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue)
        try LibvirtCall.check(doing: "cannot set metadata \(uri) of domain \(name)") {
            virDomainSetMetadata(handle, type, xml, key, uri, flags)
        }
    }

    /// The `<metadata>` element in namespace `uri` (as libvirt rewrites it), nil when the domain has none.
    public func metadata(uri: String) throws -> String? {
        let type = Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue)
        do throws(LibvirtError) {
            return try LibvirtCall.ownedString(doing: "cannot read metadata \(uri) of domain \(name)") {
                virDomainGetMetadata(handle, type, uri, 0)
            }
        } catch {
            guard error.hasCode(VIR_ERR_NO_DOMAIN_METADATA) else { throw error }
            return nil
        }
    }
}

/// One owner at a time, on the libvirt thread: share a `LibvirtHost`, not the domain.
@available(*, unavailable)
extension LibvirtDomain: Sendable {}

extension LibvirtConnection {
    /// Defines (or redefines, for the same name and uuid) a persistent domain; does not start it.
    public func defineDomain(xml: String) throws -> LibvirtDomain {
        let handle = try liveHandle(doing: "cannot define a libvirt domain")
        let domain = try LibvirtCall.run(doing: "cannot define a libvirt domain") { virDomainDefineXML(handle, xml) }
        return LibvirtDomain(owning: domain)
    }

    /// Nil when no domain has this uuid; a malformed uuid is an error.
    public func lookupDomain(uuid: String) throws -> LibvirtDomain? {
        let context = "cannot look up libvirt domain \(uuid)"
        let handle = try liveHandle(doing: context)
        return try LibvirtCall.lookup(doing: context, notFound: VIR_ERR_NO_DOMAIN) {
            virDomainLookupByUUIDString(handle, uuid)
        }.map(LibvirtDomain.init(owning:))
    }

    /// Nil when no domain has this name.
    public func lookupDomain(name: String) throws -> LibvirtDomain? {
        let context = "cannot look up libvirt domain \(name)"
        let handle = try liveHandle(doing: context)
        return try LibvirtCall.lookup(doing: context, notFound: VIR_ERR_NO_DOMAIN) {
            virDomainLookupByName(handle, name)
        }.map(LibvirtDomain.init(owning:))
    }

    /// Every domain, running or defined, whose name starts with `namePrefix` (all for ""), ordered by name.
    public func listDomains(namePrefix: String = "") throws -> [LibvirtDomain] {
        try allDomains(flags: 0, doing: "cannot list libvirt domains").filter { $0.name.hasPrefix(namePrefix) }.sorted { $0.name < $1.name }
    }

    /// `virConnectListAllDomains`. Every reference gets its owner before anything else happens, so those a
    /// caller filters out are freed too.
    func allDomains(flags: UInt32, doing context: String) throws -> [LibvirtDomain] {
        let handle = try liveHandle(doing: context)
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let count = try LibvirtCall.check(doing: context) { virConnectListAllDomains(handle, &list, flags) }
        guard let list else { return [] }
        defer { free(list) }
        return (0..<Int(count)).compactMap { list[$0].map(LibvirtDomain.init(owning:)) }
    }
}
