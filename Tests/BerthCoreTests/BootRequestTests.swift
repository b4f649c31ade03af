import BerthCore
import BerthJSON
import Testing

@Suite("boot_instance request")
struct BootRequestTests {
    static let valid: JSONObject = [
        "uuid": .string(sampleUUID), "name": "web-1", "image_id": "img-1",
        "flavor": ["name": "m1.small", "vcpus": 1, "memory_mb": 512, "root_gb": 1],
    ]

    static func with(_ changes: [(String, JSONValue?)]) -> JSONObject {
        var object = valid
        for (key, value) in changes {
            if key.hasPrefix("flavor.") {
                var flavor = object["flavor"]!.objectValue!
                flavor[String(key.dropFirst(7))] = value
                object["flavor"] = .object(flavor)
            } else {
                object[key] = value
            }
        }
        return object
    }

    @Test func decodesAMinimalRequestWithDefaults() throws {
        let request = try BootRequest.decode(.object(Self.valid))
        #expect(request.uuid == sampleUUID)
        #expect(request.flavor == sampleFlavor)
        #expect(request.target == .vm)
        #expect(request.node == nil)
        #expect(request.configDrive == false)
        #expect(request.userData == nil)
        #expect(request.metadata.isEmpty)
        #expect(request.overrides == VMOverrides())
    }

    @Test func decodesEveryField() throws {
        let object = Self.with([
            ("metadata", ["timezone": "Europe/Paris", "role": "db"]), ("target", "baremetal"), ("node", "node-1"),
            ("config_drive", true), ("user_data", "I2Nsb3VkLWNv\nbmZpZwo="),
            ("public_keys", ["default": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host"]), ("project_id", "0123abcd"),
            ("flavor.memory_mb", .double(512.0)),
        ])
        let request = try BootRequest.decode(object)
        #expect(request.target == .baremetal)
        #expect(request.node == "node-1")
        #expect(request.configDrive)
        #expect(request.userData.map { String(decoding: $0, as: UTF8.self) } == "#cloud-config\n")
        #expect(request.overrides.timezone?.name == "Europe/Paris")
        #expect(request.overrides.stored == ["role": "db"])
        #expect(request.publicKeys.count == 1)
        #expect(request.projectID == "0123abcd")
    }

    @Test func ownerComesFromTheContextUnlessTheInstanceNamesTheProject() throws {
        var request = try BootRequest.decode(Self.with([]))
        try request.takeOwner(projectID: "p-ctx", userID: "u-ctx")
        #expect(request.projectID == "p-ctx" && request.userID == "u-ctx")
        var named = try BootRequest.decode(Self.with([("project_id", "p-inst")]))
        try named.takeOwner(projectID: "p-ctx", userID: nil)
        #expect(named.projectID == "p-inst" && named.userID == nil)
        // A context id that is not a Keystone id is refused, named, before anything is written.
        var bad = try BootRequest.decode(Self.with([]))
        #expect {
            try bad.takeOwner(projectID: "p", userID: "u\u{1b}[2J")
        } throws: { error in
            "\(error)".contains("context's user_id must be 1-64 letters")
        }
    }

    struct BadCase: CustomTestStringConvertible, Sendable {
        var label: String
        var changes: [(String, JSONValue?)]
        var kind: BerthError.Kind = .invalidRequest
        var message: String
        var testDescription: String { label }
    }

    static let badCases: [BadCase] = [
        BadCase(
            label: "vcpus as a word", changes: [("flavor.vcpus", "two")],
            message: #"instance.flavor.vcpus must be an integer 1-256, got "two""#),
        BadCase(
            label: "vcpus zero", changes: [("flavor.vcpus", 0)],
            message: "instance.flavor.vcpus must be an integer 1-256, got 0"),
        BadCase(
            label: "vcpus 257", changes: [("flavor.vcpus", 257)],
            message: "instance.flavor.vcpus must be an integer 1-256, got 257"),
        BadCase(
            label: "vcpus boolean", changes: [("flavor.vcpus", true)],
            message: "instance.flavor.vcpus must be an integer 1-256, got true"),
        BadCase(
            label: "vcpus fractional", changes: [("flavor.vcpus", 1.5)],
            message: "instance.flavor.vcpus must be an integer 1-256, got 1.5"),
        BadCase(
            label: "memory too small", changes: [("flavor.memory_mb", 63)],
            message: "instance.flavor.memory_mb must be an integer 64-1048576 (MiB), got 63"),
        BadCase(
            label: "memory too large", changes: [("flavor.memory_mb", 1_048_577)],
            message: "instance.flavor.memory_mb must be an integer 64-1048576 (MiB), got 1048577"),
        BadCase(
            label: "root negative", changes: [("flavor.root_gb", -1)],
            message: "instance.flavor.root_gb must be an integer 0-65536 (GB), got -1"),
        BadCase(
            label: "root missing", changes: [("flavor.root_gb", nil)],
            message: "instance.flavor.root_gb is required: an integer 0-65536 (GB)"),
        BadCase(
            label: "flavor name with XML", changes: [("flavor.name", "<m1>")],
            message: "instance.flavor.name must be 1-255 characters of letters"),
        BadCase(
            label: "flavor unknown field", changes: [("flavor.disk", 1)],
            message: #"instance.flavor has unknown field "disk""#),
        BadCase(
            label: "flavor not an object", changes: [("flavor", "m1.small")],
            message: #"instance.flavor must be an object {name, vcpus, memory_mb, root_gb}, got "m1.small""#),
        BadCase(
            label: "uuid uppercase", changes: [("uuid", .string(sampleUUID.uppercased()))],
            message: "instance.uuid must be a canonical lowercase UUID"),
        BadCase(
            label: "uuid braces", changes: [("uuid", .string("{\(sampleUUID)}"))],
            message: "instance.uuid must be a canonical lowercase UUID"),
        BadCase(
            label: "uuid without hyphens", changes: [("uuid", "3f2a8c1e5b7d4e9a8c2f1a2b3c4d5e6f")],
            message: "instance.uuid must be a canonical lowercase UUID"),
        BadCase(label: "uuid missing", changes: [("uuid", nil)], message: "instance.uuid is required"),
        BadCase(label: "uuid number", changes: [("uuid", 7)], message: "instance.uuid must be a string"),
        BadCase(label: "name empty", changes: [("name", "")], message: "instance.name must be 1-255 characters, got 0"),
        BadCase(
            label: "name too long", changes: [("name", .string(String(repeating: "n", count: 256)))],
            message: "instance.name must be 1-255 characters, got 256"),
        BadCase(
            label: "name with line feed", changes: [("name", "a\nb")],
            message: "instance.name contains U+000A (line feed)"),
        BadCase(label: "name with NUL", changes: [("name", "a\u{0}")], message: "instance.name contains U+0000 (NUL)"),
        BadCase(
            label: "name with leading space", changes: [("name", " web")],
            message: "instance.name may not start or end with whitespace"),
        BadCase(
            label: "image id with a path", changes: [("image_id", "../etc")],
            message: "instance.image_id must be a catalog image id"),
        BadCase(
            label: "volume without image", changes: [("image_id", nil), ("volume_id", "vol-1")],
            message: "instance.volume_id: Berth boots a volume only through a placeholder image. Call "
                + "create_placeholder_image"),
        BadCase(
            label: "block device mapping without image",
            changes: [("image_id", nil), ("block_device_mapping_v2", [["source_type": "volume"]])],
            message: "instance.block_device_mapping_v2: Berth boots a volume only through a placeholder image"),
        BadCase(
            label: "no image at all", changes: [("image_id", nil)],
            message: "instance.image_id is required: every instance boots from an image. To boot a volume or "
                + "snapshot, call create_placeholder_image"),
        BadCase(
            label: "unknown field", changes: [("availability_zone", "nova")],
            message: #"instance has unknown field "availability_zone"; allowed fields: uuid, name"#),
        BadCase(
            label: "target unknown", changes: [("target", "container")],
            message: #"instance.target must be "vm" or "baremetal", got "container""#),
        BadCase(
            label: "baremetal without node", changes: [("target", "baremetal")],
            message: #"instance.node is required for target "baremetal""#),
        BadCase(
            label: "node on a vm", changes: [("node", "node-1")],
            message: #"instance.node is only for target "baremetal""#),
        BadCase(
            label: "node with a path", changes: [("target", "baremetal"), ("node", "/dev/sda")],
            message: "instance.node must be 1-63 letters"),
        BadCase(
            label: "config_drive as string", changes: [("config_drive", "true")],
            message: #"instance.config_drive must be true or false, got "true""#),
        BadCase(
            label: "user_data not base64", changes: [("user_data", "not base64!")],
            message: "instance.user_data is not valid base64: unexpected character at byte 10"),
        BadCase(
            label: "user_data unpadded", changes: [("user_data", "QQ")],
            message: "instance.user_data is not valid base64: 2 characters and 0 '='"),
        BadCase(
            label: "user_data data after padding", changes: [("user_data", "QQ==QQ==")],
            message: "data after '=' padding"),
        BadCase(
            label: "user_data over 64 KiB",
            changes: [("user_data", .string(String(repeating: "AAAA", count: 21846)))],
            message: "instance.user_data decodes to 65538 bytes; at most 65536 bytes"),
        BadCase(
            label: "public key with line break",
            changes: [("public_keys", ["k": "ssh-rsa AAAA\nssh-rsa BBBB"])],
            message: "instance.public_keys.k must be one OpenSSH public key line"),
        BadCase(
            label: "public key not a key", changes: [("public_keys", ["k": "hello"])],
            message: "instance.public_keys.k must be one OpenSSH public key line"),
        BadCase(
            label: "public keys not strings", changes: [("public_keys", ["k": 1])],
            message: "instance.public_keys.k must be a string, got 1"),
        BadCase(
            label: "project id with XML", changes: [("project_id", "<p>")],
            message: "instance.project_id must be 1-64 letters"),
        BadCase(
            label: "metadata not an object", changes: [("metadata", ["a"])], kind: .invalidMetadata,
            message: "instance.metadata must be an object of strings, got an array"),
        BadCase(
            label: "metadata value not a string", changes: [("metadata", ["n": 1])], kind: .invalidMetadata,
            message: "instance.metadata.n must be a string, got 1"),
        BadCase(
            label: "metadata invalid override", changes: [("metadata", ["hw_vif_model": "vmxnet"])],
            kind: .invalidMetadata, message: "allowed: virtio, e1000, e1000e, rtl8139, ne2k_pci, pcnet, netfront"),
        BadCase(
            label: "metadata key with XML", changes: [("metadata", ["<k>": "v"])], kind: .invalidMetadata,
            message: "has characters outside A-Z a-z 0-9"),
    ]

    @Test(arguments: badCases)
    func refused(_ testCase: BadCase) {
        let failure = error { () throws(BerthError) in try BootRequest.decode(Self.with(testCase.changes)) }
        #expect(failure?.kind == testCase.kind, "\(failure?.description ?? "accepted")")
        #expect(
            failure?.message.hasPrefix(testCase.message) == true || failure?.message.contains(testCase.message) == true,
            "\(failure?.message ?? "accepted")")
    }

    @Test func userDataAtExactly64KiBIsAccepted() throws {
        // 65536 bytes = 21845 full groups + one 1-byte group ("AA==").
        let text = String(repeating: "AAAA", count: 21845) + "AA=="
        let request = try BootRequest.decode(Self.with([("user_data", .string(text))]))
        #expect(request.userData?.count == 65536)
    }

    @Test(arguments: [
        ("", [UInt8]()), ("QQ==", [0x41]), ("QUI=", [0x41, 0x42]), ("QUJD", [0x41, 0x42, 0x43]),
        ("/+8=", [0xFF, 0xEF]),
    ])
    func base64Vectors(text: String, bytes: [UInt8]) throws {
        #expect(try BootRequest.decode(Self.with([("user_data", .string(text))])).userData == bytes)
    }

    @Test func requestMustBeAnObject() {
        let failure = error { () throws(BerthError) in try BootRequest.decode(JSONValue.array([])) }
        #expect(failure?.message == "instance must be an object, got an array")
    }

    @Test func errorClassesMatchTheRPCAPI() {
        #expect(
            BerthError.Kind.allCases.map(\.rawValue) == [
                "InvalidRequest", "ImageNotFound", "VolumeNotFound", "InvalidImage", "InvalidMetadata",
                "HostIncompatible", "InstanceExists", "InstanceNotFound", "NodeNotFound", "BuildFailed",
                "DeployFailed", "SnapshotFailed",
            ])
        #expect(BerthError.imageNotFound("x").className == "ImageNotFound")
        #expect(BerthError.nodeNotFound("n9", known: ["n2", "n1"]).message.contains("known nodes: n1, n2"))
    }
}
