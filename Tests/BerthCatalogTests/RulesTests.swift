import Foundation
import Testing

@testable import BerthCatalog

@Suite struct CatalogIDTests {
    @Test(arguments: [
        "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90", "0F8E3C52-5B8A-4C1E-9A8E-2F6D0C7B1A90",
    ])
    func acceptsCanonicalUUIDs(text: String) {
        #expect(CatalogID(text)?.value == "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90")
    }

    @Test(arguments: [
        "", "..", "../../etc/passwd", "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a9", "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a900",
        "0f8e3c52/5b8a-4c1e-9a8e-2f6d0c7b1a90", "../8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90",
        "0f8e3c525b8a4c1e9a8e2f6d0c7b1a90",
        "{0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a9}", "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a9\u{0}",
        "0g8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90", "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a\u{e9}",
    ])
    func rejectsAnythingElse(text: String) {
        #expect(CatalogID(text) == nil)
    }

    @Test func mintsVersion4LowercaseIDs() {
        let id = CatalogID.mint().value
        #expect(CatalogID(id)?.value == id)
        #expect(id == id.lowercased())
        #expect(Array(id)[14] == "4")
    }
}

@Suite struct ImageRulesTests {
    @Test(arguments: [
        (["bad key!": "v"], "characters outside"),
        ([String(repeating: "k", count: 256): "v"], "1 to 255 bytes"),
        (["": "v"], "1 to 255 bytes"),
        (["k": String(repeating: "x", count: 65536)], "at most 65535 bytes"),
        (["k": "a\u{0}b"], "NUL"),
        (["size": "1"], "reserved"),
        (["disk_format": "raw"], "reserved"),
        (["hw_disk_bus": "floppy"], "virtio, scsi, sata, ide, xen, usb"),
        (["vm_mode": "exe"], "hvm, xen"),
        (["kernel_id": "vmlinuz"], "not a UUID"),
        (["ramdisk_id": "../initrd"], "not a UUID"),
        (["kernel_args": "console=ttyS0\nroot=/dev/sda"], "control character"),
        (["kernel_extra_args": String(repeating: "q", count: 2049)], "at most 2048 bytes"),
        (["boot_options": "not json"], "is not JSON"),
        (["boot_options": #"{"vm_mode": "hvm"}"#], "must be a JSON list"),
        (["boot_options": "[1]"], "boot_options[0] is a JSON int"),
        (["boot_options": #"[{"vm_mode": "hvm"}, {"hw_disk_bus": "floppy"}]"#], "boot_options[1].hw_disk_bus"),
        (["boot_options": #"[{"kernel_id": 7}]"#], "must be a string"),
        (["block_device_mapping": #"[{"snapshot_id": "x"}]"#], "block_device_mapping[0].snapshot_id"),
        (["block_device_mapping": "[]x"], "is not JSON"),
    ])
    func refusesInvalidProperties(properties: [String: String], fragment: String) {
        do {
            _ = try ImageRules.check(properties)
            Issue.record("accepted \(properties.keys.sorted())")
        } catch {
            #expect(error.kind == .invalidProperty)
            #expect(error.message.contains(fragment), "\(error.message)")
            #expect(error.rpcClassName == "InvalidImage")
        }
    }

    @Test func refusesTooManyProperties() {
        #expect(throws: CatalogError.self) { try ImageRules.checkCount(129) }
        #expect(throws: Never.self) { try ImageRules.checkCount(128) }
    }

    @Test func acceptsValidPropertiesAndCollectsReferences() throws {
        let kernel = "0f8e3c52-5b8a-4c1e-9a8e-2f6d0c7b1a90"
        let snapshot = "11111111-2222-4333-8444-555555555555"
        let references = try ImageRules.check([
            "hw_disk_bus": "scsi", "os_distro": "debian", "kernel_id": kernel.uppercased(),
            "boot_options":
                #"[{"hypervisor_type": "qemu", "vm_mode": "hvm", "ramdisk_id": "\#(snapshot)", "pae": true}]"#,
            "block_device_mapping": #"[{"source_type": "snapshot", "snapshot_id": "\#(snapshot)", "boot_index": 0}]"#,
            "kernel_args": "console=ttyS0 root=/dev/vda", "x-custom:thing.v1": "ok",
        ])
        #expect(references.count == 3)
        #expect(references.contains(.init(target: .kernel, location: "kernel_id", id: CatalogID(kernel)!)))
        #expect(
            references.contains(
                .init(target: .ramdisk, location: "boot_options[0].ramdisk_id", id: CatalogID(snapshot)!)))
        #expect(
            references.contains(
                .init(target: .snapshot, location: "block_device_mapping[0].snapshot_id", id: CatalogID(snapshot)!)))
    }

    @Test(arguments: [
        ("vhdx", "bare", "disk_format"), ("raw", "docker", "container_format"), ("aki", "bare", "invalid mix"),
        ("raw", "ari", "invalid mix"),
    ])
    func refusesFormats(disk: String, container: String, fragment: String) {
        do {
            try ImageRules.checkFormats(disk: disk, container: container)
            Issue.record("accepted \(disk)/\(container)")
        } catch {
            #expect(error.kind == .invalidProperty)
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func namesAreBounded() {
        #expect(throws: CatalogError.self) { try ImageRules.checkName("", of: "image") }
        #expect(throws: CatalogError.self) { try ImageRules.checkName(String(repeating: "n", count: 256), of: "image") }
        #expect(throws: CatalogError.self) { try ImageRules.checkName("two\nlines", of: "image") }
        #expect(throws: Never.self) { try ImageRules.checkName("Debian 12 (bookworm) — cloud", of: "image") }
    }

    @Test func placeholderReferencesAreFound() {
        let references = ImageRules.blockDeviceReferences([
            "block_device_mapping":
                #"[{"snapshot_id": "11111111-2222-4333-8444-555555555555"}, "#
                + #"{"volume_id": "AAAAAAAA-2222-4333-8444-555555555555"}]"#
        ])
        #expect(references.snapshots == ["11111111-2222-4333-8444-555555555555"])
        #expect(references.volumes == ["aaaaaaaa-2222-4333-8444-555555555555"])
        #expect(ImageRules.blockDeviceReferences(["block_device_mapping": "garbage"]).snapshots.isEmpty)
    }
}

@Suite struct PropertyArgumentsTests {
    @Test func splitsAtTheFirstEquals() throws {
        let parsed = try PropertyArguments.parse(["hw_disk_bus=virtio", "kernel_args=root=/dev/vda ro", "empty="])
        #expect(parsed == ["hw_disk_bus": "virtio", "kernel_args": "root=/dev/vda ro", "empty": ""])
    }

    @Test func refusesMissingEqualsAndDuplicates() {
        #expect(throws: CatalogError.self) { try PropertyArguments.parse(["novalue"]) }
        #expect(throws: CatalogError.self) { try PropertyArguments.parse(["a=1", "a=2"]) }
    }
}

@Suite struct CatalogErrorTests {
    @Test(arguments: [
        (CatalogError.Kind.imageNotFound, "ImageNotFound"), (.volumeNotFound, "VolumeNotFound"),
        (.snapshotNotFound, "VolumeNotFound"), (.invalidImage, "InvalidImage"), (.invalidProperty, "InvalidImage"),
        (.invalidRequest, "InvalidRequest"), (.alreadyExists, "InvalidRequest"), (.inUse, "InvalidRequest"),
        (.catalogUnavailable, "BuildFailed"), (.unauthorized, "BuildFailed"),
    ])
    func mapsToBerthFailureClasses(kind: CatalogError.Kind, className: String) {
        #expect(CatalogError(kind: kind, message: "m").rpcClassName == className)
    }

    @Test func unavailableFollowsTheOperation() {
        let error = CatalogError(kind: .catalogUnavailable, message: "disk full")
        #expect(error.rpcClassName(operationFailure: "SnapshotFailed") == "SnapshotFailed")
        #expect(
            CatalogError(kind: .inUse, message: "m").rpcClassName(operationFailure: "SnapshotFailed")
                == "InvalidRequest")
    }
}

/// The declared `disk_format` against what `ImageInspector` finds in the bytes, on real qcow2 files from
/// `qemu-img` with single fields changed the way an attacker would.
@Suite struct ImageDataInspectionTests {
    let directory = try! TemporaryDirectory()

    /// A real qcow2 file of `size` bytes, with `patch` written over its header.
    func qcow2(_ name: String, size: String = "64M", patch: [(offset: Int, bytes: [UInt8])] = []) throws -> String? {
        let file = "\(directory.path)/\(name)"
        guard try run("qemu-img", ["create", "-q", "-f", "qcow2", file, size]) != nil else {
            Issue.record("qemu-img is not installed (Debian package qemu-utils); cannot make a real qcow2 file")
            return nil
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: file))
        for (offset, bytes) in patch {
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: Data(bytes))
        }
        try handle.close()
        return file
    }

    static func bigEndian(_ value: UInt64, width: Int) -> [UInt8] {
        (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * (width - 1 - $0))) }
    }

    @Test func readsTheVirtualSizeOfWhatItAccepts() throws {
        guard let file = try qcow2("ok.qcow2", size: "5G") else { return }
        #expect(try ImageDataInspection.inspect(path: file, declared: "qcow2") == 5 << 30)
        let raw = try directory.file("raw", patternBytes(3))
        #expect(try ImageDataInspection.inspect(path: raw, declared: "raw") == 3)
        #expect(try ImageDataInspection.inspect(path: raw, declared: "vmdk") == nil)
        // A gzip-compressed ramdisk is what QEMU's -initrd takes; only a disk must not be an archive.
        let gzip = try directory.file("initrd", [0x1f, 0x8b, 0x08] + patternBytes(100))
        #expect(try ImageDataInspection.inspect(path: gzip, declared: "ari") == nil)
    }

    @Test(arguments: [
        ("raw", "declare disk_format qcow2"),
        ("aki", "declare disk_format qcow2"),
        ("qcow2+backing", "backing file"),
        ("qcow2+datafile", "external data file"),
        ("qcow2+encrypted", "encrypted"),
        ("qcow2+unknown", "incompatible features"),
        ("qcow2+version1", "version 1"),
        ("qcow2+truncated", "truncated"),
        ("qcow2+l1", "L1"),
    ])
    func refusesWhatQEMUMustNotOpen(declared: String, fragment: String) throws {
        let patches: [String: [(offset: Int, bytes: [UInt8])]] = [
            "backing": [
                (8, Self.bigEndian(0x200, width: 8)), (16, Self.bigEndian(11, width: 4)),
                (0x200, Array("/etc/shadow".utf8)),
            ],
            "datafile": [(72, Self.bigEndian(4, width: 8))],
            "encrypted": [(32, Self.bigEndian(1, width: 4))],
            "unknown": [(72, Self.bigEndian(1 << 40, width: 8))],
            "version1": [(4, Self.bigEndian(1, width: 4))],
            // An L1 table offset near 2^64: an overflow trap on today's parser.
            "l1": [(40, Self.bigEndian(UInt64.max - 0xffff, width: 8))],
        ]
        let parts = declared.split(separator: "+").map(String.init)
        guard var file = try qcow2("image", patch: patches[parts.last!] ?? []) else { return }
        if parts.last == "truncated" {
            file = try directory.file("truncated", Array(try Data(contentsOf: URL(fileURLWithPath: file)).prefix(20)))
        }
        do {
            _ = try ImageDataInspection.inspect(path: file, declared: parts[0])
            Issue.record("accepted")
        } catch {
            #expect(error.kind == .invalidImage)
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test(arguments: [
        ([UInt8](repeating: 0, count: 104), "does not start with a qcow2 header"),
        ([0x1f, 0x8b, 0x08] + [UInt8](repeating: 1, count: 100), "gzip"),
        ([UInt8](), "empty"),
    ])
    func refusesDataThatIsNotWhatItClaims(bytes: [UInt8], fragment: String) throws {
        let file = try directory.file("data", bytes)
        do {
            _ = try ImageDataInspection.inspect(path: file, declared: bytes.count == 104 ? "qcow2" : "raw")
            Issue.record("accepted")
        } catch {
            #expect(error.kind == .invalidImage)
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }
}
