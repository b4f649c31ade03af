import BerthBlocking
import BerthCatalog
import BerthCore
import BerthWire
import BerthDiskImage
import BerthJSON
import Foundation
import Glibc
import Logging

/// The worker's bare-metal nodes: name → block device or disk file, from its own configuration. An RPC
/// names a node; it never names a path.
public struct NodeInventory: Sendable {
    public struct Node: Sendable, Equatable {
        public var name: String
        public var path: String
        public var sectorSize: Int
    }

    public private(set) var nodes: [String: Node] = [:]

    public init() {}

    /// `NAME=PATH` or `NAME=PATH:SECTOR_SIZE` (512 or 4096), as given to `berth worker --node`.
    public mutating func add(_ text: String) throws(BerthError) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .invalidRequest("--node takes NAME=PATH[:SECTOR_SIZE], got '\(text)'")
        }
        let name = String(text[..<equals])
        var path = String(text[text.index(after: equals)...])
        var sectorSize = 512
        if let colon = path.lastIndex(of: ":"), let size = Int(path[path.index(after: colon)...]) {
            sectorSize = size
            path = String(path[..<colon])
        }
        // What boot_instance's `node` accepts (BootRequest), so every node in the inventory can be named.
        guard CatalogID.isValid(name), name.utf8.count <= 63 else {
            throw .invalidRequest(
                "node name '\(name)' must be 1-63 letters, digits, '.', '_' or '-', not starting with '.' or '-'")
        }
        guard path.hasPrefix("/") else {
            throw .invalidRequest("node \(name): the path must be absolute, got '\(path)'")
        }
        guard sectorSize == 512 || sectorSize == 4096 else {
            throw .invalidRequest("node \(name): sector size must be 512 or 4096, got \(sectorSize)")
        }
        guard nodes[name] == nil else { throw .invalidRequest("node \(name) is listed twice") }
        nodes[name] = Node(name: name, path: path, sectorSize: sectorSize)
    }

    public func node(_ name: String) throws(BerthError) -> Node {
        guard let node = nodes[name] else { throw .nodeNotFound(name, known: nodes.keys.sorted()) }
        return node
    }
}

/// What a finished deploy leaves behind on the worker: the answer to repeats, `get_instance` and
/// `delete_instance`. One JSON file per instance, written atomically.
struct DeployRecord: Codable, Equatable {
    var uuid: String
    var name: String
    var node: String
    var imageID: String
    var fingerprint: String
    var requestID: String?
    /// What the deploy reported, so a repeated boot answers exactly what the first one did. Optional: records
    /// written before these were kept have neither.
    var bytesWritten: UInt64?
    var seconds: Double?

    enum CodingKeys: String, CodingKey {
        case uuid, name, node, fingerprint, seconds
        case imageID = "image_id"
        case requestID = "request_id"
        case bytesWritten = "bytes_written"
    }
}

/// Deploys images to bare-metal disks (DESIGN §6): refuse what cannot be written before writing anything,
/// stream the image to the disk, then find or make the config partition and write the config drive.
public struct BareMetalService: Sendable {
    public let host: String
    public let catalog: any Catalog
    public let inventory: NodeInventory
    /// Where a finished deploy reports its throughput (`deploy.throughput`, DESIGN §7); nil: not reported.
    public var metrics: MetricsRecorder?
    let recordDirectory: String

    public init(host: String, catalog: any Catalog, inventory: NodeInventory, stateDirectory: String) {
        self.host = host
        self.catalog = catalog
        self.inventory = inventory
        self.recordDirectory = stateDirectory + "/deploys"
    }

    /// Reports deploy progress (bytes written of the total).
    public typealias Progress = @Sendable (_ done: UInt64, _ total: UInt64) -> Void

    public func deploy(
        _ request: BootRequest, requestID: String?, logger: Logger, progress: @escaping Progress
    ) async throws(BerthError) -> JSONObject {
        guard let nodeName = request.node else {
            throw .invalidRequest(
                "instance.node is required for target 'baremetal'; known nodes: \(inventory.nodes.keys.sorted().joined(separator: ", "))"
            )
        }
        let node = try inventory.node(nodeName)
        let fingerprint = Self.fingerprint(request)
        // Held until the deploy is recorded (or failed): a second deploy to the node, from this worker or another
        // on the host, is refused instead of writing the same disk at the same time.
        let lease = try NodeLease(node: node, uuid: request.uuid, directory: recordDirectory)
        defer { withExtendedLifetime(lease) {} }
        let records = try loadRecords()
        if let existing = records.first(where: { $0.uuid == request.uuid }) {
            guard existing.fingerprint == fingerprint else {
                throw .instanceExists(
                    request.uuid, differences: ["the deploy request differs from the one that made it"])
            }
            return bootAnswer(existing)
        }
        // The request is well formed; the node is taken. DeployFailed, not InvalidRequest: another node may do.
        if let holder = records.first(where: { $0.node == node.name }) {
            throw .deployFailed(
                "node \(node.name) holds instance \(holder.uuid); delete that instance before deploying another")
        }
        let image = try await BerthError.catalog { () async throws(CatalogError) in
            try await catalog.image(id: request.imageID)
        }
        guard !image.isPlaceholder, !image.isKernel, !image.isRamdisk, image.size > 0 else {
            throw .invalidImage(
                "image \(image.id) has no disk data to write (a placeholder, kernel or ramdisk); deploy a raw or "
                    + "qcow2 disk image")
        }
        let imagePath = try await BerthError.catalog { () async throws(CatalogError) in
            try await catalog.localImageData(id: image.id)
        }
        let content = ConfigDriveContent(request: request)
        let started = ContinuousClock.now
        let report = try await Self.onDeployThread { () throws(BerthError) in
            try NodeDisk.checkNotInUse(node)
            try NodeDisk.checkWritable(node)
            // No second checksum pass: `localImageData` hands out only data it has verified against the image's
            // os_hash_value (or checksum), and `plan` pins that file's identity, so what is written is what was
            // verified. Hashing again cost as much as the write itself.
            let plan = try ImageWriter.plan(
                imagePath: imagePath, diskPath: node.path, sectorSize: node.sectorSize, checksum: nil)
            let written = try plan.write(progress: progress)
            let drive = try ConfigDriveDeployer.write(
                diskPath: node.path, sectorSize: node.sectorSize, content: content)
            return (written, drive)
        }
        let seconds =
            Double((ContinuousClock.now - started).components.seconds)
            + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
        logger.info(
            "deploy finished",
            metadata: [
                "node": "\(node.name)", "image_id": "\(image.id)", "seconds": "\(seconds)",
                "bytes_written": "\(report.0.bytesWritten)", "config_partition": "\(report.1.partitionNumber)",
            ])
        let record = DeployRecord(
            uuid: request.uuid, name: request.name, node: node.name, imageID: image.id, fingerprint: fingerprint,
            requestID: requestID, bytesWritten: report.0.bytesWritten, seconds: seconds)
        try save(record)
        metrics?.deployFinished(
            InstanceTags(
                instanceUUID: request.uuid, imageID: image.id, flavor: request.flavor.name,
                projectID: request.projectID, userID: request.userID),
            bytes: report.0.bytesWritten, seconds: seconds)
        return bootAnswer(record)
    }

    public func describe(uuid: String) throws(BerthError) -> JSONObject? {
        try loadRecords().first { $0.uuid == uuid }.map(result)
    }

    /// The image a deployed instance was made from, nil when this worker deployed no such instance.
    public func imageID(of uuid: String) throws(BerthError) -> String? {
        try loadRecords().first { $0.uuid == uuid }?.imageID
    }

    /// Forgets the deploy; the node is free for another. The disk keeps what was written (cleaning is a
    /// separate step in Ironic too).
    public func delete(uuid: String) throws(BerthError) -> String? {
        guard let record = try loadRecords().first(where: { $0.uuid == uuid }) else { return nil }
        unlink("\(recordDirectory)/\(uuid).json")
        return record.imageID
    }

    func result(_ record: DeployRecord) -> JSONObject {
        [
            "uuid": .string(record.uuid), "status": "ACTIVE", "host": .string(host),
            "image_id": .string(record.imageID),
            "node": .string(record.node), "kernel_cmdline": .null, "boot_variant": .null, "volume_id": .null,
        ]
    }

    /// `boot_instance`'s answer: the instance plus what the deploy wrote and how long it took. Built from the
    /// record for the first answer and for every repeat alike, so they are equal.
    func bootAnswer(_ record: DeployRecord) -> JSONObject {
        var answer = result(record)
        if let written = record.bytesWritten { answer["bytes_written"] = .int(Int64(clamping: written)) }
        if let seconds = record.seconds { answer["seconds"] = .double(seconds) }
        return answer
    }

    static func fingerprint(_ request: BootRequest) -> String {
        let keys = request.publicKeys.keys.sorted().map { "\($0)=\(request.publicKeys[$0]!)" }.joined(separator: ";")
        let meta = request.metadata.keys.sorted().map { "\($0)=\(request.metadata[$0]!)" }.joined(separator: ";")
        let userData =
            request.userData.map { String($0.count) + ":" + $0.map { String($0) }.joined(separator: ",") } ?? "-"
        return [request.uuid, request.name, request.imageID, request.node ?? "", keys, meta, userData].joined(
            separator: "\n")
    }

    // MARK: Records

    private func loadRecords() throws(BerthError) -> [DeployRecord] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: recordDirectory) else { return [] }
        var records: [DeployRecord] = []
        for name in names where name.hasSuffix(".json") && !name.hasPrefix(".") {
            guard let data = FileManager.default.contents(atPath: "\(recordDirectory)/\(name)"),
                let record = try? JSONCodec.decode(DeployRecord.self, from: [UInt8](data))
            else { continue }
            records.append(record)
        }
        return records
    }

    private func save(_ record: DeployRecord) throws(BerthError) {
        do {
            try FileManager.default.createDirectory(atPath: recordDirectory, withIntermediateDirectories: true)
            let bytes = try JSONCodec.encode(record)
            let temporary = "\(recordDirectory)/.\(record.uuid).json.tmp"
            try Data(bytes).write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, "\(recordDirectory)/\(record.uuid).json") == 0 else {
                throw BerthError.deployFailed("cannot record the deploy: \(String(cString: strerror(errno)))")
            }
        } catch let error as BerthError {
            throw error
        } catch {
            throw .deployFailed("cannot record the deploy in \(recordDirectory): \(error)")
        }
    }

    /// Disk writes block for minutes; they run on `HostThreads.deploys`, not the cooperative pool, and to the end
    /// once started.
    static func onDeployThread<T: Sendable>(_ body: @escaping @Sendable () throws(BerthError) -> T)
        async throws(BerthError) -> T
    {
        try await HostThreads.deploys.runToCompletion(body)
    }
}

/// Exclusive use of a node for one deploy: `flock` on `<state>/deploys/<node>.lock`, released when the lease is
/// freed (or the process dies). flock conflicts between any two opens of the file, so this covers concurrent
/// calls in one worker and workers sharing the host's state directory alike. The holder writes its instance
/// uuid into the file, so a refused deploy can say whose deploy is running.
final class NodeLease {
    private let descriptor: Int32

    init(node: NodeInventory.Node, uuid: String, directory: String) throws(BerthError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .deployFailed("cannot create the deploy state directory \(directory): \(error)")
        }
        let path = "\(directory)/\(node.name).lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw .deployFailed("cannot open the node lock \(path): \(String(cString: strerror(errno)))")
        }
        var result: Int32
        repeat { result = flock(fd, LOCK_EX | LOCK_NB) } while result != 0 && errno == EINTR
        guard result == 0 else {
            let code = errno
            let holder = Self.holder(fd)
            close(fd)
            guard code == EWOULDBLOCK else {
                throw .deployFailed("cannot lock node \(node.name) (\(path)): \(String(cString: strerror(code)))")
            }
            if holder == uuid {
                throw .deployFailed(
                    "instance \(uuid) is being deployed to node \(node.name) right now (an earlier request for it is "
                        + "still running); ask get_instance once it has finished")
            }
            throw .deployFailed(
                "node \(node.name) is being deployed right now (instance \(holder ?? "unknown")); wait for that "
                    + "deploy to finish and delete its instance before deploying another")
        }
        descriptor = fd
        let text = Array(uuid.utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The uuid the current holder wrote, if it has yet.
    private static func holder(_ fd: Int32) -> String? {
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: bytes[0..<count], as: UTF8.self)
        return BootRequest.isCanonicalUUID(text) ? text : nil
    }

    deinit { close(descriptor) }
}

/// Checks on the node's disk itself.
enum NodeDisk {
    /// A mounted device (or one of its partitions), or a disk another deploy holds, is not ours to write.
    static func checkNotInUse(_ node: NodeInventory.Node) throws(BerthError) {
        guard let resolved = realpath(node.path, nil) else {
            throw .deployFailed("node \(node.name)'s disk \(node.path) does not exist; fix the worker's --node list")
        }
        let path = String(cString: resolved)
        free(resolved)
        if let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) {
            for line in mounts.split(separator: "\n") {
                let source = line.split(separator: " ").first.map(String.init) ?? ""
                if source == path || (source.hasPrefix(path) && source.dropFirst(path.count).allSatisfy(\.isNumber))
                    || source.hasPrefix(path + "p")
                {
                    throw .deployFailed("node \(node.name)'s disk \(path) is mounted (\(source)); unmount it first")
                }
            }
        }
    }

    /// BLKRRPART (linux/fs.h): the kernel re-reads a disk's partition table.
    static let rereadPartitionTable: UInt = 0x125F

    /// What writing the node needs, tried before the first byte is written: the disk opens for writing, and
    /// for a block device the kernel lets this process re-read its partition table (BLKRRPART needs
    /// CAP_SYS_ADMIN; the config drive's partition is useless to the node until the kernel has seen it).
    /// Without this check a worker confined as the plain unit confines it wrote the whole image and failed
    /// only at the end, leaving the node's disk half-made.
    static func checkWritable(_ node: NodeInventory.Node) throws(BerthError) {
        let descriptor = open(node.path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            let reason = String(cString: strerror(code))
            let hint =
                code == EACCES || code == EPERM
                ? "; a block device is group disk: under systemd install the bare-metal drop-in "
                    + "(deploy/berth-worker@.service.d/baremetal.conf)" : ""
            throw .deployFailed(
                "cannot open node \(node.name)'s disk \(node.path) for writing: \(reason)\(hint); nothing was written")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFBLK else { return }
        guard ioctl(descriptor, rereadPartitionTable) != 0 else { return }
        switch errno {
        case EACCES, EPERM:
            throw .deployFailed(
                "this worker may not make the kernel re-read node \(node.name)'s partition table (BLKRRPART needs "
                    + "CAP_SYS_ADMIN), so the node would not see its config drive; nothing was written. Under systemd "
                    + "install the bare-metal drop-in (deploy/berth-worker@.service.d/baremetal.conf)")
        case EBUSY:
            throw .deployFailed(
                "node \(node.name)'s disk \(node.path) is in use (a partition is open: mounted, swap, device mapper "
                    + "or LVM); nothing was written; release it first")
        default:
            // EINVAL: a device without partitions of its own (a loop device without partscan): nothing to re-read.
            return
        }
    }
}
