import BerthCatalog
import BerthCore
import BerthJSON
import BerthLibvirt
import Foundation
import Logging
import Testing

@testable import BerthCompute

/// The compute service with no broker: libvirt's in-process test driver (`test:///default`, a fake host with
/// 16 CPUs whose storage pools live in memory) and a local directory catalog in a temporary directory.
/// Volume-backed instances, because their snapshots are the catalog's file copies: an image-backed snapshot
/// flattens the overlay with qemu-img, and the test driver's overlay is not a file (Tests/interop covers it
/// on QEMU).
struct ComputeServiceTests {
    final class Host: Sendable {
        let directory: String
        let catalog: LocalCatalog
        let compute: ComputeService

        init() async throws {
            directory =
                FileManager.default.temporaryDirectory
                .appendingPathComponent("berth-compute-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            catalog = LocalCatalog(root: "\(directory)/catalog")
            try await catalog.prepare()
            compute = ComputeService(
                host: "compute-test", catalog: catalog, libvirt: LibvirtHost(uri: "test:///default"),
                configuration: ComputeConfiguration(stateDirectory: "\(directory)/state", domainType: .test))
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }

        func bootRequest(imageID: String) throws -> BootRequest {
            let instance: JSONObject = [
                "uuid": .string(UUID().uuidString.lowercased()), "name": "compute test", "image_id": .string(imageID),
                "flavor": ["name": "tiny", "vcpus": 1, "memory_mb": 256, "root_gb": 1],
            ]
            return try BootRequest.decode(instance)
        }
    }

    let logger = Logger(label: "compute-test")

    @Test func bootSnapshotAndDeleteAVolumeBackedInstance() async throws {
        let host = try await Host()
        let compute = host.compute
        let volume = try await host.catalog.createVolume(name: "root", sizeGB: 1, bootable: true)
        let placeholder = try await ComputeService.mintPlaceholder(
            catalog: host.catalog, volumeID: volume.id, snapshotID: nil, name: "from-volume", properties: [:])

        // Boot: the domain runs on the placeholder's volume, and a repeat answers the same without a new domain.
        let request = try host.bootRequest(imageID: placeholder.id)
        let booted = try await compute.boot(request, requestID: "req-1", logger: logger)
        #expect(booted["status"] == "ACTIVE" && booted["uuid"] == .string(request.uuid), "\(booted)")
        #expect(try await compute.boot(request, requestID: "req-1", logger: logger) == booted)
        let described = try await compute.describe(uuid: request.uuid)
        #expect(described["status"] == "ACTIVE" && described["image_id"] == .string(placeholder.id))

        // Snapshot: a volume snapshot in the catalog and a placeholder image naming it, with the guest running
        // again afterwards.
        let snapshot = try await compute.snapshot(
            uuid: request.uuid, imageName: "snap", properties: ["purpose": "test"], logger: logger)
        #expect(snapshot.kind == "placeholder" && snapshot.instanceImageID == placeholder.id)
        let snapshotID = try #require(snapshot.snapshotID)
        #expect(try await host.catalog.snapshot(id: snapshotID).volumeID == volume.id)
        let image = try await host.catalog.image(id: snapshot.imageID)
        #expect(image.isPlaceholder && image.properties["purpose"] == "test")
        #expect(try await compute.describe(uuid: request.uuid)["status"] == "ACTIVE")

        // The snapshot boots: its own volume, made from the snapshot under the instance's uuid.
        let copy = try host.bootRequest(imageID: snapshot.imageID)
        #expect(try await compute.boot(copy, requestID: nil, logger: logger)["status"] == "ACTIVE")
        #expect(try await host.catalog.volume(id: copy.uuid).sizeGB == 1)

        // Delete: the domains go; the user's volume stays, the one made for the copy goes with it; a second
        // delete is not an error.
        for uuid in [request.uuid, copy.uuid] {
            let deleted = try await compute.delete(uuid: uuid, logger: logger)
            #expect(deleted.result["status"] == "DELETED")
            await #expect(throws: BerthError.instanceNotFound(uuid)) { try await compute.describe(uuid: uuid) }
        }
        #expect(try await host.catalog.volume(id: volume.id).id == volume.id)
        await #expect(throws: CatalogError.self) { try await host.catalog.volume(id: copy.uuid) }
        #expect(try await compute.delete(uuid: request.uuid, logger: logger).result["status"] == "DELETED")
        #expect(try await compute.list().isEmpty)
    }
}
