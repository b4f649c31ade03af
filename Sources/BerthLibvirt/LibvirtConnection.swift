import CLibvirt

/// What `virNodeGetInfo` reports about the host.
public struct NodeInfo: Sendable, Equatable {
    public var cpuModel: String
    public var memoryKiB: UInt64
    public var cpus: Int
    public var mhz: Int
    public var numaNodes: Int
    public var sockets: Int
    public var cores: Int
    public var threads: Int

    public init(
        cpuModel: String, memoryKiB: UInt64, cpus: Int, mhz: Int = 0, numaNodes: Int = 1, sockets: Int = 1,
        cores: Int = 1, threads: Int = 1
    ) {
        self.cpuModel = cpuModel
        self.memoryKiB = memoryKiB
        self.cpus = cpus
        self.mhz = mhz
        self.numaNodes = numaNodes
        self.sockets = sockets
        self.cores = cores
        self.threads = threads
    }
}

/// The one owner of a libvirt `virConnectPtr`.
///
/// Every method blocks in libvirt (for `qemu:///system` that is an RPC to libvirtd), so use it from a thread that
/// may block: `LibvirtHost` runs it on its own thread. Not `Sendable`: it has one owner, which closes it.
public final class LibvirtConnection {
    public let uri: String
    private var handle: virConnectPtr?

    /// Opens a connection; the error says whether libvirtd is down, the URI is wrong or access was refused.
    public init(uri: String) throws {
        do throws(LibvirtError) {
            self.handle = try LibvirtCall.run(doing: "cannot connect to libvirt at \(uri)") { virConnectOpen(uri) }
        } catch {
            throw error.adding(hint: error.openHint)
        }
        self.uri = uri
    }

    deinit {
        close()
    }

    /// Closes the connection; later calls throw. Safe to call twice. A failed close is not reported: the
    /// reference is gone either way and there is nothing the caller could do about it.
    public func close() {
        guard let handle else { return }
        self.handle = nil
        LibvirtCall.release { virConnectClose(handle) }
    }

    public var isClosed: Bool { handle == nil }

    /// False once the connection to libvirtd is lost (or closed). For remote URIs this checks the client's
    /// socket state without a round trip, so it is cheap enough to ask before every call.
    public func isAlive() -> Bool {
        guard let handle else { return false }
        return (try? LibvirtCall.flag(doing: "") { virConnectIsAlive(handle) }) ?? false
    }

    /// The capabilities document (`virsh capabilities`).
    public func capabilitiesXML() throws -> String {
        try ownedString(doing: "cannot read libvirt capabilities") { virConnectGetCapabilities($0) }
    }

    public func capabilities() throws -> HostCapabilities {
        try HostCapabilities.parse(xml: capabilitiesXML())
    }

    public func hostname() throws -> String {
        try ownedString(doing: "cannot read the host name from libvirt") { virConnectGetHostname($0) }
    }

    /// The libvirt library version, e.g. "9.0.0".
    public func libVersion() throws -> String {
        var version: UInt = 0
        try check(doing: "cannot read the libvirt version") { virConnectGetLibVersion($0, &version) }
        return Self.formatVersion(version)
    }

    /// The hypervisor's version as libvirt reports it (QEMU's for qemu://, e.g. "7.2.0").
    public func hypervisorVersion() throws -> String {
        var version: UInt = 0
        try check(doing: "cannot read the hypervisor version") { virConnectGetVersion($0, &version) }
        return Self.formatVersion(version)
    }

    public func nodeInfo() throws -> NodeInfo {
        var info = virNodeInfo()
        try check(doing: "cannot read host CPU and memory from libvirt") { virNodeGetInfo($0, &info) }
        let model = withUnsafeBytes(of: &info.model) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return NodeInfo(
            cpuModel: model, memoryKiB: UInt64(info.memory), cpus: Int(info.cpus), mhz: Int(info.mhz),
            numaNodes: Int(info.nodes), sockets: Int(info.sockets), cores: Int(info.cores),
            threads: Int(info.threads))
    }

    /// Free host memory in bytes. Drivers that cannot tell (some report "not supported") fall back to the
    /// node's total memory, so capacity reporting degrades instead of failing the whole `describe_host`.
    public func freeMemoryBytes() throws -> UInt64 {
        let context = "cannot read free memory from libvirt"
        do {
            let handle = try liveHandle(doing: context)
            // 0 is both "no memory free" and "failed"; only a recorded error tells them apart.
            return try LibvirtCall.run(doing: context) {
                let bytes = virNodeGetFreeMemory(handle)
                return bytes == 0 && virGetLastError() != nil ? nil : UInt64(bytes)
            }
        } catch {
            guard isAlive() else { throw error }
            return try nodeInfo().memoryKiB * 1024
        }
    }

    /// vCPUs used by running domains.
    public func activeVcpus() throws -> Int {
        // Every reference gets its owner (which frees it) before anything else happens.
        try allDomains(flags: VIR_CONNECT_LIST_DOMAINS_ACTIVE.rawValue, doing: "cannot list running domains").reduce(0) { total, domain in
            // A domain that stops between listing and asking no longer uses vCPUs: skip it, keep going.
            total + ((try? domain.info().vcpus) ?? 0)
        }
    }

    /// libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release.
    static func formatVersion(_ version: UInt) -> String {
        "\(version / 1_000_000).\(version / 1_000 % 1_000).\(version % 1_000)"
    }

    /// The open handle, for the domain and storage calls in this module's other files.
    func liveHandle(doing context: String) throws -> virConnectPtr {
        guard let handle else { throw LibvirtError.closed(uri: uri, doing: context) }
        return handle
    }

    private func check(doing context: String, _ call: (virConnectPtr) -> Int32) throws {
        let handle = try liveHandle(doing: context)
        try LibvirtCall.check(doing: context) { call(handle) }
    }

    private func ownedString(doing context: String, _ call: (virConnectPtr) -> UnsafeMutablePointer<CChar>?) throws
        -> String
    {
        let handle = try liveHandle(doing: context)
        return try LibvirtCall.ownedString(doing: context) { call(handle) }
    }
}

/// One owner at a time: share a `LibvirtHost`, not the connection.
@available(*, unavailable)
extension LibvirtConnection: Sendable {}
