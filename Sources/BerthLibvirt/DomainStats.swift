import CLibvirt

/// One domain's figures from libvirt's bulk stats (`virsh domstats`), copied out of libvirt.
///
/// `values` is keyed by libvirt's field names ("state.state", "cpu.time", "balloon.current", "block.0.rd.bytes",
/// "net.1.tx.bytes", ...), every numeric type read as a `Double`; string fields ("block.0.name") are left out.
public struct DomainStatsRecord: Sendable, Equatable {
    public var uuid: String
    public var name: String
    public var values: [String: Double]

    public init(uuid: String, name: String, values: [String: Double]) {
        self.uuid = uuid
        self.name = name
        self.values = values
    }

    public subscript(field: String) -> Double? { values[field] }
}

/// Which groups of figures to ask libvirt for (`virDomainStatsTypes`).
public struct DomainStatsGroups: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32

    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    public static let state = DomainStatsGroups(rawValue: VIR_DOMAIN_STATS_STATE.rawValue)
    public static let cpuTotal = DomainStatsGroups(rawValue: VIR_DOMAIN_STATS_CPU_TOTAL.rawValue)
    public static let balloon = DomainStatsGroups(rawValue: VIR_DOMAIN_STATS_BALLOON.rawValue)
    public static let interface = DomainStatsGroups(rawValue: VIR_DOMAIN_STATS_INTERFACE.rawValue)
    public static let block = DomainStatsGroups(rawValue: VIR_DOMAIN_STATS_BLOCK.rawValue)

    /// What the metrics poller turns into samples.
    public static let metrics: DomainStatsGroups = [.state, .cpuTotal, .balloon, .interface, .block]
}

extension LibvirtConnection {
    /// Bulk stats of every domain (`virConnectGetAllDomainStats`), running ones only when `activeOnly`.
    ///
    /// Drivers that leave out the CPU or balloon groups (the test driver reports only `state.*`) get "cpu.time",
    /// "balloon.current" and "balloon.maximum" filled from `virDomainGetInfo` per domain, so a sample always has
    /// CPU time and memory; disk and network figures come only from the bulk call.
    public func allDomainStats(
        _ groups: DomainStatsGroups = .metrics, activeOnly: Bool = true
    ) throws -> [DomainStatsRecord] {
        let context = "cannot read domain statistics from libvirt"
        let handle = try liveHandle(doing: context)
        var flags: UInt32 = activeOnly ? VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE.rawValue : 0
        // NOWAIT: a domain busy in a job (migration, snapshot) is reported without the figures that need its
        // monitor instead of blocking the libvirt thread, which every boot shares, until the job ends.
        flags |= VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT.rawValue
        var list: UnsafeMutablePointer<virDomainStatsRecordPtr?>?
        func stats(_ flags: UInt32) throws(LibvirtError) -> Int32 {
            try LibvirtCall.check(doing: context) { virConnectGetAllDomainStats(handle, groups.rawValue, &list, flags) }
        }
        var count: Int32 = 0
        do throws(LibvirtError) {
            count = try stats(flags)
        } catch {
            guard error.hasCode(VIR_ERR_INVALID_ARG) || error.hasCode(VIR_ERR_NO_SUPPORT) else { throw error }
            // libvirt older than 4.5, or a driver that does not know the flag: ask again without it.
            count = try stats(flags & ~VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT.rawValue)
        }
        guard let list else { return [] }
        // Everything is copied out before the list (and the domain references it holds) is released.
        defer { virDomainStatsRecordListFree(list) }
        var records: [DomainStatsRecord] = []
        records.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            guard let record = list[index]?.pointee, let domain = record.dom else { continue }
            var copied = DomainStatsRecord(
                uuid: LibvirtDomain.uuidString(of: domain),
                name: LibvirtCall.borrowedString { virDomainGetName(domain) },
                values: Self.numbers(record.params, count: Int(record.nparams)))
            Self.fillFromDomainInfo(&copied, domain: domain, groups: groups)
            records.append(copied)
        }
        return records
    }

    static func numbers(_ params: virTypedParameterPtr?, count: Int) -> [String: Double] {
        guard let params, count > 0 else { return [:] }
        var values: [String: Double] = [:]
        values.reserveCapacity(count)
        for param in UnsafeBufferPointer(start: params, count: count) {
            guard let number = number(param) else { continue }
            // The field may fill its whole buffer with no terminator of its own.
            let field = withUnsafeBytes(of: param.field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            values[field] = number
        }
        return values
    }

    /// A typed parameter's value as a `Double` for the numeric types; nil for strings and types newer than
    /// this code, which are skipped.
    private static func number(_ param: virTypedParameter) -> Double? {
        switch virTypedParameterType(UInt32(bitPattern: param.type)) {
        case VIR_TYPED_PARAM_INT: Double(param.value.i)
        case VIR_TYPED_PARAM_UINT: Double(param.value.ui)
        case VIR_TYPED_PARAM_LLONG: Double(param.value.l)
        case VIR_TYPED_PARAM_ULLONG: Double(param.value.ul)
        case VIR_TYPED_PARAM_DOUBLE: param.value.d
        case VIR_TYPED_PARAM_BOOLEAN: param.value.b != 0 ? 1 : 0
        default: nil
        }
    }

    private static func fillFromDomainInfo(
        _ record: inout DomainStatsRecord, domain: virDomainPtr, groups: DomainStatsGroups
    ) {
        let wantsCPU = groups.contains(.cpuTotal) && record.values["cpu.time"] == nil
        let wantsMemory = groups.contains(.balloon) && record.values["balloon.current"] == nil
        guard wantsCPU || wantsMemory else { return }
        var info = virDomainInfo()
        // A domain that stopped since the bulk call has nothing more to say; it keeps what it had.
        guard (try? LibvirtCall.check(doing: "") { virDomainGetInfo(domain, &info) }) != nil else { return }
        if wantsCPU {
            record.values["cpu.time"] = Double(info.cpuTime)
        }
        if wantsMemory {
            record.values["balloon.current"] = Double(info.memory)
            record.values["balloon.maximum"] = record.values["balloon.maximum"] ?? Double(info.maxMem)
        }
    }
}

extension LibvirtHost {
    /// Bulk stats of the running domains whose names start with `prefix` (Berth's are "berth-"), ordered by name.
    /// A read, so safe to repeat after a reconnect.
    public func allDomainStats(
        prefix: String, groups: DomainStatsGroups = .metrics
    ) throws -> [DomainStatsRecord] {
        try withConnection { connection in
            try connection.allDomainStats(groups).filter { $0.name.hasPrefix(prefix) }.sorted { $0.name < $1.name }
        }
    }

    /// The XML definition (live when running) of each domain in `uuids`, for reading Berth's metadata from it;
    /// a uuid whose domain no longer exists is left out. The whole definition rather than
    /// `virDomainGetMetadata`, because that hands the element back without its namespace, which is what tells
    /// Berth's metadata from anyone else's.
    public func domainXML(uuids: [String]) throws -> [String: String] {
        try withConnection { connection in
            var found: [String: String] = [:]
            for uuid in uuids {
                do {
                    if let xml = try connection.lookupDomain(uuid: uuid)?.xmlDesc() {
                        found[uuid] = xml
                    }
                } catch let error as LibvirtError where error.hasCode(VIR_ERR_NO_DOMAIN) {
                    // Undefined between the stats call and this one: nothing to tag.
                }
            }
            return found
        }
    }
}
