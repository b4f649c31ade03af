import ArgumentParser
import BerthCompute
import BerthCore
import BerthJSON
import Foundation
import Logging

/// `berth deploy`: the bare-metal deploy a worker runs for `boot_instance` with `target: "baremetal"`, on this
/// host without the bus, with a progress bar. For an operator preparing a disk by hand, and for testing images.
struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an image and a config drive to a bare-metal disk on this host, with a progress bar.",
        discussion: """
            The same deploy a worker runs for boot_instance with target "baremetal": the image is checked \
            (format, qcow2 features, size, checksum) before a byte is written, streamed to the disk, and a \
            config drive (config-2) is written to the config partition, which is created at the end of the \
            disk when the image has none. The deploy is recorded in --state-dir like a worker's.

            Example:
              berth deploy --image <id> --node node1=/dev/sdb --user-data cloud-config.yaml --key mykey="ssh-ed25519 AAAA..."
            """)

    @OptionGroup var catalog: CatalogOptions
    @Option(help: "Image id (a raw or qcow2 disk image).") var image: String
    @Option(help: ArgumentHelp("The node: NAME=PATH[:SECTOR_SIZE] (a block device or disk file).", valueName: "node"))
    var node: String
    @Option(help: "Instance name (the config drive's name and hostname).") var name = "berth-instance"
    @Option(help: "Instance uuid (default: a new one).") var uuid: String?
    @Option(help: "A file whose content becomes the config drive's user_data (at most 64 KiB).") var userData: String?
    @Option(name: .customLong("meta"), help: "Metadata key=value for meta_data.json (repeatable).")
    var metadata: [String] = []
    @Option(name: .customLong("key"), help: "A public key NAME=KEY for meta_data.json (repeatable).")
    var keys: [String] = []
    @Option(help: "Where deploy records are kept (a worker's --state-dir).") var stateDir = "/var/lib/berth"
    @Flag(help: "No progress bar.") var quiet = false
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var inventory = NodeInventory()
        do { try inventory.add(node) } catch { throw ValidationError(error.message) }
        let nodeName = inventory.nodes.keys.first!
        var instance: JSONObject = [
            "uuid": .string(uuid ?? UUID().uuidString.lowercased()), "name": .string(name), "image_id": .string(image),
            "flavor": ["name": "baremetal", "vcpus": 1, "memory_mb": 64, "root_gb": 0],
            "target": "baremetal", "node": .string(nodeName),
        ]
        var meta = JSONObject()
        for (key, value) in try parseProperties(metadata) { meta[key] = .string(value) }
        instance["metadata"] = .object(meta)
        var publicKeys = JSONObject()
        for (key, value) in try parseProperties(keys) { publicKeys[key] = .string(value) }
        instance["public_keys"] = .object(publicKeys)
        if let userData {
            guard let data = FileManager.default.contents(atPath: userData) else {
                throw ValidationError("--user-data: cannot read \(userData)")
            }
            instance["user_data"] = .string(data.base64EncodedString())
        }
        let catalog = try catalog.open(stateDirectory: stateDir)
        let service = BareMetalService(
            host: ProcessInfo.processInfo.hostName, catalog: catalog, inventory: inventory, stateDirectory: stateDir)
        let bar = ProgressBar(enabled: !quiet && isatty(STDERR_FILENO) != 0)
        let request = try BootRequest.decode(.object(instance))
        let result = try await service.deploy(
            request, requestID: nil, logger: Logger(label: "berth.deploy"), progress: bar.update)
        bar.finish()
        try output.show(result)
    }
}

/// A one-line progress bar on standard error, redrawn in place.
final class ProgressBar: Sendable {
    let enabled: Bool

    init(enabled: Bool) { self.enabled = enabled }

    var update: @Sendable (UInt64, UInt64) -> Void {
        { [enabled] done, total in
            guard enabled else { return }
            let fraction = total == 0 ? 1 : Double(done) / Double(total)
            let width = 40
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let line = String(
                format: "\r[%@] %3d%%  %@ / %@", bar, Int(fraction * 100), Self.size(done), Self.size(total))
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func size(_ bytes: UInt64) -> String {
        String(format: "%.1f MiB", Double(bytes) / 1_048_576)
    }
}
