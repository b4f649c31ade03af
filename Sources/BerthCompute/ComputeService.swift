import BerthBlocking
import BerthCatalog
import BerthCore
import BerthDigest
import BerthDiskImage
import BerthJSON
import BerthLibvirt
import BerthWire
import Foundation
import Glibc
import Logging
import Synchronization

/// Where a worker keeps what it makes on its host.
public struct ComputeConfiguration: Sendable {
    /// `cache/` (image data per host), `instances/` (the libvirt storage pool of root disks), `consoles/`,
    /// `locks/` (lock files by instance uuid, so workers on one host never build the same instance twice).
    public var stateDirectory: String
    public var poolName: String = "berth"
    /// The libvirt domain type: `qemu` (TCG), `kvm`, or `test` for the in-process test driver.
    public var domainType: DomainSpec.DomainType
    /// Attach a config drive to every VM, as Nova's `force_config_drive`; otherwise only to boots that ask
    /// (`config_drive: true`).
    public var forceConfigDrive = false

    public init(stateDirectory: String, domainType: DomainSpec.DomainType) {
        self.stateDirectory = stateDirectory
        self.domainType = domainType
    }

    var cacheDirectory: String { stateDirectory + "/cache" }
    var poolDirectory: String { stateDirectory + "/instances" }
    var consoleDirectory: String { stateDirectory + "/consoles" }
    var lockDirectory: String { stateDirectory + "/locks" }

    /// `test` for the test driver's URIs, otherwise `qemu` (TCG). KVM is not chosen on its own: a `/dev/kvm`
    /// that opens is no proof that guests run under it (nested or restricted hosts), and a kvm domain that
    /// cannot run spins silently; operators with working KVM say `--virt-type kvm`, as Nova's `virt_type`.
    public static func defaultDomainType(libvirtURI: String) -> DomainSpec.DomainType {
        libvirtURI.hasPrefix("test:") ? .test : .qemu
    }
}

/// Boots, describes and deletes instances on this host: the catalog says what to boot, BerthCore decides how,
/// libvirt does it. Every operation is idempotent by instance uuid.
public struct ComputeService: Sendable {
    public let host: String
    public let catalog: any Catalog
    public let libvirt: LibvirtHost
    public let configuration: ComputeConfiguration
    let locks: InstanceLocks
    let cache: ImageCache
    /// Where boot durations go (the metrics poller publishes them); nil: not measured.
    public var metrics: MetricsRecorder?

    public init(host: String, catalog: any Catalog, libvirt: LibvirtHost, configuration: ComputeConfiguration) {
        self.host = host
        self.catalog = catalog
        self.libvirt = libvirt
        self.configuration = configuration
        self.locks = InstanceLocks(directory: configuration.lockDirectory)
        self.cache = ImageCache(directory: configuration.cacheDirectory)
    }

    // MARK: boot_instance

    public func boot(_ request: BootRequest, requestID: String?, logger: Logger) async throws(BerthError) -> JSONObject {
        let began = ContinuousClock.now
        guard request.target == .vm else {
            throw .invalidRequest("instance.target 'baremetal' is not served by this worker yet; use target 'vm'")
        }
        try checkGuestData(request)
        let image = try await lookupImage(request.imageID)
        guard !image.isKernel, !image.isRamdisk else {
            throw .invalidImage(
                "image \(image.id) is a \(image.isKernel ? "kernel (aki)" : "ramdisk (ari)"); boot a disk image whose "
                    + "kernel_id/ramdisk_id properties name it instead")
        }
        // A placeholder boots from a volume: its snapshot's (or volume's) image metadata is the lowest layer.
        let rootDevice = try image.isPlaceholder ? placeholderRoot(image) : nil
        var volumeImageMetadata: [String: String]?
        if let rootDevice { volumeImageMetadata = try await sourceMetadata(rootDevice) }
        let capabilities = try await hostCapabilities()
        let resolved = try ResolvedBoot.resolve(
            image: image, volumeImageMetadata: volumeImageMetadata, overrides: request.overrides, host: capabilities,
            codec: JSONCodec.self)
        try await checkFlavorFits(request.flavor)

        // Everything below touches shared state: one builder per instance uuid on this host.
        return try await locks.withLock(request.uuid) { () async throws(BerthError) -> JSONObject in
            let existing = try await existingInstance(request.uuid)
            let root: RootDisk
            if let rootDevice {
                root = try await volumeRoot(rootDevice, request: request, create: existing == nil)
            } else {
                guard image.size > 0 else {
                    throw .invalidImage("image \(image.id) has no data (status \(image.status)); upload its data first")
                }
                root = .overlay(over: image)
            }
            var spec = try await domainSpec(
                for: request, image: image, resolved: resolved, root: root, requestID: requestID)
            spec.metadata.fingerprint = SHA256Digest.fingerprint(spec.canonicalText)
            if let existing {
                return try repeatOrConflict(existing, spec: spec)
            }
            do throws(BerthError) {
                try spec.validate()
                let created = try await create(spec, request: request, root: root, logger: logger)
                metrics?.bootFinished(InstanceTags(spec.metadata, uuid: request.uuid), since: began)
                return created
            } catch {
                if case .volume(let id, _, true) = root { await discardVolume(id, logger: logger) }
                throw error
            }
        }
    }

    /// User data and keys reach a VM only on its config drive: accepting them without one would answer ACTIVE
    /// for a guest that never sees them.
    private func checkGuestData(_ request: BootRequest) throws(BerthError) {
        guard !wantsConfigDrive(request) else { return }
        var given: [String] = []
        if request.userData != nil { given.append("user_data") }
        if !request.publicKeys.isEmpty { given.append("public_keys") }
        guard given.isEmpty else {
            throw .invalidRequest(
                "instance.\(given.joined(separator: " and instance.")) reach a VM only on a config drive; set "
                    + "instance.config_drive to true (or run the worker with --force-config-drive)")
        }
    }

    func wantsConfigDrive(_ request: BootRequest) -> Bool {
        request.configDrive || configuration.forceConfigDrive
    }

    /// Where an instance's root disk comes from.
    enum RootDisk {
        /// A qcow2 overlay in the worker's pool over the host's cached copy of the image.
        case overlay(over: CatalogImage)
        /// A catalog volume, used as it is; `createdForInstance` when this boot made it from a snapshot.
        case volume(id: String, path: String, createdForInstance: Bool)
    }

    private func placeholderRoot(_ image: CatalogImage) throws(BerthError) -> RootBlockDevice {
        try RootBlockDevice.parse(
            blockDeviceMapping: image.properties["block_device_mapping"] ?? "", imageID: image.id, codec: JSONCodec.self)
    }

    /// The image metadata a volume or snapshot carries, or a clear error when the placeholder's source is gone.
    private func sourceMetadata(_ root: RootBlockDevice) async throws(BerthError) -> [String: String] {
        do throws(CatalogError) {
            switch root.source {
            case .snapshot(let id): return try await catalog.snapshot(id: id).volumeImageMetadata
            case .volume(let id): return try await catalog.volume(id: id).volumeImageMetadata
            }
        } catch  where error.kind == .snapshotNotFound || error.kind == .volumeNotFound {
            let what: String
            switch root.source {
            case .snapshot(let id): what = "snapshot \(id)"
            case .volume(let id): what = "volume \(id)"
            }
            throw BerthError(
                .volumeNotFound,
                "the placeholder image's \(what) is gone, so there is nothing to boot from; boot another image or "
                    + "create a new placeholder (create_placeholder_image) from an existing volume or snapshot")
        } catch {
            throw .buildFailed("cannot read the catalog: \(error)")
        }
    }

    /// The root volume of a volume-backed boot: a new volume from the snapshot (its id is the instance uuid,
    /// so a repeated request finds it instead of copying again), or the placeholder's volume itself.
    private func volumeRoot(
        _ root: RootBlockDevice, request: BootRequest, create: Bool
    ) async throws(BerthError) -> RootDisk {
        switch root.source {
        case .snapshot(let snapshotID):
            return try await BerthError.catalog { () async throws(CatalogError) -> RootDisk in
                let made = try? await catalog.volume(id: request.uuid)
                if !create || made != nil {
                    return .volume(
                        id: request.uuid, path: try await catalog.volumeDataPath(id: request.uuid),
                        createdForInstance: true)
                }
                let snapshot = try await catalog.snapshot(id: snapshotID)
                let size = max(root.volumeSizeGB, snapshot.sizeGB, request.flavor.rootGB)
                let volume = try await catalog.createVolume(
                    id: request.uuid, name: "instance-\(request.uuid)", sizeGB: size, fromImage: nil,
                    fromSnapshot: snapshotID, bootable: true)
                return .volume(
                    id: volume.id, path: try await catalog.volumeDataPath(id: volume.id), createdForInstance: true)
            }
        case .volume(let volumeID):
            if create {
                let user: String?
                do {
                    user = try await instanceUsing(volume: volumeID)
                } catch {
                    throw .buildFailed("cannot prepare the root volume: \(error)")
                }
                if let user {
                    throw .invalidRequest(
                        "volume \(volumeID) is the root disk of instance \(user) already; a volume boots one instance "
                            + "at a time. Snapshot it and make a placeholder from the snapshot to boot copies")
                }
            }
            let path = try await BerthError.catalog { () async throws(CatalogError) in
                try await catalog.volumeDataPath(id: volumeID)
            }
            return .volume(id: volumeID, path: path, createdForInstance: false)
        }
    }

    private func instanceUsing(volume: String) async throws -> String? {
        for domain in try await libvirt.listDomains(prefix: DomainSpec.namePrefix) {
            if let metadata = try? DomainMetadata.parse(xml: domain.xml), metadata.volumeID == volume {
                return domain.uuid
            }
        }
        return nil
    }

    private func discardVolume(_ id: String, logger: Logger) async {
        do {
            try await catalog.deleteVolume(id: id, force: true)
        } catch {
            logger.warning("could not remove the root volume of a failed boot", metadata: ["volume_id": "\(id)", "error": "\(error)"])
        }
    }

    private func lookupImage(_ id: String) async throws(BerthError) -> CatalogImage {
        try await BerthError.catalog { () async throws(CatalogError) in try await catalog.image(id: id) }
    }

    private func hostCapabilities() async throws(BerthError) -> HostCapabilities {
        do {
            return try await libvirt.capabilities()
        } catch {
            throw .buildFailed("cannot read this host's libvirt capabilities: \(error)")
        }
    }

    private func checkFlavorFits(_ flavor: Flavor) async throws(BerthError) {
        let node: NodeInfo
        do {
            node = try await libvirt.nodeInfo()
        } catch {
            throw .buildFailed("cannot read this host's size from libvirt: \(error)")
        }
        var reasons: [String] = []
        if flavor.vcpus > node.cpus {
            reasons.append("flavor \(flavor.name) needs \(flavor.vcpus) vCPUs; this host has \(node.cpus)")
        }
        let hostMB = Int(node.memoryKiB / 1024)
        if flavor.memoryMB > hostMB {
            reasons.append("flavor \(flavor.name) needs \(flavor.memoryMB) MiB of memory; this host has \(hostMB) MiB")
        }
        guard reasons.isEmpty else {
            throw .hostIncompatible(reasons.joined(separator: "; ") + "; choose a smaller flavor or another host")
        }
    }

    /// The domain this request describes, with every path chosen by the worker (never by the request).
    private func domainSpec(
        for request: BootRequest, image: CatalogImage, resolved: ResolvedBoot, root: RootDisk, requestID: String?
    ) async throws(BerthError) -> DomainSpec {
        let boot: DomainSpec.Boot
        if let kernelID = resolved.kernelID {
            let kernel = try await cachedImage(kernelID, role: "kernel_id", mustBe: \.isKernel, format: "aki")
            var initrd: String?
            if let ramdiskID = resolved.ramdiskID {
                initrd = try await cachedImage(ramdiskID, role: "ramdisk_id", mustBe: \.isRamdisk, format: "ari")
            }
            boot = .kernel(kernelPath: kernel, initrdPath: initrd, cmdline: resolved.kernelCommandLine?.text ?? "")
        } else {
            boot = .disk
        }
        let architecture = resolved.architecture.flatMap(GuestNames.architecture)
        var volumeID: String?
        let rootDisk: DiskSpec
        switch root {
        case .overlay:
            rootDisk = DiskSpec(
                source: .volume(pool: configuration.poolName, name: Self.rootVolumeName(request.uuid)), format: .qcow2,
                bus: resolved.diskBus)
        case .volume(let id, let path, _):
            volumeID = id
            rootDisk = DiskSpec(source: .file(path: path), format: .raw, bus: resolved.diskBus)
        }
        var disks = [rootDisk]
        var configDrive: String?
        if wantsConfigDrive(request) {
            // Read-only on the image's disk bus, after the root disk: the guest finds it by its label.
            configDrive = Self.configDriveFormat
            disks.append(
                DiskSpec(
                    source: .volume(pool: configuration.poolName, name: Self.configDriveVolumeName(request.uuid)),
                    format: .raw, bus: resolved.diskBus, readOnly: true))
        }
        let metadata = DomainMetadata(
            instanceName: request.name, imageID: image.id, flavor: request.flavor, requestID: requestID,
            projectID: request.projectID, userID: request.userID, volumeID: volumeID, kernelCmdline: resolved.kernelCommandLine?.text,
            bootVariant: resolved.selection.summary, configDrive: configDrive)
        return DomainSpec(
            uuid: request.uuid, vcpus: request.flavor.vcpus, memoryMB: request.flavor.memoryMB,
            domainType: configuration.domainType, osType: resolved.vmMode, architecture: architecture,
            machineType: resolved.machineType, boot: boot,
            disks: disks,
            network: .none, clock: resolved.clock,
            consoleLogPath: configuration.domainType == .test ? nil : consoleLogPath(request.uuid), metadata: metadata)
    }

    private func cachedImage(
        _ id: String, role: String, mustBe check: KeyPath<CatalogImage, Bool>, format: String
    ) async throws(BerthError) -> String {
        let image: CatalogImage
        do throws(CatalogError) {
            image = try await catalog.image(id: id)
        } catch  where error.kind == .imageNotFound {
            throw .invalidImage("the image's \(role) \(id) is not in the catalog; upload it or fix the property")
        } catch {
            throw .buildFailed("cannot read the catalog: \(error)")
        }
        guard image[keyPath: check] else {
            throw .invalidImage(
                "the image's \(role) \(id) is a '\(image.diskFormat)' image; it must have disk_format \(format)")
        }
        return try await cache.path(for: image, catalog: catalog)
    }

    private func create(
        _ spec: DomainSpec, request: BootRequest, root: RootDisk, logger: Logger
    ) async throws(BerthError) -> JSONObject {
        if spec.consoleLogPath != nil { try ensureConsoleDirectory() }
        var overlay: OverlayVolume?
        if case .overlay(let image) = root {
            let backing = try await cache.path(for: image, catalog: catalog)
            try await Self.inspectBacking(backing, of: image)
            let rootBytes = max(UInt64(request.flavor.rootGB) << 30, UInt64(image.virtualSize ?? image.size), 1 << 20)
            overlay = OverlayVolume(
                pool: configuration.poolName, poolPath: configuration.poolDirectory,
                name: Self.rootVolumeName(request.uuid), backingPath: backing,
                backingFormat: image.diskFormat == "qcow2" ? .qcow2 : .raw, capacityBytes: rootBytes)
        }
        var configDrive: FilledVolume?
        if spec.metadata.configDrive != nil {
            let content = ConfigDriveContent(request: request)
            // The test driver's pools live in its memory: there is no file to format.
            let writes = configuration.domainType != .test
            configDrive = FilledVolume(
                pool: configuration.poolName, poolPath: configuration.poolDirectory,
                name: Self.configDriveVolumeName(request.uuid), capacityBytes: ConfigDriveImage.sizeBytes
            ) { path in
                if writes { try ConfigDriveImage.write(content, toVolumeAt: path) }
            }
        }
        let xml = DomainXML.render(spec)
        do {
            let name = try await libvirt.startGuest(xml: xml, uuid: spec.uuid, overlay: overlay, filled: configDrive)
            logger.info("instance started", metadata: ["domain": "\(name)", "image_id": "\(spec.metadata.imageID)"])
        } catch {
            switch error.stage {
            case .rootDisk:
                throw .buildFailed("cannot create the root disk in storage pool \(configuration.poolName): \(error)")
            case .filledVolume:
                throw .buildFailed("cannot write the config drive in storage pool \(configuration.poolName): \(error)")
            case .domain:
                throw .buildFailed("libvirt could not start the instance: \(error)")
            }
        }
        return result(uuid: spec.uuid, metadata: spec.metadata, status: "ACTIVE")
    }

    /// QEMU opens the overlay's backing image and follows what its header names: the inspector judges it first,
    /// with the words a bare-metal deploy of it gets, before any volume exists. The catalog inspects what it hands
    /// out; this also covers a copy that sat in the worker's cache since before the inspector existed.
    static func inspectBacking(_ path: String, of image: CatalogImage) async throws(BerthError) {
        try await HostThreads.inspections.runToCompletion { () throws(BerthError) in
            do throws(CatalogError) {
                _ = try ImageDataInspection.inspect(path: path, declared: image.diskFormat)
            } catch {
                throw BerthError.from(error)
            }
        }
    }

    /// The directory of the guests' console logs; one `mkdir` per boot, so a directory removed while the
    /// worker runs comes back.
    private func ensureConsoleDirectory() throws(BerthError) {
        let path = configuration.consoleDirectory
        if mkdir(path, 0o755) == 0 || errno == EEXIST { return }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw .buildFailed("cannot create \(path): \(error.localizedDescription)")
        }
    }

    func existingInstance(_ uuid: String) async throws(BerthError) -> DomainSummary? {
        do {
            return try await libvirt.domain(uuid: uuid)
        } catch {
            throw .buildFailed("cannot look up instance \(uuid) in libvirt: \(error)")
        }
    }

    /// A request for a uuid that already exists: the same spec is a repeat (a redelivery, a retry) and gets
    /// the same answer; anything else is a different instance that must not replace this one.
    private func repeatOrConflict(_ existing: DomainSummary, spec: DomainSpec) throws(BerthError) -> JSONObject {
        guard let metadata = try DomainMetadata.parse(xml: existing.xml) else {
            throw .instanceExists(
                "a libvirt domain with uuid \(spec.uuid) exists but was not made by Berth (\(existing.name)); use "
                    + "another uuid", differences: [])
        }
        guard metadata.fingerprint == spec.metadata.fingerprint else {
            throw .instanceExists(
                "instance \(spec.uuid) exists with a different specification; delete it first or use another uuid",
                differences: metadata.differences(from: spec.metadata))
        }
        // The boot succeeded once; its answer is ACTIVE whatever the guest did since (get_instance tells that).
        return result(uuid: spec.uuid, metadata: metadata, status: "ACTIVE")
    }

    func result(uuid: String, metadata: DomainMetadata, status: String) -> JSONObject {
        [
            "uuid": .string(uuid), "status": .string(status), "host": .string(host),
            "image_id": .string(metadata.imageID), "domain": .string(DomainSpec.namePrefix + uuid),
            "kernel_cmdline": metadata.kernelCmdline.map(JSONValue.string) ?? .null,
            "boot_variant": metadata.bootVariant.map(JSONValue.string) ?? .null,
            "volume_id": metadata.volumeID.map(JSONValue.string) ?? .null,
            "config_drive": .bool(metadata.configDrive != nil),
        ]
    }

    // MARK: get_instance / delete_instance

    public func describe(uuid: String) async throws(BerthError) -> JSONObject {
        guard let domain = try await existingInstance(uuid), let metadata = try DomainMetadata.parse(xml: domain.xml)
        else {
            throw .instanceNotFound(uuid)
        }
        var answer = result(uuid: uuid, metadata: metadata, status: Self.status(domain.state))
        answer["name"] = .string(metadata.instanceName)
        answer["power_state"] = .string("\(domain.state)")
        answer["flavor"] = [
            "name": .string(metadata.flavor.name), "vcpus": .int(Int64(metadata.flavor.vcpus)),
            "memory_mb": .int(Int64(metadata.flavor.memoryMB)), "root_gb": .int(Int64(metadata.flavor.rootGB)),
        ]
        answer["project_id"] = metadata.projectID.map(JSONValue.string) ?? .null
        answer["request_id"] = metadata.requestID.map(JSONValue.string) ?? .null
        return answer
    }

    /// Destroys and undefines the domain and deletes its root disk and console log. Deleting what is not
    /// there is not an error: the caller wanted it gone, and it is.
    public func delete(uuid: String, logger: Logger) async throws(BerthError) -> (result: JSONObject, imageID: String?) {
        try await locks.withLock(uuid) { () async throws(BerthError) in
            let existing = try await existingInstance(uuid)
            let metadata = existing.flatMap { try? DomainMetadata.parse(xml: $0.xml) }
            do {
                if existing != nil { _ = try await libvirt.destroyAndUndefine(uuid: uuid) }
                _ = try await libvirt.deleteVolume(pool: configuration.poolName, name: Self.rootVolumeName(uuid))
                _ = try await libvirt.deleteVolume(pool: configuration.poolName, name: Self.configDriveVolumeName(uuid))
            } catch {
                throw .buildFailed("libvirt could not delete instance \(uuid): \(error)")
            }
            // A root volume this worker made from a snapshot goes with its instance (delete_on_termination);
            // a volume the placeholder named is the user's and stays.
            let leftover = metadata == nil ? try? await catalog.volume(id: uuid) : nil
            if metadata?.volumeID == uuid || leftover != nil {
                await discardVolume(uuid, logger: logger)
            }
            let imageID = metadata?.imageID
            try? FileManager.default.removeItem(atPath: consoleLogPath(uuid))
            if existing != nil { logger.info("instance deleted", metadata: ["instance_uuid": "\(uuid)"]) }
            return (["uuid": .string(uuid), "status": "DELETED", "host": .string(host)], imageID)
        }
    }

    /// This host's Berth instances, for `berth status`.
    public func list() async throws -> [JSONObject] {
        var answers: [JSONObject] = []
        for domain in try await libvirt.listDomains(prefix: DomainSpec.namePrefix) {
            guard let metadata = try? DomainMetadata.parse(xml: domain.xml) else { continue }
            var answer = result(uuid: domain.uuid, metadata: metadata, status: Self.status(domain.state))
            answer["name"] = .string(metadata.instanceName)
            answers.append(answer)
        }
        return answers
    }

    // MARK: Names

    static func rootVolumeName(_ uuid: String) -> String { "\(uuid)-root.qcow2" }

    static func configDriveVolumeName(_ uuid: String) -> String { "\(uuid)-config.vfat" }

    /// The config drive's filesystem, as Nova's `config_drive_format` names it.
    static let configDriveFormat = "vfat"

    func consoleLogPath(_ uuid: String) -> String { "\(configuration.consoleDirectory)/\(uuid).log" }

    /// Nova's instance states for libvirt's domain states.
    static func status(_ state: DomainState) -> String {
        switch state {
        case .running, .blocked: "ACTIVE"
        case .paused, .pmSuspended: "PAUSED"
        case .shuttingDown, .shutOff: "SHUTOFF"
        case .crashed: "ERROR"
        default: "UNKNOWN"
        }
    }
}

extension HostCapabilities: HostRunCheck {
    public func reasonsCannotRun(hypervisorType: String?, vmMode: String?, architecture: String?, pae: Bool?) -> [String] {
        canRun(hypervisorType: hypervisorType, vmMode: vmMode, architecture: architecture, pae: pae)
    }
}

extension BerthError {
    /// Runs catalog work, its failure in the worker's terms (`from`).
    static func catalog<T>(_ body: () async throws(CatalogError) -> T) async throws(BerthError) -> T {
        do {
            return try await body()
        } catch {
            throw from(error)
        }
    }

    static func from(_ error: CatalogError) -> BerthError {
        switch error.rpcClassName {
        case "ImageNotFound": BerthError(.imageNotFound, error.message)
        case "VolumeNotFound": BerthError(.volumeNotFound, error.message)
        case "InvalidImage": .invalidImage(error.message)
        case "InvalidRequest": .invalidRequest(error.message)
        default: .buildFailed(error.message)
        }
    }
}

/// Serialises work on one instance uuid: across worker processes on the same host with `flock` on one of
/// `stripes` lock files, `locks/<nn>.lock`, chosen by a hash of the uuid, and within this process with a task
/// queue per stripe in front of it. A fixed set of files rather than one per uuid: creating an inode for
/// every boot cost ~0.5 ms of ext4 journal work (more on a busy disk) and left a file behind per instance ever
/// booted. Two uuids that share a stripe only wait for each other; no caller holds two instance locks at once,
/// so that cannot deadlock.
///
/// Nothing here blocks a thread. The queue per stripe means only another process can hold the file lock when
/// this one asks for it, so it is tried without blocking (`LOCK_NB`) and, while another process holds it,
/// tried again after a short sleep on the task's timer. (Queued per uuid, two uuids of one stripe each
/// blocked a dispatch thread in `flock` until the pool grew, stalling boots for seconds: issue 23.)
final class InstanceLocks: Sendable {
    static let stripes: UInt32 = 256

    let directory: String
    private let waiting = Mutex<[UInt32: [CheckedContinuation<Void, Never>]]>([:])

    init(directory: String) {
        self.directory = directory
    }

    func withLock<T: Sendable>(
        _ uuid: String, _ body: () async throws(BerthError) -> T
    ) async throws(BerthError) -> T {
        let stripe = Self.stripe(uuid)
        await acquire(stripe)
        defer { release(stripe) }
        let descriptor = try await fileLock(stripe)
        defer {
            flock(descriptor, LOCK_UN)
            close(descriptor)
        }
        return try await body()
    }

    private func acquire(_ stripe: UInt32) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let mustWait = waiting.withLock { table in
                if table[stripe] != nil {
                    table[stripe]!.append(continuation)
                    return true
                }
                table[stripe] = []
                return false
            }
            if !mustWait { continuation.resume() }
        }
    }

    private func release(_ stripe: UInt32) {
        let next = waiting.withLock { table -> CheckedContinuation<Void, Never>? in
            guard var queue = table[stripe], !queue.isEmpty else {
                table[stripe] = nil
                return nil
            }
            let first = queue.removeFirst()
            table[stripe] = queue
            return first
        }
        next?.resume()
    }

    /// The stripe's file lock, which only another process can hold at this point: tried without blocking,
    /// again after 1 ms, doubling to 50 ms between tries, until it is free or the task is cancelled.
    private func fileLock(_ stripe: UInt32) async throws(BerthError) -> Int32 {
        let path = "\(directory)/\(String(stripe, radix: 16)).lock"
        var descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if descriptor < 0, errno == ENOENT {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        }
        guard descriptor >= 0 else {
            throw .buildFailed("cannot open lock file \(path): \(String(cString: strerror(errno)))")
        }
        var pause = Duration.milliseconds(1)
        while flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            guard code == EWOULDBLOCK else {
                close(descriptor)
                throw .buildFailed("cannot lock \(path): \(String(cString: strerror(code)))")
            }
            do {
                try await Task.sleep(for: pause)
            } catch {
                close(descriptor)
                throw .buildFailed("stopped while another process held the instance lock \(path)")
            }
            pause = min(pause * 2, .milliseconds(50))
        }
        return descriptor
    }

    /// FNV-1a of the uuid's text: the same stripe in every process (Swift's `Hasher` is seeded per process).
    static func stripe(_ uuid: String) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for byte in uuid.lowercased().utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        return hash % stripes
    }
}

/// Image data on this host, one file per image id, shared by every instance that boots from it. The local
/// catalog's files never change once written, so a hard link is a free, safe cache entry; across file
/// systems the data is copied once.
final class ImageCache: Sendable {
    let directory: String

    init(directory: String) {
        self.directory = directory
    }

    func path(for image: CatalogImage, catalog: any Catalog) async throws(BerthError) -> String {
        let target = "\(directory)/\(image.id)"
        if FileManager.default.fileExists(atPath: target) { return target }
        let source: String
        source = try await BerthError.catalog { () async throws(CatalogError) in
            try await catalog.localImageData(id: image.id)
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let temporary = "\(directory)/.\(image.id).\(UUID().uuidString)"
            if link(source, temporary) != 0 {
                try FileManager.default.copyItem(atPath: source, toPath: temporary)
            }
            // rename() replaces atomically; a concurrent worker that cached it first wrote the same bytes.
            guard rename(temporary, target) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporary)
                throw BerthError.buildFailed("cannot cache image \(image.id) in \(directory): \(reason)")
            }
            // When a concurrent boot linked the same catalog file first, both names are links to one inode and
            // rename() leaves both in place (POSIX): remove ours, or every such race leaves a link behind.
            unlink(temporary)
            return target
        } catch let error as BerthError {
            throw error
        } catch {
            throw .buildFailed("cannot cache image \(image.id) in \(directory): \(error.localizedDescription)")
        }
    }
}
