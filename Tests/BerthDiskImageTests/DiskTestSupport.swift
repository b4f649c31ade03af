import BerthCore
import Foundation
import Glibc
import Testing

@testable import BerthDiskImage

// Helpers for the image-format, qcow2, inflate, digest and writer tests. Names start with `Img` (`img...`) so
// they cannot clash with the partition/config-drive tests' helpers in the same target.

/// A directory under /tmp, removed when the test lets go of it.
final class ImgTestDirectory: Sendable {
    let path: String

    init() throws {
        path = "/tmp/berth-img-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }
}

struct ImgToolFailure: Error, CustomStringConvertible {
    let description: String
}

struct ImgToolResult {
    let status: Int32
    let output: Data
    let errors: String
    var text: String { String(decoding: output, as: UTF8.self) }
}

/// Runs a tool (by absolute path or from /usr/bin, /bin, /usr/sbin, /sbin, or python3 from PATH); the output is
/// read on a separate thread so a chatty tool cannot block on a full pipe.
func imgRun(_ tool: String, _ arguments: [String], input: Data? = nil) throws -> ImgToolResult {
    let process = Process()
    if tool.hasPrefix("/") {
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
    } else {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
    }
    var environment = ProcessInfo.processInfo.environment
    environment["PATH"] = (environment["PATH"] ?? "") + ":/usr/sbin:/sbin"
    process.environment = environment
    let output = Pipe()
    let errors = Pipe()
    let stdin = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = stdin
    try process.run()
    let collector = ImgPipeCollector(errors.fileHandleForReading)
    if let input { stdin.fileHandleForWriting.write(input) }
    try? stdin.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorText = collector.finish()
    process.waitUntilExit()
    return ImgToolResult(status: process.terminationStatus, output: data, errors: errorText)
}

/// Runs a tool and throws when it fails.
@discardableResult
func imgTool(_ tool: String, _ arguments: [String], input: Data? = nil) throws -> ImgToolResult {
    var result = try imgRun(tool, arguments, input: input)
    // qemu-img times its LUKS key derivation with getrusage, which on a loaded machine sometimes fails
    // ("Unable to get accurate CPU usage"): that is the machine, not the image; try again.
    var attempts = 1
    while result.status != 0, attempts < 5, result.errors.contains("accurate CPU usage") {
        attempts += 1
        result = try imgRun(tool, arguments, input: input)
    }
    guard result.status == 0 else {
        throw ImgToolFailure(
            description: "\(tool) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.errors)")
    }
    return result
}

/// Reads a pipe to its end on its own thread.
final class ImgPipeCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            let all = handle.readDataToEndOfFile()
            lock.lock()
            data = all
            lock.unlock()
            done.signal()
        }
    }

    func finish() -> String {
        done.wait()
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }
}

/// `qemu-img create -f qcow2` with options; returns the path.
@discardableResult
func imgCreateQCOW2(_ path: String, size: String, options: [String] = [], extra: [String] = []) throws -> String {
    var arguments = ["create", "-q", "-f", "qcow2"] + extra
    if !options.isEmpty { arguments += ["-o", options.joined(separator: ",")] }
    try imgTool("qemu-img", arguments + [path, size])
    return path
}

/// Runs `qemu-io` commands against an image (format detected by qemu-io from the file).
func imgQemuIO(_ path: String, _ commands: [String], format: String = "qcow2") throws {
    try imgTool("qemu-io", ["-f", format] + commands.flatMap { ["-c", $0] } + [path])
}

/// The reference conversion: `qemu-img convert -O raw`, extended to `size` bytes.
func imgReference(_ image: String, to path: String, size: UInt64) throws -> String {
    try imgTool("qemu-img", ["convert", "-O", "raw", image, path])
    try imgTool("truncate", ["-s", "\(size)", path])
    return path
}

/// A sparse disk file of `size` bytes.
@discardableResult
func imgSparseDisk(_ path: String, size: UInt64) throws -> String {
    try? FileManager.default.removeItem(atPath: path)
    try imgTool("truncate", ["-s", "\(size)", path])
    return path
}

/// `cmp` of two files: nil when equal, else cmp's report.
func imgCompare(_ first: String, _ second: String, bytes: UInt64? = nil) throws -> String? {
    var arguments = [first, second]
    if let bytes { arguments = ["-n", "\(bytes)"] + arguments }
    let result = try imgRun("cmp", arguments)
    return result.status == 0 ? nil : result.text + result.errors
}

/// sha256 of a file by `sha256sum` (not our own hasher, so the check does not trust the code under test).
func imgSHA256(_ path: String) throws -> String {
    String(try imgTool("sha256sum", [path]).text.prefix(64))
}

/// Overwrites bytes at `offset` in place.
func imgPatch(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY)
    guard fd >= 0 else { throw ImgToolFailure(description: "cannot open \(path)") }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes.count, off_t(offset)) }
    guard written == bytes.count else { throw ImgToolFailure(description: "cannot patch \(path)") }
}

func imgBigEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }

func imgReadBytes(_ path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: offset)
    return [UInt8](try handle.read(upToCount: count) ?? Data())
}

func imgFileSize(_ path: String) throws -> UInt64 {
    var status = stat()
    guard stat(path, &status) == 0 else { throw ImgToolFailure(description: "cannot stat \(path)") }
    return UInt64(status.st_size)
}

/// Bytes actually allocated to a file (st_blocks are 512-byte units).
func imgAllocatedBytes(_ path: String) throws -> UInt64 {
    var status = stat()
    guard stat(path, &status) == 0 else { throw ImgToolFailure(description: "cannot stat \(path)") }
    return UInt64(status.st_blocks) * 512
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func imgRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    var bytes = [UInt8](repeating: 0, count: count)
    for index in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        bytes[index] = UInt8(truncatingIfNeeded: state)
    }
    return bytes
}

/// Expects `body` to throw a `BerthError` of `kind` whose message holds every fragment; returns the message.
@discardableResult
func imgExpectError<T>(
    _ kind: BerthError.Kind, _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) -> String? {
    do {
        _ = try body()
        Issue.record(
            "expected \(kind.rawValue) containing \(fragments), but it succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let error as BerthError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(
                error.message.contains(fragment), "\(error.message) lacks \(fragment)", sourceLocation: sourceLocation)
        }
        return error.message
    } catch {
        Issue.record("expected BerthError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Deploys `image` to a fresh sparse disk of `diskSize` bytes and compares it with `qemu-img convert -O raw`.
func imgDeployAndCompare(
    _ image: String, in directory: ImgTestDirectory, diskSize: UInt64, checksum: ImageChecksum? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> (plan: DeployPlan, report: DeployReport) {
    let name = URL(fileURLWithPath: image).lastPathComponent
    let disk = try imgSparseDisk(directory.file("\(name).disk"), size: diskSize)
    let reference = try imgReference(image, to: directory.file("\(name).ref"), size: diskSize)
    let plan = try ImageWriter.plan(imagePath: image, diskPath: disk, checksum: checksum, configDrive: false)
    let report = try plan.write()
    #expect(
        try imgCompare(disk, reference) == nil, "\(name) differs from qemu-img convert", sourceLocation: sourceLocation)
    #expect(try imgFileSize(disk) == diskSize, sourceLocation: sourceLocation)
    return (plan, report)
}

/// A loop device over a file, detached when the test lets go of it; nil when loop devices are unavailable
/// (no permission in the container).
final class ImgLoopDevice: Sendable {
    let path: String

    init?(file: String, sectorSize: Int = 512) {
        var arguments = ["--find", "--show"]
        if sectorSize != 512 { arguments += ["--sector-size", "\(sectorSize)"] }
        guard let result = try? imgRun("losetup", arguments + [file]), result.status == 0 else { return nil }
        let device = result.text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard device.hasPrefix("/dev/loop") else { return nil }
        path = device
    }

    deinit { _ = try? imgRun("losetup", ["--detach", path]) }
}
