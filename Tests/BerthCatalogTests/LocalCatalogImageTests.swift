import BerthCore
import BerthJSON
import Foundation
import Testing

@testable import BerthCatalog

@Suite struct LocalCatalogImageTests {
    let directory: TemporaryDirectory
    let catalog: LocalCatalog

    init() throws {
        directory = try TemporaryDirectory()
        catalog = LocalCatalog(root: "\(directory.path)/catalog")
    }

    var root: String { catalog.root }

    @Test func createsAnImageFromBytesWithGlanceDigests() async throws {
        let bytes = patternBytes(3 * (1 << 20) + 12345)  // spans several 1 MiB chunks
        let image = try await catalog.createImage(
            name: "debian", diskFormat: "raw", properties: ["hw_disk_bus": "scsi"], data: .bytes(bytes))
        #expect(image.status == "active")
        #expect(image.size == Int64(bytes.count))
        #expect(image.virtualSize == Int64(bytes.count))
        #expect(image.containerFormat == "bare")
        #expect(image.osHashAlgo == "sha512")
        #expect(CatalogID(image.id)?.value == image.id)

        let file = try directory.file("source.raw", bytes)
        guard let md5sum = try run("md5sum", [file]), let sha512sum = try run("sha512sum", [file]) else {
            Issue.record("md5sum/sha512sum (coreutils) are not installed; cannot cross-check the digests")
            return
        }
        #expect(image.checksum == String(md5sum.prefix(32)))
        #expect(image.osHashValue == String(sha512sum.prefix(128)))

        let stored = try await catalog.image(id: image.id)
        #expect(stored == image)
        let path = try await catalog.localImageData(id: image.id)
        #expect(path == "\(root)/images/\(image.id).data")
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) == bytes)
        #expect(try strayFiles(in: root, expecting: [image.id]).isEmpty)
    }

    @Test func createsAnImageFromAFileAndKeepsTheRecordReadable() async throws {
        let bytes = patternBytes(4096) + [UInt8](repeating: 0, count: (1 << 20) + 5) + patternBytes(100)
        let file = try directory.file("disk.raw", bytes)
        let image = try await catalog.createImage(name: "from file", diskFormat: "raw", data: .file(file))
        #expect(image.size == Int64(bytes.count))
        let path = try await catalog.localImageData(id: image.id)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) == bytes)
        // The source is copied, not moved.
        #expect(FileManager.default.fileExists(atPath: file))

        // Glance's field names and ISO 8601 times, as an operator reading the file expects.
        let record = try JSONCodec.parse(
            Array(Data(contentsOf: URL(fileURLWithPath: "\(root)/images/\(image.id).json"))))
        #expect(record["disk_format"]?.stringValue == "raw")
        #expect(record["os_hash_algo"]?.stringValue == "sha512")
        #expect(record["created_at"]?.stringValue?.hasSuffix("Z") == true)
        // What the CLI prints is the same JSON as the file, not Foundation's seconds since 2001.
        #expect(try RecordCoding.json(image) == record)
    }

    @Test func readsTheQCOW2VirtualSize() async throws {
        let file = "\(directory.path)/x.qcow2"
        guard try run("qemu-img", ["create", "-f", "qcow2", file, "1G"]) != nil else {
            Issue.record("qemu-img is not installed (Debian package qemu-utils); cannot make a real qcow2 file")
            return
        }
        let size = try FileManager.default.attributesOfItem(atPath: file)[.size] as! Int
        let image = try await catalog.createImage(name: "cirros", diskFormat: "qcow2", data: .file(file))
        #expect(image.virtualSize == 1 << 30)
        #expect(image.size == Int64(size))

        await expectCatalogError(.invalidImage, ["declare disk_format qcow2"]) {
            try await catalog.createImage(name: "lies", diskFormat: "raw", data: .file(file))
        }
        let top = "\(directory.path)/top.qcow2"
        guard try run("qemu-img", ["create", "-f", "qcow2", "-b", file, "-F", "qcow2", top]) != nil else {
            Issue.record("qemu-img could not create an overlay")
            return
        }
        await expectCatalogError(.invalidImage, ["backing file"]) {
            try await catalog.createImage(name: "overlay", diskFormat: "qcow2", data: .file(top))
        }
        await expectCatalogError(.invalidImage, ["does not start with a qcow2 header"]) {
            try await catalog.createImage(name: "raw as qcow2", diskFormat: "qcow2", data: .bytes(patternBytes(1000)))
        }
        #expect(try strayFiles(in: root, expecting: [image.id]).isEmpty)
    }

    @Test func kernelAndRamdiskReferencesMustNameTheRightKind() async throws {
        let kernel = try await catalog.createImage(name: "vmlinuz", diskFormat: "aki", data: .bytes(patternBytes(500)))
        let ramdisk = try await catalog.createImage(name: "initrd", diskFormat: "ari", data: .bytes(patternBytes(300)))
        let disk = try await catalog.createImage(name: "root", diskFormat: "raw", data: .bytes(patternBytes(700)))
        #expect(kernel.containerFormat == "aki")
        #expect(kernel.isKernel && ramdisk.isRamdisk)

        let image = try await catalog.createImage(
            name: "ok", diskFormat: "raw", properties: ["kernel_id": kernel.id, "ramdisk_id": ramdisk.id],
            data: .bytes(patternBytes(100)))
        #expect(image.properties["kernel_id"] == kernel.id)

        await expectCatalogError(.invalidProperty, ["kernel_id", disk.id, "disk_format raw", "aki"]) {
            try await catalog.createImage(
                name: "bad", diskFormat: "raw", properties: ["kernel_id": disk.id], data: .bytes([1]))
        }
        await expectCatalogError(.invalidProperty, ["ramdisk_id", "ari"]) {
            try await catalog.updateImage(id: image.id, setProperties: ["ramdisk_id": kernel.id], removeProperties: [])
        }
        let missing = CatalogID.mint().value
        await expectCatalogError(.invalidProperty, ["kernel_id names image \(missing)", "not in the catalog"]) {
            try await catalog.createImage(name: "bad", diskFormat: "raw", properties: ["kernel_id": missing], data: nil)
        }
        await expectCatalogError(.invalidProperty, ["boot_options[0].kernel_id", "aki"]) {
            try await catalog.updateImage(
                id: image.id, setProperties: ["boot_options": #"[{"vm_mode": "xen", "kernel_id": "\#(ramdisk.id)"}]"#],
                removeProperties: [])
        }
        #expect(try await catalog.images().count == 4)
        #expect(try strayFiles(in: root, expecting: [kernel.id, ramdisk.id, disk.id, image.id]).isEmpty)
    }

    @Test func invalidPropertiesAreRefusedWithoutWritingAnything() async throws {
        let cases: [([String: String], String)] = [
            (["hw_disk_bus": "floppy"], "virtio, scsi, sata, ide, xen, usb"),
            (["boot_options": #"{"vm_mode": "hvm"}"#], "must be a JSON list"),
            (["bad key": "x"], "characters outside"),
            (Dictionary(uniqueKeysWithValues: (0..<129).map { ("p\($0)", "v") }), "at most 128"),
        ]
        for (properties, fragment) in cases {
            await expectCatalogError(.invalidProperty, [fragment]) {
                try await catalog.createImage(
                    name: "refused", diskFormat: "raw", properties: properties, data: .bytes(patternBytes(1000)))
            }
        }
        await expectCatalogError(.invalidProperty, ["disk_format"]) {
            try await catalog.createImage(name: "x", diskFormat: "vhdx", data: .bytes([1]))
        }
        #expect(allFiles(in: root).isEmpty)
    }

    @Test func idsFromCallersNeverBecomePaths() async throws {
        let outside = try directory.file("secret.json", Array("{}".utf8))
        for id in [
            "../secret", "../../secret", "..", "", "images/../../secret", "\(CatalogID.mint().value)/..", "%2e%2e",
        ] {
            await expectCatalogError(.imageNotFound, ["not a UUID"]) { try await catalog.image(id: id) }
            await expectCatalogError(.imageNotFound) { try await catalog.deleteImage(id: id) }
            await expectCatalogError(.imageNotFound) { try await catalog.localImageData(id: id) }
            await expectCatalogError(.imageNotFound) {
                try await catalog.updateImage(id: id, setProperties: ["a": "b"], removeProperties: [])
            }
            await expectCatalogError(.volumeNotFound) { try await catalog.volume(id: id) }
            await expectCatalogError(.snapshotNotFound) { try await catalog.deleteSnapshot(id: id, force: true) }
            await expectCatalogError(.invalidRequest, ["not a UUID"]) {
                try await catalog.createImage(
                    id: id, name: "x", diskFormat: "raw", containerFormat: "bare", properties: [:], data: nil)
            }
        }
        #expect(FileManager.default.fileExists(atPath: outside))
        #expect(allFiles(in: root).isEmpty)
    }

    @Test func callerChosenIdsMakeCreatesRepeatable() async throws {
        let id = CatalogID.mint().value
        let first = try await catalog.createImage(
            id: id.uppercased(), name: "snap", diskFormat: "raw", containerFormat: "bare", properties: [:],
            data: .bytes([1, 2, 3]))
        #expect(first.id == id)
        let error = await expectCatalogError(.alreadyExists, [id]) {
            try await catalog.createImage(
                id: id, name: "snap", diskFormat: "raw", containerFormat: "bare", properties: [:], data: .bytes([4]))
        }
        #expect(error?.rpcClassName == "InvalidRequest")
        #expect(try await catalog.localImageData(id: id).isEmpty == false)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(root)/images/\(id).data")) == Data([1, 2, 3]))
        #expect(try strayFiles(in: root, expecting: [id]).isEmpty)
    }

    @Test func updatesAndDeletes() async throws {
        let image = try await catalog.createImage(
            name: "u", diskFormat: "raw", properties: ["a": "1", "b": "2"], data: .bytes(patternBytes(10)))
        let updated = try await catalog.updateImage(
            id: image.id, setProperties: ["c": "3", "a": "one"], removeProperties: ["b", "never-set"])
        #expect(updated.properties == ["a": "one", "c": "3"])
        #expect(updated.createdAt == image.createdAt)
        #expect(try await catalog.image(id: image.id) == updated)
        await expectCatalogError(.invalidRequest, ["both set and removed"]) {
            try await catalog.updateImage(id: image.id, setProperties: ["a": "x"], removeProperties: ["a"])
        }

        try await catalog.deleteImage(id: image.id.uppercased())
        await expectCatalogError(.imageNotFound, [image.id]) { try await catalog.image(id: image.id) }
        await expectCatalogError(.imageNotFound) { try await catalog.deleteImage(id: image.id) }
        #expect(try await catalog.images().isEmpty)
        #expect(allFiles(in: root).isEmpty)
    }

    @Test func listsNewestFirst() async throws {
        var ids: [String] = []
        for index in 0..<3 {
            ids.append(try await catalog.createImage(name: "i\(index)", diskFormat: "raw", data: .bytes([1])).id)
        }
        let listed = try await catalog.images()
        #expect(Set(listed.map(\.id)) == Set(ids))
        #expect(zip(listed, listed.dropFirst()).allSatisfy { $0.createdAt >= $1.createdAt })
    }

    @Test func queuedImagesTakeOneUpload() async throws {
        let queued = try await catalog.createImage(name: "later", diskFormat: "raw")
        #expect(queued.status == "queued" && queued.size == 0 && queued.checksum == nil)
        await expectCatalogError(.invalidImage, ["status queued"]) { try await catalog.localImageData(id: queued.id) }

        let uploaded = try await catalog.uploadImageData(id: queued.id, data: .bytes(patternBytes(5000)))
        #expect(uploaded.status == "active" && uploaded.size == 5000 && uploaded.checksum != nil)
        #expect(try await catalog.image(id: queued.id) == uploaded)
        await expectCatalogError(.invalidRequest, ["not queued"]) {
            try await catalog.uploadImageData(id: queued.id, data: .bytes([1]))
        }
        #expect(try strayFiles(in: root, expecting: [queued.id]).isEmpty)
    }

    @Test func verificationCatchesChangedData() async throws {
        let bytes = patternBytes(10_000)
        let image = try await catalog.createImage(name: "v", diskFormat: "raw", data: .bytes(bytes))
        try await catalog.verifyImageData(id: image.id)
        let path = try await catalog.localImageData(id: image.id)

        var tampered = bytes
        tampered[5000] ^= 0xff
        try Data(tampered).write(to: URL(fileURLWithPath: path))
        await expectCatalogError(.invalidImage, ["does not match", "upload it again"]) {
            try await catalog.verifyImageData(id: image.id)
        }
        // The cached verdict is for the old file; the rewritten one is checked again.
        await expectCatalogError(.invalidImage, ["does not match"]) { try await catalog.localImageData(id: image.id) }
    }

    @Test func verificationOutlivesTheProcessUntilTheFileChanges() async throws {
        let bytes = patternBytes(10_000)
        let image = try await catalog.createImage(name: "v", diskFormat: "raw", data: .bytes(bytes))
        let id = CatalogID(image.id)!
        let stampPath = catalog.layout.imageVerified(id)
        // Hashed while imported: stamped at once, for this file as it is now.
        let stamp = try #require(DataStamp.load(from: stampPath))
        let dataPath = catalog.layout.imageData(id)
        var info = stat()
        #expect(stat(dataPath, &info) == 0)
        #expect(stamp == DataStamp(info, checksum: image.osHashValue))

        // A later process trusts the stamp instead of hashing: shown by a stamp that vouches for wrong data.
        var tampered = bytes
        tampered[5000] ^= 0xff
        try Data(tampered).write(to: URL(fileURLWithPath: dataPath))
        #expect(stat(dataPath, &info) == 0)
        DataStamp(info, checksum: image.osHashValue).save(to: stampPath)
        #expect(try await LocalCatalog(root: root).localImageData(id: image.id) == dataPath)
        // An explicit verification always hashes, and a failed one withdraws the stamp.
        await expectCatalogError(.invalidImage, ["does not match"]) {
            try await LocalCatalog(root: root).verifyImageData(id: image.id)
        }
        #expect(!FileManager.default.fileExists(atPath: stampPath))

        // Without a vouching stamp, a change to the file (its times, even at the same size) means hashing again.
        let other = try await catalog.createImage(name: "w", diskFormat: "raw", data: .bytes(bytes))
        let otherPath = catalog.layout.imageData(CatalogID(other.id)!)
        try Data(tampered).write(to: URL(fileURLWithPath: otherPath))
        await expectCatalogError(.invalidImage, ["does not match"]) {
            try await LocalCatalog(root: root).localImageData(id: other.id)
        }
        #expect(!FileManager.default.fileExists(atPath: catalog.layout.imageVerified(CatalogID(other.id)!)))

        // Good data verified by a read is stamped again; a delete takes the stamp along.
        try Data(bytes).write(to: URL(fileURLWithPath: otherPath))
        #expect(try await LocalCatalog(root: root).localImageData(id: other.id) == otherPath)
        #expect(DataStamp.load(from: catalog.layout.imageVerified(CatalogID(other.id)!)) != nil)
        try await catalog.deleteImage(id: other.id)
        #expect(try strayFiles(in: root, expecting: [image.id]).isEmpty)
    }

    @Test func stampsReadBackExactlyAndRefuseAnythingElse() throws {
        var info = stat()
        info.st_dev = 2049
        info.st_ino = 1_234_567
        info.st_size = 604_635_136
        info.st_mtim = timespec(tv_sec: 1_764_825_600, tv_nsec: 123_456_789)
        info.st_ctim = timespec(tv_sec: 1_764_825_601, tv_nsec: 5)
        for checksum in [String(repeating: "ab", count: 64), nil] {
            let stamp = DataStamp(info, checksum: checksum)
            #expect(DataStamp(line: stamp.line) == stamp)
        }
        let good = DataStamp(info, checksum: "00ff").line
        for bad in [
            "", "berth-verified-1\n", good.replacingOccurrences(of: "berth-verified-2", with: "berth-verified-1"),
            String(good.dropLast()), good.replacingOccurrences(of: ".123456789", with: ".1234567890"),
            good.replacingOccurrences(of: "00ff", with: "00f/"), good + "x", good.replacingOccurrences(of: " ", with: "  "),
        ] {
            #expect(DataStamp(line: bad) == nil, "accepted \(bad.debugDescription)")
        }
    }

    @Test func sweepRemovesTheStampOfDeletedData() async throws {
        let image = try await catalog.createImage(name: "v", diskFormat: "raw", data: .bytes(patternBytes(4096)))
        let id = CatalogID(image.id)!
        // A delete that died after its record and data were gone.
        try FileManager.default.removeItem(atPath: catalog.layout.imageRecord(id))
        try FileManager.default.removeItem(atPath: catalog.layout.imageData(id))
        let report = try await catalog.sweep()
        #expect(report.removedOrphanedData == [catalog.layout.imageVerified(id)])
        #expect(try strayFiles(in: root).isEmpty)
    }

    @Test func missingCatalogDirectoryIsReportedOnRead() async throws {
        let absent = LocalCatalog(root: "\(directory.path)/nowhere")
        await expectCatalogError(.catalogUnavailable, ["does not exist"]) { try await absent.images() }
        try await absent.prepare()
        #expect(try await absent.images().isEmpty)
    }
}
