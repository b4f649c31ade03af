import BerthCore
import Foundation
import Testing

@testable import BerthCatalog

@Suite struct LocalCatalogConcurrencyTests {
    /// Two catalog instances on one root stand in for two worker processes: each operation takes its own
    /// lock descriptor, so they exclude each other exactly as separate processes would. Every update is a
    /// read-modify-write of one shared image; a lost update would drop one of the properties.
    @Test func twoInstancesHammeringOneRootLoseNothing() async throws {
        let directory = try TemporaryDirectory()
        let first = LocalCatalog(root: "\(directory.path)/catalog")
        let second = LocalCatalog(root: "\(directory.path)/catalog")
        let shared = try await first.createImage(name: "shared", diskFormat: "raw", data: .bytes([1]))
        let base = try await first.createImage(name: "base", diskFormat: "raw", data: .bytes(patternBytes(100_000)))

        let rounds = 24
        let created = try await withThrowingTaskGroup(of: [String].self) { group in
            for index in 0..<rounds {
                let catalog = index.isMultiple(of: 2) ? first : second
                group.addTask {
                    let image = try await catalog.createImage(
                        name: "image-\(index)", diskFormat: "raw", properties: ["round": String(index)],
                        data: .bytes(patternBytes(10_000 + index, seed: UInt64(index))))
                    _ = try await catalog.updateImage(
                        id: shared.id, setProperties: ["writer_\(index)": String(index)], removeProperties: [])
                    _ = try await catalog.images()
                    var ids = [image.id]
                    if index.isMultiple(of: 4) {
                        ids.append(try await catalog.createVolume(name: "v\(index)", sizeGB: 1, fromImage: base.id).id)
                    }
                    return ids
                }
            }
            var all: [String] = []
            for try await ids in group { all += ids }
            return all
        }

        let images = try await second.images()
        #expect(images.count == rounds + 2)
        #expect(try await first.volumes().count == rounds / 4)
        let final = try await second.image(id: shared.id)
        #expect(final.properties.count == rounds)
        for index in 0..<rounds { #expect(final.properties["writer_\(index)"] == String(index)) }
        for image in images where image.name.hasPrefix("image-") {
            let index = Int(image.properties["round"]!)!
            #expect(image.size == Int64(10_000 + index))
            _ = try await first.localImageData(id: image.id)
        }
        #expect(try strayFiles(in: first.root, expecting: Set(created + [shared.id, base.id])).isEmpty)
        #expect(try await first.sweep() == LocalCatalog.SweepReport())
    }

    /// A reader holding the shared lock keeps a writer out, and the writer proceeds once it is released.
    @Test func exclusiveLockWaitsForReaders() async throws {
        let directory = try TemporaryDirectory()
        let catalog = LocalCatalog(root: "\(directory.path)/catalog")
        try await catalog.prepare()
        let reader = try Files.open("\(catalog.root)/.lock", O_RDONLY | O_CREAT, action: "open")
        _ = try Files.lock(reader, exclusive: false)

        let writer = Task { try await catalog.createImage(name: "late", diskFormat: "raw", data: .bytes([1])) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(allFiles(in: catalog.root).allSatisfy { $0.contains(".tmp-") })
        #expect(try await catalog.images().isEmpty)  // other readers are not blocked

        reader.closeQuietly()
        let image = try await writer.value
        #expect(try await catalog.image(id: image.id) == image)
    }
}
