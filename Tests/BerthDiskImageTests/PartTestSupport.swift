import BerthCore
import BerthJSON
import Foundation
import Testing

@testable import BerthDiskImage

// Helpers for the partition, FAT and config-drive tests. Names carry a `Part` prefix because this test
// target is shared with the image-format tests.

/// A directory under the system temporary directory, removed when the test lets go of it.
final class PartTestDirectory: Sendable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("berth-part-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A sparse file of `bytes` (what `truncate -s` makes).
    func sparseFile(_ name: String, bytes: UInt64) throws -> String {
        let file = "\(path)/\(name)"
        guard FileManager.default.createFile(atPath: file, contents: nil) else {
            throw PartTestFailure("cannot create \(file)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        try handle.truncate(atOffset: bytes)
        try handle.close()
        return file
    }
}

/// A tool the tests need but nobody installed: the failure names the Debian package so CI can add it.
struct PartToolMissing: Error, CustomStringConvertible {
    var tool: String
    var package: String
    var description: String {
        "\(tool) is not installed; install the Debian package `\(package)` (apt-get install \(package))"
    }
}

struct PartToolResult {
    var status: Int32
    var output: String
    var errors: String
    var succeeded: Bool { status == 0 }
}

/// Debian package of each external tool the tests call.
let partToolPackages: [String: String] = [
    "sgdisk": "gdisk", "sfdisk": "fdisk", "mcopy": "mtools", "mdir": "mtools", "fsck.vfat": "dosfstools",
    "mkfs.vfat": "dosfstools", "blkid": "util-linux", "losetup": "mount", "python3": "python3 (and cloud-init)",
]

/// Runs an external tool (from /usr/sbin, /sbin or /usr/bin; Debian's python3 for cloud-init rather than a
/// pyenv one that cannot import it) and captures its output.
@discardableResult
func partTool(_ tool: String, _ arguments: [String], input: String? = nil) throws -> PartToolResult {
    let directories = tool == "python3" ? ["/usr/bin"] : ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    guard let executable = directories.map({ "\($0)/\(tool)" }).first(where: FileManager.default.isExecutableFile)
    else { throw PartToolMissing(tool: tool, package: partToolPackages[tool] ?? tool) }
    // A tool that exits before reading its script must fail the test, not kill the runner with SIGPIPE.
    signal(SIGPIPE, SIG_IGN)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var combined = ProcessInfo.processInfo.environment
    combined["LC_ALL"] = "C.UTF-8"
    process.environment = combined
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    let standardInput = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : standardInput
    try process.run()
    if let input {
        // Scripts are a few hundred bytes, far below a pipe's buffer, so writing before reading cannot block.
        try standardInput.fileHandleForWriting.write(contentsOf: Data(input.utf8))
        try standardInput.fileHandleForWriting.close()
    }
    // Drain stderr on another thread so a chatty tool cannot block on a full pipe while we read stdout.
    let errorData = PartPipeDrain(errors)
    let outputData = partReadToEnd(output.fileHandleForReading.fileDescriptor)
    process.waitUntilExit()
    return PartToolResult(
        status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
        errors: String(decoding: errorData.wait(), as: UTF8.self))
}

/// Reads a pipe to its end on a background thread.
final class PartPipeDrain: @unchecked Sendable {
    // Safe: `data` is written once by the reading thread before the semaphore is signalled and only read
    // after waiting on it.
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ pipe: Pipe) {
        Thread.detachNewThread { [self] in
            data = partReadToEnd(pipe.fileHandleForReading.fileDescriptor)
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}

/// Everything a descriptor yields until end of file. FileHandle.readDataToEndOfFile traps on EINTR
/// (it uses `try!`), which a signal arriving in a parallel test can cause; this loop retries instead.
func partReadToEnd(_ descriptor: Int32) -> Data {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count > 0 {
            data.append(contentsOf: buffer[0..<count])
        } else if count == 0 || errno != EINTR {
            return data
        }
    }
}

/// Runs a tool and fails the test with its output when it exits non-zero.
@discardableResult
func partToolChecked(_ tool: String, _ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws
    -> String
{
    let result = try partTool(tool, arguments)
    #expect(
        result.succeeded, "\(tool) \(arguments.joined(separator: " ")) exited \(result.status): \(result.errors)",
        sourceLocation: sourceLocation)
    return result.output
}

/// Partitions a file with sfdisk from a script (`label: gpt`, `size=..., type=..., name=...` lines).
func partSfdisk(_ disk: String, script: String, sectorSize: Int = 512) throws {
    var arguments = ["--no-reread", "--no-tell-kernel", "--wipe", "always", "-q"]
    if sectorSize != 512 { arguments += ["--sector-size", String(sectorSize)] }
    let result = try partTool("sfdisk", arguments + [disk], input: script)
    guard result.succeeded else { throw PartTestFailure("sfdisk failed on \(disk): \(result.errors)") }
}

/// A loop device over a disk file, detached when the test lets go of it. sfdisk 2.38 (Debian 12) has no
/// `--sector-size` and sgdisk takes 512 for any file, so 4096-byte-sector disks are checked through a loop
/// device with 4096-byte logical blocks, which also exercises the block-device path (BLKGETSIZE64,
/// BLKSSZGET, BLKRRPART).
final class PartLoopDevice: Sendable {
    let path: String

    init(file: String, sectorSize: Int) throws {
        let result = try partTool("losetup", ["--sector-size", String(sectorSize), "--find", "--show", file])
        guard result.succeeded, result.output.hasPrefix("/dev/") else {
            throw PartTestFailure(
                "losetup could not attach \(file) (\(result.errors.trimmingCharacters(in: .whitespacesAndNewlines))); "
                    + "the 4096-byte-sector tests need root and loop devices")
        }
        path = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    deinit { _ = try? partTool("losetup", ["--detach", path]) }
}

struct PartTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Copies `image` over the start of `disk` without truncating it: what writing a small image to a big
/// disk leaves behind.
func partCopyImage(_ image: String, onto disk: String) throws {
    let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: disk))
    try handle.seek(toOffset: 0)
    try handle.write(contentsOf: bytes)
    try handle.close()
}

func partReadBytes(_ path: String, offset: UInt64, count: Int) throws -> [UInt8] {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: offset)
    return [UInt8](try handle.read(upToCount: count) ?? Data())
}

/// Copies a byte range of a disk to its own file (what `dd skip= count=` does), for fsck.vfat.
func partExtract(_ disk: String, offset: UInt64, size: UInt64, to file: String) throws {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: disk))
    defer { try? handle.close() }
    try handle.seek(toOffset: offset)
    let data = try handle.read(upToCount: Int(size)) ?? Data()
    try data.write(to: URL(fileURLWithPath: file))
}

/// `sfdisk --json` of a disk, parsed: the `partitiontable` object.
func partSfdiskJSON(_ disk: String, sectorSize: Int = 512) throws -> JSONValue {
    var arguments = ["--json"]
    if sectorSize != 512 { arguments += ["--sector-size", String(sectorSize)] }
    let output = try partToolChecked("sfdisk", arguments + [disk])
    let parsed = try JSONCodec.parse(output)
    guard let table = parsed["partitiontable"] else {
        throw PartTestFailure("sfdisk --json printed no table: \(output)")
    }
    return table
}

/// `blkid -p -O <offset>` as a dictionary (LABEL, TYPE, ...).
func partBlkid(_ disk: String, offset: UInt64) throws -> [String: String] {
    let output = try partToolChecked("blkid", ["-p", "-o", "export", "-O", String(offset), disk])
    var values: [String: String] = [:]
    for line in output.split(separator: "\n") {
        let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
        if parts.count == 2 { values[parts[0]] = parts[1] }
    }
    return values
}

/// Everything the external tools say about a config drive written at `offset` of `disk`, checked:
/// blkid sees a vfat labelled config-2, fsck.vfat finds nothing to fix, mtools lists and extracts the tree,
/// and cloud-init's own reader returns the metadata. Returns cloud-init's view.
@discardableResult
func partVerifyConfigDrive(
    disk: String, offset: UInt64, size: UInt64, in directory: PartTestDirectory,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> JSONValue {
    let probe = try partBlkid(disk, offset: offset)
    #expect(probe["TYPE"] == "vfat", "blkid: \(probe)", sourceLocation: sourceLocation)
    #expect(probe["LABEL"] == "config-2", "blkid: \(probe)", sourceLocation: sourceLocation)

    let partition = "\(directory.path)/partition-\(UUID().uuidString).img"
    try partExtract(disk, offset: offset, size: size, to: partition)
    let fsck = try partTool("fsck.vfat", ["-n", partition])
    #expect(fsck.succeeded, "fsck.vfat -n: \(fsck.output) \(fsck.errors)", sourceLocation: sourceLocation)
    #expect(
        !fsck.output.contains("\n  "), "fsck.vfat reported problems: \(fsck.output)", sourceLocation: sourceLocation)

    let image = "\(disk)@@\(offset)"
    let listing = try partToolChecked("mdir", ["-i", image, "::/openstack/latest"], sourceLocation: sourceLocation)
    #expect(listing.contains("meta_data.json"), "mdir: \(listing)", sourceLocation: sourceLocation)

    let extracted = "\(directory.path)/drive-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: extracted, withIntermediateDirectories: true)
    try partToolChecked("mcopy", ["-s", "-n", "-i", image, "::/openstack", extracted], sourceLocation: sourceLocation)
    return try partCloudInitRead(extracted)
}

/// cloud-init's ConfigDrive datasource reader (`read_config_drive`) on an extracted drive, reduced to JSON.
func partCloudInitRead(_ directory: String) throws -> JSONValue {
    let script = """
        import json, sys
        from cloudinit.sources.DataSourceConfigDrive import read_config_drive
        from cloudinit.sources.helpers import openstack
        result = read_config_drive(sys.argv[1])
        reader = openstack.ConfigDriveReader(sys.argv[1])
        md = result["metadata"]
        user = result.get("userdata")
        print(json.dumps({
            "instance_id": md.get("instance-id"), "uuid": md.get("uuid"), "hostname": md.get("local-hostname"),
            "name": md.get("name"), "public_keys": md.get("public_keys"), "meta": md.get("meta"),
            "userdata": user.decode() if isinstance(user, bytes) else user,
            "networkdata": result.get("networkdata"), "vendordata": result.get("vendordata"),
            "version": reader._find_working_version(),
        }))
        """
    let result = try partTool("python3", ["-c", script, directory])
    guard result.succeeded else {
        if result.errors.contains("No module named 'cloudinit'") {
            throw PartToolMissing(tool: "cloud-init's Python module", package: "cloud-init")
        }
        throw PartTestFailure("cloud-init could not read the config drive: \(result.errors)")
    }
    return try JSONCodec.parse(result.output)
}

/// The content the end-to-end tests deploy.
func partSampleContent(userData: String? = "#cloud-config\nhostname: node-7\n") -> ConfigDriveContent {
    ConfigDriveContent(
        uuid: "8d3c9a3e-4c5b-4f1a-9c47-0d6f7e1b2a90", name: "node-7", hostname: "node-7.example",
        publicKeys: ["ops": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example"], meta: ["role": "compute"],
        projectID: "b1946ac92492d2347c6235b4d2611184", userData: userData.map { Array($0.utf8) })
}

/// Checks cloud-init's view against `partSampleContent`.
func partExpectSample(
    _ view: JSONValue, userData: String? = "#cloud-config\nhostname: node-7\n",
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(view["uuid"] == "8d3c9a3e-4c5b-4f1a-9c47-0d6f7e1b2a90", "\(view)", sourceLocation: sourceLocation)
    #expect(view["instance_id"] == "8d3c9a3e-4c5b-4f1a-9c47-0d6f7e1b2a90", "\(view)", sourceLocation: sourceLocation)
    #expect(view["hostname"] == "node-7.example", "\(view)", sourceLocation: sourceLocation)
    #expect(view["userdata"] == .string(userData ?? ""), "\(view)", sourceLocation: sourceLocation)
    #expect(view["version"] == "2018-08-27", "\(view)", sourceLocation: sourceLocation)
    #expect(
        view["public_keys"]?["ops"] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example", "\(view)",
        sourceLocation: sourceLocation)
}

/// Expects `body` to throw a `BerthError` of `kind` whose message holds each of `fragments`.
func partExpectError<T>(
    _ kind: BerthError.Kind, _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) {
    do {
        _ = try body()
        Issue.record("expected \(kind.rawValue), but the call succeeded", sourceLocation: sourceLocation)
    } catch let error as BerthError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "\(error.message)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected BerthError, got \(error)", sourceLocation: sourceLocation)
    }
}
