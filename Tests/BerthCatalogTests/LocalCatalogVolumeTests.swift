import BerthCore
import Foundation
import Testing

@testable import BerthCatalog

@Suite struct LocalCatalogVolumeTests {
    let directory: TemporaryDirectory
    let catalog: LocalCatalog

    init() throws {
        directory = try TemporaryDirectory()
        catalog = LocalCatalog(root: "\(directory.path)/catalog")
    }

    var root: String { catalog.root }

    func contents(_ path: String, count: Int) throws -> [UInt8] {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        return [UInt8](try handle.read(upToCount: count) ?? Data())
    }

    func fileSize(_ path: String) throws -> Int64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).int64Value
    }

    @Test func volumeFromImageCopiesDataAndImageMetadata() async throws {
        let bytes = patternBytes((1 << 20) + 777)
        let image = try await catalog.createImage(
            name: "debian-12", diskFormat: "raw", properties: ["hw_disk_bus": "virtio", "os_distro": "debian"],
            data: .bytes(bytes))
        let volume = try await catalog.createVolume(name: "root", sizeGB: 1, fromImage: image.id)
        #expect(volume.bootable)
        #expect(volume.status == "available")
        #expect(volume.snapshotID == nil)
        #expect(volume.volumeImageMetadata["image_id"] == image.id)
        #expect(volume.volumeImageMetadata["image_name"] == "debian-12")
        #expect(volume.volumeImageMetadata["hw_disk_bus"] == "virtio")
        #expect(volume.volumeImageMetadata["os_distro"] == "debian")
        #expect(volume.volumeImageMetadata["checksum"] == image.checksum)
        #expect(volume.volumeImageMetadata["disk_format"] == "raw")
        #expect(try await catalog.volume(id: volume.id) == volume)

        let path = try await catalog.volumeDataPath(id: volume.id)
        #expect(try fileSize(path) == 1 << 30)
        #expect(try contents(path, count: bytes.count + 4096) == bytes + [UInt8](repeating: 0, count: 4096))
        #expect(try strayFiles(in: root, expecting: [image.id, volume.id]).isEmpty)
    }

    @Test func blankVolumesAndRefusals() async throws {
        let blank = try await catalog.createVolume(name: "scratch", sizeGB: 2)
        #expect(!blank.bootable && blank.volumeImageMetadata.isEmpty)
        #expect(try fileSize(try await catalog.volumeDataPath(id: blank.id)) == 2 << 30)

        await expectCatalogError(.invalidRequest, ["out of range"]) {
            try await catalog.createVolume(name: "z", sizeGB: 0)
        }
        await expectCatalogError(.invalidRequest, ["not both"]) {
            try await catalog.createVolume(
                name: "z", sizeGB: 1, fromImage: CatalogID.mint().value, fromSnapshot: CatalogID.mint().value)
        }
        await expectCatalogError(.imageNotFound) {
            try await catalog.createVolume(name: "z", sizeGB: 1, fromImage: CatalogID.mint().value)
        }
        await expectCatalogError(.snapshotNotFound) {
            try await catalog.createVolume(name: "z", sizeGB: 1, fromSnapshot: "../x")
        }
        let file = "\(directory.path)/x.qcow2"
        if try run("qemu-img", ["create", "-f", "qcow2", file, "64M"]) != nil {
            let qcow2 = try await catalog.createImage(name: "q", diskFormat: "qcow2", data: .file(file))
            await expectCatalogError(.invalidImage, ["raw image"]) {
                try await catalog.createVolume(name: "z", sizeGB: 1, fromImage: qcow2.id)
            }
        } else {
            Issue.record("qemu-img is not installed (Debian package qemu-utils); cannot make a real qcow2 file")
        }
        let placeholder = try await catalog.createImage(
            name: "p", diskFormat: "raw",
            properties: ["block_device_mapping": #"[{"volume_id": "\#(blank.id)", "boot_index": 0}]"#])
        await expectCatalogError(.invalidImage, ["placeholder"]) {
            try await catalog.createVolume(name: "z", sizeGB: 1, fromImage: placeholder.id)
        }
        await expectCatalogError(.inUse, [placeholder.id]) { try await catalog.deleteVolume(id: blank.id) }
        try await catalog.deleteVolume(id: blank.id, force: true)
        await expectCatalogError(.volumeNotFound) { try await catalog.volume(id: blank.id) }
    }

    @Test func snapshotsAndVolumesFromThem() async throws {
        let bytes = patternBytes(300_000)
        let image = try await catalog.createImage(
            name: "base", diskFormat: "raw", properties: ["hw_disk_bus": "sata"], data: .bytes(bytes))
        let volume = try await catalog.createVolume(name: "root", sizeGB: 2, fromImage: image.id)
        let snapshot = try await catalog.snapshotVolume(id: volume.id, name: "nightly")
        #expect(snapshot.volumeID == volume.id)
        #expect(snapshot.sizeGB == 2)
        #expect(snapshot.volumeImageMetadata == volume.volumeImageMetadata)
        #expect(try await catalog.snapshot(id: snapshot.id) == snapshot)
        #expect(try await catalog.snapshots().map(\.id) == [snapshot.id])

        // The snapshot is a copy: deleting its volume leaves it intact.
        try await catalog.deleteVolume(id: volume.id)
        await expectCatalogError(.invalidRequest, ["at least that size"]) {
            try await catalog.createVolume(name: "small", sizeGB: 1, fromSnapshot: snapshot.id)
        }
        let restored = try await catalog.createVolume(name: "restored", sizeGB: 3, fromSnapshot: snapshot.id)
        #expect(restored.snapshotID == snapshot.id)
        #expect(restored.bootable)
        #expect(restored.volumeImageMetadata == snapshot.volumeImageMetadata)
        let path = try await catalog.volumeDataPath(id: restored.id)
        #expect(try fileSize(path) == 3 << 30)
        #expect(try contents(path, count: bytes.count) == bytes)
        #expect(try strayFiles(in: root, expecting: [image.id, snapshot.id, restored.id]).isEmpty)
    }

    @Test func snapshotReferencedByAPlaceholderIsKeptUnlessForced() async throws {
        let volume = try await catalog.createVolume(name: "data", sizeGB: 1)
        let snapshot = try await catalog.snapshotVolume(id: volume.id, name: "s")
        let mapping = """
            [{"source_type": "snapshot", "destination_type": "volume", "snapshot_id": "\(snapshot.id)", \
            "boot_index": 0, "device_name": "/dev/vda", "volume_size": 1, "delete_on_termination": false}]
            """
        let placeholder = try await catalog.createImage(
            name: "server-snap", diskFormat: "raw",
            properties: ["block_device_mapping": mapping, "bdm_v2": "True", "root_device_name": "/dev/vda"])
        #expect(placeholder.isPlaceholder)
        #expect(placeholder.status == "active" && placeholder.size == 0 && placeholder.checksum == nil)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/images/\(placeholder.id).data"))

        let refusal = await expectCatalogError(.inUse, [snapshot.id, placeholder.id, "server-snap", "force"]) {
            try await catalog.deleteSnapshot(id: snapshot.id)
        }
        #expect(refusal?.rpcClassName == "InvalidRequest")
        #expect(try await catalog.snapshot(id: snapshot.id) == snapshot)

        try await catalog.deleteSnapshot(id: snapshot.id, force: true)
        await expectCatalogError(.snapshotNotFound) { try await catalog.snapshot(id: snapshot.id) }
        // A new placeholder cannot name the snapshot that is gone.
        await expectCatalogError(.invalidProperty, ["block_device_mapping[0].snapshot_id", "not in the catalog"]) {
            try await catalog.createImage(
                name: "again", diskFormat: "raw", properties: ["block_device_mapping": mapping])
        }
        #expect(try strayFiles(in: root, expecting: [volume.id, placeholder.id]).isEmpty)
    }

    @Test func snapshotWithoutReferencesDeletes() async throws {
        let volume = try await catalog.createVolume(name: "data", sizeGB: 1)
        let snapshot = try await catalog.snapshotVolume(id: volume.id, name: "s")
        try await catalog.deleteSnapshot(id: snapshot.id)
        #expect(try await catalog.snapshots().isEmpty)
        #expect(try strayFiles(in: root, expecting: [volume.id]).isEmpty)
    }
}
