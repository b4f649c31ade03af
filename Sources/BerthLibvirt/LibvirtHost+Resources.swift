import CLibvirt

/// A domain as the worker sees it, copied out of libvirt so it can leave the libvirt thread.
public struct DomainSummary: Sendable, Equatable {
    public var name: String
    public var uuid: String
    public var state: DomainState
    /// The live definition when running, else the persistent one.
    public var xml: String

    public init(name: String, uuid: String, state: DomainState, xml: String) {
        self.name = name
        self.uuid = uuid
        self.state = state
        self.xml = xml
    }

    init(_ domain: LibvirtDomain) throws {
        self.init(name: domain.name, uuid: domain.uuidString, state: try domain.state(), xml: try domain.xmlDesc())
    }
}

/// Domains and storage for the worker. Each method is safe to repeat: asking for what exists already, or
/// deleting what is gone, answers instead of failing, so a retried request or a cleanup after a crash works.
extension LibvirtHost {
    /// Defines the domain and starts it. If it cannot start, a domain this call defined is undefined again, so a
    /// failed boot leaves nothing behind; a domain that existed before (a retried request) is left as it was.
    /// A domain that already runs is reported as it is, not started twice. `uuid`, when the caller knows the
    /// XML's uuid, answers "did it exist before" with one lookup instead of listing every domain on the host
    /// (a cost that grew with each domain: a boot among 1,000 domains formatted 1,000 uuids).
    public func defineAndStart(xml: String, uuid: String? = nil) throws -> DomainSummary {
        try withConnection { connection in
            try DomainSummary(Self.defineAndStart(xml: xml, uuid: uuid, on: connection))
        }
    }

    private static func defineAndStart(xml: String, uuid: String?, on connection: LibvirtConnection) throws
        -> LibvirtDomain
    {
        // Which uuids existed before tells "this call created it" from "it was there", without parsing
        // the XML; the actor runs one call at a time, so nothing of this worker's comes in between.
        let existing: Set<String> =
            if let uuid {
                Set(try connection.lookupDomain(uuid: uuid).map { [$0.uuidString] } ?? [])
            } else {
                Set(try connection.listDomains().map(\.uuidString))
            }
        let domain = try connection.defineDomain(xml: xml)
        if try domain.isActive() {
            return domain
        }
        do {
            try domain.create()
        } catch {
            if !existing.contains(domain.uuidString) {
                try? domain.undefine()
            }
            throw error
        }
        return domain
    }

    /// Nil when no domain has this uuid.
    public func domain(uuid: String) throws -> DomainSummary? {
        try withConnection { connection in try connection.lookupDomain(uuid: uuid).map(DomainSummary.init) }
    }

    /// Nil when no domain has this name.
    public func domain(name: String) throws -> DomainSummary? {
        try withConnection { connection in try connection.lookupDomain(name: name).map(DomainSummary.init) }
    }

    /// Domains whose names start with `prefix` (Berth's are "berth-"), ordered by name.
    public func listDomains(prefix: String) throws -> [DomainSummary] {
        try withConnection { connection in
            var summaries: [DomainSummary] = []
            for domain in try connection.listDomains(namePrefix: prefix) {
                do {
                    summaries.append(try DomainSummary(domain))
                } catch let error as LibvirtError where error.hasCode(VIR_ERR_NO_DOMAIN) {
                    // Undefined between listing and reading: it is no longer there to report.
                }
            }
            return summaries
        }
    }

    /// Stops the domain if it runs and removes its definition. False when no such domain exists.
    public func destroyAndUndefine(uuid: String) throws -> Bool {
        try withConnection { connection in
            guard let domain = try connection.lookupDomain(uuid: uuid) else { return false }
            do {
                let persistent = try domain.isPersistent()
                try domain.destroy()
                // A transient domain is gone once stopped; there is no definition to remove.
                if persistent {
                    try domain.undefine()
                }
            } catch let error as LibvirtError where error.hasCode(VIR_ERR_NO_DOMAIN) {
                // Someone else removed it in between: the outcome the caller asked for.
            }
            return true
        }
    }

    /// See `LibvirtConnection.ensureDirectoryPool`. Checked once per connection for the same name and
    /// directory; `recheck` checks (and refreshes) it again.
    public func ensurePool(name: String, path: String, recheck: Bool = false) throws {
        if !recheck, readyPools[name] == path { return }
        readyPools[name] = nil
        try withConnection { connection in _ = try connection.ensureDirectoryPool(name: name, path: path) }
        readyPools[name] = path
    }

    /// Starts a guest in one visit to the libvirt thread (a boot used to make four, each two thread
    /// switches): its root overlay, when it has one, replacing a leftover volume of a boot that died half-way,
    /// then its filled volume (a config drive) the same way, then the domain, defined and started as
    /// `defineAndStart` does. A domain that fails to start takes the volumes made for it along. Returns the
    /// domain's name.
    public func startGuest(
        xml: String, uuid: String, overlay: OverlayVolume?, filled: FilledVolume? = nil
    ) throws(GuestStartFailure) -> String {
        if let overlay {
            do {
                try replaceOverlay(overlay)
            } catch {
                // The pool may have been stopped or removed behind the worker's back: check it again, once.
                do {
                    try ensurePool(name: overlay.pool, path: overlay.poolPath, recheck: true)
                    try replaceOverlay(overlay)
                } catch {
                    throw GuestStartFailure(stage: .rootDisk, error: error)
                }
            }
        }
        if let filled {
            do {
                try replaceFilled(filled)
            } catch {
                if let overlay { _ = try? deleteVolume(pool: overlay.pool, name: overlay.name) }
                _ = try? deleteVolume(pool: filled.pool, name: filled.name)
                throw GuestStartFailure(stage: .filledVolume, error: error)
            }
        }
        do {
            return try withConnection { connection in
                try Self.defineAndStart(xml: xml, uuid: uuid, on: connection).name
            }
        } catch {
            if let overlay { _ = try? deleteVolume(pool: overlay.pool, name: overlay.name) }
            if let filled { _ = try? deleteVolume(pool: filled.pool, name: filled.name) }
            throw GuestStartFailure(stage: .domain, error: error)
        }
    }

    private func replaceFilled(_ volume: FilledVolume) throws {
        try ensurePool(name: volume.pool, path: volume.poolPath)
        _ = try deleteVolume(pool: volume.pool, name: volume.name)
        let path = try withConnection { connection in
            try connection.requirePool(volume.pool).createVolume(
                xml: StorageXML.rawVolume(name: volume.name, capacityBytes: volume.capacityBytes)
            ).path()
        }
        try volume.fill(path)
    }

    private func replaceOverlay(_ overlay: OverlayVolume) throws {
        try ensurePool(name: overlay.pool, path: overlay.poolPath)
        _ = try deleteVolume(pool: overlay.pool, name: overlay.name)
        _ = try createOverlay(
            pool: overlay.pool, name: overlay.name, backingPath: overlay.backingPath,
            backingFormat: overlay.backingFormat, capacityBytes: overlay.capacityBytes)
    }

    /// Rescans a pool so files placed in its directory by other means become volumes.
    public func refreshPool(name: String) throws {
        try withConnection { connection in try connection.requirePool(name).refresh() }
    }

    /// Creates a qcow2 overlay volume over `backingPath` and returns the overlay's path. A volume of that name
    /// that already exists is an error, not reused: it may hold a previous guest's writes, and deleting it here
    /// could pull a disk from under a running domain. The caller decides (`deleteVolume`).
    public func createOverlay(
        pool: String, name: String, backingPath: String, backingFormat: DiskFormat, capacityBytes: UInt64
    ) throws -> String {
        try withConnection { connection in
            let storagePool = try connection.requirePool(pool)
            if try storagePool.lookupVolume(name: name) != nil {
                throw LibvirtError(
                    code: Int32(VIR_ERR_STORAGE_VOL_EXIST.rawValue), domain: Int32(VIR_FROM_STORAGE.rawValue),
                    message: "volume \(name) already exists in storage pool \(pool); delete it first if it is left "
                        + "from a failed boot (virsh vol-delete \(name) --pool \(pool))",
                    libvirtMessage: "")
            }
            let xml = StorageXML.overlayVolume(
                name: name, capacityBytes: capacityBytes, backingPath: backingPath, backingFormat: backingFormat)
            return try storagePool.createVolume(xml: xml).path()
        }
    }

    /// The path of a volume; nil when the pool or volume does not exist.
    public func volumePath(pool: String, name: String) throws -> String? {
        try withConnection { connection in try connection.lookupVolume(pool: pool, name: name)?.path() }
    }

    /// Deletes a volume and its file. False when it, or its whole pool, is already gone: either way there is
    /// nothing left to delete.
    public func deleteVolume(pool: String, name: String) throws -> Bool {
        try withConnection { connection in
            guard let volume = try connection.lookupVolume(pool: pool, name: name) else { return false }
            do {
                try volume.delete()
            } catch let error as LibvirtError where error.hasCode(VIR_ERR_NO_STORAGE_VOL) {
                return false
            }
            return true
        }
    }
}

/// A guest's root disk: a qcow2 overlay named `name` in the `dir` pool `pool` (over `poolPath`) backed by
/// `backingPath`.
public struct OverlayVolume: Sendable, Equatable {
    public var pool: String
    public var poolPath: String
    public var name: String
    public var backingPath: String
    public var backingFormat: DiskFormat
    public var capacityBytes: UInt64

    public init(
        pool: String, poolPath: String, name: String, backingPath: String, backingFormat: DiskFormat,
        capacityBytes: UInt64
    ) {
        self.pool = pool
        self.poolPath = poolPath
        self.name = name
        self.backingPath = backingPath
        self.backingFormat = backingFormat
        self.capacityBytes = capacityBytes
    }
}

/// A small raw volume in a `dir` pool that the caller fills before the guest starts, such as a config drive.
public struct FilledVolume: Sendable {
    public var pool: String
    public var poolPath: String
    public var name: String
    public var capacityBytes: UInt64
    /// Writes the volume's content into its file. It runs on the libvirt thread: keep it small.
    public var fill: @Sendable (_ path: String) throws -> Void

    public init(
        pool: String, poolPath: String, name: String, capacityBytes: UInt64,
        fill: @escaping @Sendable (_ path: String) throws -> Void
    ) {
        self.pool = pool
        self.poolPath = poolPath
        self.name = name
        self.capacityBytes = capacityBytes
        self.fill = fill
    }
}

/// Why `startGuest` failed: which step, and libvirt's error.
public struct GuestStartFailure: Error, CustomStringConvertible {
    public enum Stage: Sendable { case rootDisk, filledVolume, domain }
    public let stage: Stage
    public let error: any Error

    public var description: String { "\(error)" }
}
