import BerthCore
import Foundation
import Testing

@testable import BerthCatalog

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct LocalCatalogFailureTests {
    /// A step of a commit fails (disk full, I/O error): the catalog is left as it was, without temporary
    /// files or data that no record points at.
    @Test(arguments: [CatalogFaults.Step.dataStaged, .beforeCommit, .dataCommitted])
    func failedCommitsLeaveNothingBehind(step: CatalogFaults.Step) async throws {
        let directory = try TemporaryDirectory()
        let healthy = LocalCatalog(root: "\(directory.path)/catalog")
        let image = try await healthy.createImage(name: "base", diskFormat: "raw", data: .bytes(patternBytes(300_000)))
        let volume = try await healthy.createVolume(name: "v", sizeGB: 1, fromImage: image.id)
        let queued = try await healthy.createImage(name: "queued", diskFormat: "raw")
        let before = allFiles(in: healthy.root)

        let failing = LocalCatalog(root: healthy.root, faults: CatalogFaults(failing: { $0 == step }))
        await expectCatalogError(.catalogUnavailable, ["injected"]) {
            try await failing.createImage(name: "x", diskFormat: "raw", data: .bytes(patternBytes(400_000)))
        }
        await expectCatalogError(.catalogUnavailable, ["injected"]) {
            try await failing.uploadImageData(id: queued.id, data: .bytes(patternBytes(1000)))
        }
        await expectCatalogError(.catalogUnavailable, ["injected"]) {
            try await failing.createVolume(name: "x", sizeGB: 1, fromImage: image.id)
        }
        await expectCatalogError(.catalogUnavailable, ["injected"]) {
            try await failing.snapshotVolume(id: volume.id, name: "x")
        }
        if step == .beforeCommit {
            // Record-only writes have no staged data, so only this step applies to them.
            await expectCatalogError(.catalogUnavailable, ["injected"]) {
                try await failing.createImage(name: "q", diskFormat: "raw")
            }
        }
        #expect(allFiles(in: healthy.root) == before)
        #expect(try await healthy.image(id: queued.id).status == "queued")
        #expect(try await healthy.sweep() == LocalCatalog.SweepReport())
    }

    /// Tests run as root, for whom mode 0555 does not stop writes, so an unwritable catalog is made by
    /// putting its root under a regular file (ENOTDIR), which stops root too. As another user, a 0555
    /// directory is tried as well.
    @Test func unwritableCatalogIsUnavailableAndHalfWritesNothing() async throws {
        let directory = try TemporaryDirectory()
        let blocker = try directory.file("not-a-directory", [1])
        let catalog = LocalCatalog(root: "\(blocker)/catalog")
        let error = await expectCatalogError(.catalogUnavailable, [blocker, "not a directory"]) {
            try await catalog.createImage(name: "x", diskFormat: "raw", data: .bytes([1, 2, 3]))
        }
        #expect(error?.rpcClassName == "BuildFailed")
        await expectCatalogError(.catalogUnavailable) { try await catalog.createVolume(name: "x", sizeGB: 1) }
        await expectCatalogError(.catalogUnavailable) { try await catalog.images() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["not-a-directory"])

        if geteuid() != 0 {
            let locked = "\(directory.path)/locked"
            let lockedCatalog = LocalCatalog(root: locked)
            try await lockedCatalog.prepare()
            for sub in ["", "/images", "/volumes", "/snapshots"] { chmod(locked + sub, 0o555) }
            defer { for sub in ["", "/images", "/volumes", "/snapshots"] { chmod(locked + sub, 0o755) } }
            await expectCatalogError(.catalogUnavailable, ["may not use that path"]) {
                try await lockedCatalog.createImage(name: "x", diskFormat: "raw", data: .bytes([1]))
            }
            #expect(allFiles(in: locked).isEmpty)
        }
    }

    /// ENOSPC, as /dev/full reports it, reads as "disk full" with what to do.
    @Test func fullDiskIsReportedAsSuch() throws {
        let fd = open("/dev/full", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            Issue.record("/dev/full is not available; cannot simulate a full disk")
            return
        }
        let descriptor = Descriptor(raw: fd, path: "/dev/full")
        do {
            _ = try DataCopy.copy(from: .bytes(patternBytes(5000)), to: descriptor, hashing: true, sparse: false)
            Issue.record("writing to /dev/full succeeded")
        } catch {
            #expect(error.kind == .catalogUnavailable)
            #expect(error.message.contains("full"), "\(error.message)")
            #expect(error.message.contains("free space"), "\(error.message)")
        }
    }

    @Test func sourceFilesMustBeReadableRegularFiles() async throws {
        let directory = try TemporaryDirectory()
        let catalog = LocalCatalog(root: "\(directory.path)/catalog")
        await expectCatalogError(.invalidRequest, ["\(directory.path)/missing.raw"]) {
            try await catalog.createImage(name: "x", diskFormat: "raw", data: .file("\(directory.path)/missing.raw"))
        }
        await expectCatalogError(.invalidRequest, ["not a regular file"]) {
            try await catalog.createImage(name: "x", diskFormat: "raw", data: .file("/dev/zero"))
        }
        #expect(allFiles(in: catalog.root).isEmpty)
    }

    @Test func sweepRemovesWhatCrashesLeaveAndReportsTheRest() async throws {
        let directory = try TemporaryDirectory()
        let catalog = LocalCatalog(root: "\(directory.path)/catalog")
        let image = try await catalog.createImage(name: "keep", diskFormat: "raw", data: .bytes([1, 2, 3]))
        let root = catalog.root

        // A crash between the data rename and the record rename; a writer killed mid-copy.
        let orphanID = CatalogID.mint().value
        _ = try directory.file("catalog/images/\(orphanID).data", [9, 9])
        _ = try directory.file("catalog/volumes/\(CatalogID.mint().value).img", [0])
        let stale = try directory.file("catalog/images/.\(orphanID).data.tmp-dead", [7])
        // A writer still at work holds its temporary file locked: not touched.
        let live = try Files.createTemporary(for: "\(root)/snapshots/\(CatalogID.mint().value).img")
        defer { live.closeQuietly() }
        // A record damaged by hand, and one whose data vanished.
        let damagedID = CatalogID.mint().value
        _ = try directory.file("catalog/images/\(damagedID).json", Array("{not json".utf8))
        try FileManager.default.removeItem(atPath: "\(root)/images/\(image.id).data")

        #expect(try await catalog.images().map(\.id) == [image.id])
        await expectCatalogError(.catalogUnavailable, ["cannot be read"]) { try await catalog.image(id: damagedID) }

        let report = try await catalog.sweep()
        #expect(report.removedTemporaryFiles == [stale])
        #expect(report.removedOrphanedData.count == 2)
        #expect(report.removedOrphanedData.contains("\(root)/images/\(orphanID).data"))
        #expect(report.unreadableRecords.count == 1)
        #expect(report.unreadableRecords.first?.hasPrefix("\(root)/images/\(damagedID).json") == true)
        #expect(report.recordsMissingData == ["\(root)/images/\(image.id).json"])
        #expect(FileManager.default.fileExists(atPath: live.path))
        #expect(!FileManager.default.fileExists(atPath: stale))
    }
}
