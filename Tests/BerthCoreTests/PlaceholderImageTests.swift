import BerthJSON
import Testing

@testable import BerthCore

struct PlaceholderImageTests {
    @Test func rootBlockDeviceRoundTripsThroughTheProperty() throws {
        let root = RootBlockDevice(source: .snapshot("s-1"), volumeSizeGB: 3)
        let text = JSONCodec.serializeString(.array([root.jsonValue]))
        #expect(try RootBlockDevice.parse(blockDeviceMapping: text, imageID: "i", codec: JSONCodec.self) == root)
    }

    @Test func theBootIndexZeroEntryIsTheRoot() throws {
        let text = """
            [{"source_type": "volume", "volume_id": "data", "boot_index": 1},
             {"source_type": "snapshot", "snapshot_id": "root", "boot_index": 0, "volume_size": 2}]
            """
        let root = try RootBlockDevice.parse(blockDeviceMapping: text, imageID: "i", codec: JSONCodec.self)
        #expect(root.source == .snapshot("root"))
        #expect(root.volumeSizeGB == 2)
    }

    @Test(arguments: [
        ("not json", "not JSON"),
        (#"{"source_type": "snapshot"}"#, "JSON list"),
        ("[]", "empty"),
        (#"[{"source_type": "snapshot", "boot_index": 0}]"#, "no snapshot_id"),
        (#"[{"source_type": "image", "boot_index": 0}]"#, "snapshot or volume"),
    ])
    func badMappingsAreInvalidImages(text: String, says: String) {
        #expect {
            try RootBlockDevice.parse(blockDeviceMapping: text, imageID: "img-1", codec: JSONCodec.self)
        } throws: { error in
            guard let error = error as? BerthError else { return false }
            return error.className == "InvalidImage" && error.message.contains(says) && error.message.contains("img-1")
        }
    }

    @Test func snapshotsInheritBootPropertiesOnly() {
        let base = CatalogImage(
            id: "base", name: "b", diskFormat: "raw",
            properties: ["kernel_id": "k", "kernel_args": "root=/dev/vda", "hw_disk_bus": "scsi", "owner_note": "x"])
        let properties = SnapshotProperties.imageSnapshot(base: base, instanceUUID: "u", extra: ["purpose": "p"])
        #expect(
            properties == [
                "kernel_id": "k", "kernel_args": "root=/dev/vda", "hw_disk_bus": "scsi", "base_image_ref": "base",
                "instance_uuid": "u", "image_type": "snapshot", "purpose": "p",
            ])
    }

    @Test func placeholderCarriesTheMappingAndNoOtherData() throws {
        let properties = SnapshotProperties.placeholder(
            root: RootBlockDevice(source: .volume("v"), volumeSizeGB: 1, deleteOnTermination: false),
            inheritedFrom: ["kernel_id": "k", "ramdisk_id": "r", "image_name": "n"], instanceUUID: nil,
            baseImageID: nil, extra: [:], codec: JSONCodec.self)
        #expect(properties["bdm_v2"] == "True")
        #expect(properties["root_device_name"] == "/dev/vda")
        #expect(properties["kernel_id"] == "k" && properties["ramdisk_id"] == "r")
        #expect(properties["image_name"] == nil)
        let root = try RootBlockDevice.parse(
            blockDeviceMapping: properties["block_device_mapping"]!, imageID: "p", codec: JSONCodec.self)
        #expect(root.source == .volume("v"))
    }
}
