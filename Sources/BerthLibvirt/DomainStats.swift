// Both: libvirt's constants can belong to either module, depending on which clang built first.
import CBerthShims
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
        var err = berth_virt_error()
        var count = berth_virConnectGetAllDomainStats(handle, groups.rawValue, flags, &list, &err)
        if count < 0 {
            let error = LibvirtError(err, doing: context)
            // libvirt older than 4.5, or a driver that does not know the flag: ask again without it.
            guard error.hasCode(VIR_ERR_INVALID_ARG) || error.hasCode(VIR_ERR_NO_SUPPORT) else { throw error }
            flags &= ~VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT.rawValue
            count = try LibvirtCall.check(doing: context) {
                berth_virConnectGetAllDomainStats(handle, groups.rawValue, flags, &list, $0)
            }
        }
        guard let list else { return [] }
        // Everything is copied out before the list (and the domain references it holds) is released.
        defer { berth_virDomainStatsRecordListFree(list) }
        var records: [DomainStatsRecord] = []
        records.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            guard let record = list[index]?.pointee, let domain = record.dom else { continue }
            var copied = DomainStatsRecord(
                uuid: Self.uuidString(of: domain),
                name: LibvirtCall.borrowedString { berth_virDomainGetName(domain, $0) },
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
        var field = [CChar](repeating: 0, count: Int(VIR_TYPED_PARAM_FIELD_LENGTH) + 1)
        for index in 0..<count {
            var number = 0.0
            guard berth_virTypedParameterNumber(params + index, &number) == 1 else { continue }
            berth_virTypedParameterField(params + index, &field)
            values[String(decoding: field.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)] = number
        }
        return values
    }

    private static func fillFromDomainInfo(
        _ record: inout DomainStatsRecord, domain: virDomainPtr, groups: DomainStatsGroups
    ) {
        let wantsCPU = groups.contains(.cpuTotal) && record.values["cpu.time"] == nil
        let wantsMemory = groups.contains(.balloon) && record.values["balloon.current"] == nil
        guard wantsCPU || wantsMemory else { return }
        var info = virDomainInfo()
        var err = berth_virt_error()
        // A domain that stopped since the bulk call has nothing more to say; it keeps what it had.
        guard berth_virDomainGetInfo(domain, &info, &err) == 0 else { return }
        if wantsCPU {
            record.values["cpu.time"] = Double(info.cpuTime)
        }
        if wantsMemory {
            record.values["balloon.current"] = Double(info.memory)
            record.values["balloon.maximum"] = record.values["balloon.maximum"] ?? Double(info.maxMem)
        }
    }

    private static func uuidString(of domain: virDomainPtr) -> String {
        var buffer = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
        var err = berth_virt_error()
        guard berth_virDomainGetUUIDString(domain, &buffer, &err) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
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
