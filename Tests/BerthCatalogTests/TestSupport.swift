import BerthCore
import Foundation
import Testing

@testable import BerthCatalog

/// A directory under the system temporary directory, removed when the test lets go of it.
final class TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("berth-catalog-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = "\(path)/\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }
}

/// Runs a tool and returns its standard output; nil when it is not installed.
func run(_ tool: String, _ arguments: [String]) throws -> String? {
    let candidates = ["/usr/bin/\(tool)", "/bin/\(tool)", "/usr/local/bin/\(tool)"]
    guard let executable = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        return nil
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = Pipe()
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { return nil }
    return String(decoding: data, as: UTF8.self)
}

/// Files in the catalog's record directories that are neither a record nor its data: temporary files,
/// orphans, anything a failed write could leave.
func strayFiles(in root: String, expecting records: Set<String> = []) throws -> [String] {
    var stray: [String] = []
    for directory in ["images", "volumes", "snapshots"] {
        let path = "\(root)/\(directory)"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { continue }
        for name in names {
            let id = String(name.prefix(36))
            if name.hasPrefix(".") || !records.contains(id) { stray.append("\(directory)/\(name)") }
        }
    }
    return stray.sorted()
}

/// Every file in the record directories, for "nothing was written" checks.
func allFiles(in root: String) -> [String] {
    ["images", "volumes", "snapshots"].flatMap { directory in
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(directory)")) ?? []).map {
            "\(directory)/\($0)"
        }
    }.sorted()
}

/// Expects `body` to fail with a `CatalogError` of `kind` whose message holds each of `fragments`.
@discardableResult
func expectCatalogError<T>(
    _ kind: CatalogError.Kind, _ fragments: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> T
) async -> CatalogError? {
    do {
        _ = try await body()
        Issue.record("expected CatalogError.\(kind), but the call succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let error as CatalogError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(
                error.message.contains(fragment), "message lacks \"\(fragment)\": \(error.message)",
                sourceLocation: sourceLocation)
        }
        return error
    } catch {
        Issue.record("expected CatalogError.\(kind), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Deterministic, varied bytes (not all zero, not periodic over short spans).
func patternBytes(_ count: Int, seed: UInt64 = 0x9e37_79b9_7f4a_7c15) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}
