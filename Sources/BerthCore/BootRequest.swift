import BerthJSONValue

/// The `instance` argument of `boot_instance` (DESIGN §3), decoded and checked field by field so a bad request
/// is answered with the path of the field, what it must be and what was sent:
/// `instance.flavor.vcpus must be an integer 1-256, got "two"`.
///
/// Limits (Nova's where Nova has one):
/// - `uuid`: canonical lowercase `8-4-4-4-12` hex, because it is also the libvirt uuid and the idempotency key,
///   and two spellings of one uuid must not make two instances;
/// - `name`: 1–255 characters, no control characters, no leading or trailing whitespace;
/// - `image_id`: a catalog id (`CatalogID`); volumes boot only through a placeholder image;
/// - `metadata`: see `VMOverrides` (128 keys, 255-byte keys, 65535-byte values);
/// - `user_data`: base64, at most 64 KiB decoded (Nova's limit), line breaks allowed;
/// - `public_keys`: at most 32 OpenSSH public keys of at most 16 KiB each, named as Nova names key pairs.
public struct BootRequest: Sendable, Hashable {
    public enum Target: String, Sendable, Hashable, CaseIterable {
        case vm, baremetal
    }

    public static let maxNameLength = 255
    public static let maxUserDataBytes = 65536
    public static let maxPublicKeys = 32
    public static let maxPublicKeyBytes = 16384

    public var uuid: String
    public var name: String
    public var imageID: String
    public var flavor: Flavor
    /// The metadata as sent; `overrides` is its interpretation.
    public var metadata: [String: String]
    public var overrides: VMOverrides
    public var target: Target
    /// Bare-metal node name from the worker's inventory; nil for a VM.
    public var node: String?
    public var configDrive: Bool
    /// Decoded `user_data`.
    public var userData: [UInt8]?
    public var publicKeys: [String: String]
    public var projectID: String?
    /// Who asked: the oslo context's user, filled in by the worker (not a field of `instance`).
    public var userID: String?

    public init(
        uuid: String, name: String, imageID: String, flavor: Flavor, metadata: [String: String] = [:],
        overrides: VMOverrides = VMOverrides(), target: Target = .vm, node: String? = nil, configDrive: Bool = false,
        userData: [UInt8]? = nil, publicKeys: [String: String] = [:], projectID: String? = nil
    ) {
        self.uuid = uuid
        self.name = name
        self.imageID = imageID
        self.flavor = flavor
        self.metadata = metadata
        self.overrides = overrides
        self.target = target
        self.node = node
        self.configDrive = configDrive
        self.userData = userData
        self.publicKeys = publicKeys
        self.projectID = projectID
    }

    /// Takes the project and user from the request's oslo context, unless `instance.project_id` named the
    /// project already. Both tag every metrics sample of the instance, so a context id is held to the same rule
    /// as `instance.project_id` (a Keystone id), and refused before anything is written.
    public mutating func takeOwner(projectID contextProject: String?, userID contextUser: String?)
        throws(BerthError)
    {
        for case (let key, let value?) in [
            ("project_id", projectID == nil ? contextProject : nil), ("user_id", contextUser),
        ]
        where !Self.isValidProjectID(value) {
            throw .invalidRequest(
                "the request context's \(key) must be 1-64 letters, digits, '_' or '-' (a Keystone id), got "
                    + "\(quoted(value))")
        }
        projectID = projectID ?? contextProject
        userID = contextUser
    }

    public static let fields = [
        "uuid", "name", "image_id", "flavor", "metadata", "target", "node", "config_drive", "user_data",
        "public_keys", "project_id",
    ]

    /// Ways of naming a volume that Nova's API has and Berth's does not: every boot goes through an image.
    static let volumeFields = [
        "volume_id", "snapshot_id", "block_device_mapping", "block_device_mapping_v2", "boot_volume", "bdm",
    ]

    /// Decodes `args.instance`. Throws `InvalidRequest`, or `InvalidMetadata` for the metadata.
    public static func decode(_ value: JSONValue, path: String = "instance") throws(BerthError) -> BootRequest {
        guard case .object(let object) = value else {
            throw .invalidRequest("\(path) must be an object, got \(describe(value))")
        }
        return try decode(object, path: path)
    }

    public static func decode(_ object: JSONObject, path: String = "instance") throws(BerthError) -> BootRequest {
        let fields = Fields(object: object, path: path)
        for key in object.keys where volumeFields.contains(key) {
            throw .invalidRequest(
                "\(path).\(key): Berth boots a volume only through a placeholder image. Call "
                    + "create_placeholder_image with the volume_id or snapshot_id first, then boot its image_id")
        }
        for key in object.keys where !Self.fields.contains(key) {
            throw .invalidRequest(
                "\(path) has unknown field \(quoted(key)); allowed fields: \(Self.fields.joined(separator: ", "))")
        }

        let uuid = try fields.requiredString("uuid", rule: "a canonical lowercase UUID")
        guard isCanonicalUUID(uuid) else {
            throw .invalidRequest(
                "\(path).uuid must be a canonical lowercase UUID such as 3f2a8c1e-5b7d-4e9a-8c2f-1a2b3c4d5e6f, got "
                    + "\(quoted(uuid))")
        }
        let name = try fields.requiredString("name", rule: "a name of 1-\(maxNameLength) characters")
        try checkName(name, path: "\(path).name")

        guard let imageID = try fields.optionalString("image_id") else {
            throw .invalidRequest(
                "\(path).image_id is required: every instance boots from an image. To boot a volume or snapshot, "
                    + "call create_placeholder_image with its id first and boot the placeholder's image_id")
        }
        guard CatalogID.isValid(imageID) else {
            throw .invalidRequest(
                "\(path).image_id must be a catalog image id (\(CatalogID.rule)), got \(quoted(imageID))")
        }

        let flavor = try decodeFlavor(fields.required("flavor"), path: "\(path).flavor")

        let metadata = try fields.stringMap("metadata", error: BerthError.invalidMetadata)
        let overrides = try VMOverrides(metadata: metadata)

        let targetName = try fields.optionalString("target") ?? Target.vm.rawValue
        guard let target = Target(rawValue: targetName) else {
            throw .invalidRequest("\(path).target must be \"vm\" or \"baremetal\", got \(quoted(targetName))")
        }
        let node = try fields.optionalString("node")
        switch (target, node) {
        case (.baremetal, nil):
            throw .invalidRequest(
                "\(path).node is required for target \"baremetal\": name a node from the worker's inventory "
                    + "(its --node options; a NodeNotFound answer lists them)")
        case (.vm, .some):
            throw .invalidRequest(
                "\(path).node is only for target \"baremetal\"; remove it or set target to \"baremetal\"")
        case (.baremetal, let node?):
            guard isValidNodeName(node) else {
                throw .invalidRequest(
                    "\(path).node must be 1-63 letters, digits, '.', '_', '-' (not starting with '.' or '-'), got "
                        + "\(quoted(node))")
            }
        case (.vm, nil):
            break
        }

        let configDrive: Bool
        switch object["config_drive"] {
        case nil, .null?: configDrive = false
        case .bool(let flag)?: configDrive = flag
        case let other?: throw .invalidRequest("\(path).config_drive must be true or false, got \(describe(other))")
        }

        let userData = try fields.optionalString("user_data").map { (text) throws(BerthError) -> [UInt8] in
            try decodeUserData(text, path: "\(path).user_data")
        }

        let publicKeys = try fields.stringMap("public_keys", error: BerthError.invalidRequest)
        try checkPublicKeys(publicKeys, path: "\(path).public_keys")

        let projectID = try fields.optionalString("project_id")
        if let projectID, !isValidProjectID(projectID) {
            throw .invalidRequest(
                "\(path).project_id must be 1-64 letters, digits, '_' or '-' (a Keystone project id), got "
                    + "\(quoted(projectID))")
        }

        return BootRequest(
            uuid: uuid, name: name, imageID: imageID, flavor: flavor, metadata: metadata, overrides: overrides,
            target: target, node: node, configDrive: configDrive, userData: userData, publicKeys: publicKeys,
            projectID: projectID)
    }

    // MARK: Field rules

    public static func isCanonicalUUID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (index, byte) in bytes.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard byte == UInt8(ascii: "-") else { return false }
            } else {
                guard
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                        || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                else { return false }
            }
        }
        return true
    }

    static func checkName(_ name: String, path: String) throws(BerthError) {
        let count = name.unicodeScalars.count
        guard count >= 1, count <= maxNameLength else {
            throw .invalidRequest("\(path) must be 1-\(maxNameLength) characters, got \(count)")
        }
        if let bad = name.unicodeScalars.first(where: { isControl($0) || !XMLWriter.isAllowed($0) }) {
            throw .invalidRequest(
                "\(path) contains \(describeCharacter(bad)); names may not hold control characters. Remove it")
        }
        if let first = name.unicodeScalars.first, let last = name.unicodeScalars.last,
            first.properties.isWhitespace || last.properties.isWhitespace
        {
            throw .invalidRequest("\(path) may not start or end with whitespace, got \(quoted(name))")
        }
    }

    static func decodeFlavor(_ value: JSONValue, path: String) throws(BerthError) -> Flavor {
        guard case .object(let object) = value else {
            throw .invalidRequest(
                "\(path) must be an object {name, vcpus, memory_mb, root_gb}, got \(describe(value))")
        }
        let fields = Fields(object: object, path: path)
        for key in object.keys where !["name", "vcpus", "memory_mb", "root_gb"].contains(key) {
            throw .invalidRequest(
                "\(path) has unknown field \(quoted(key)); allowed fields: name, vcpus, memory_mb, root_gb")
        }
        let name = try fields.requiredString("name", rule: Flavor.nameRule)
        let vcpus = try fields.integer("vcpus", in: 1...Flavor.maxVCPUs)
        let memory = try fields.integer("memory_mb", in: Flavor.minMemoryMB...Flavor.maxMemoryMB, unit: " (MiB)")
        let root = try fields.integer("root_gb", in: 0...Flavor.maxRootGB, unit: " (GB)")
        let flavor = Flavor(name: name, vcpus: vcpus, memoryMB: memory, rootGB: root)
        try flavor.validate(path: path)
        return flavor
    }

    /// Strict base64 (RFC 4648 alphabet, padding required); whitespace is skipped because MIME tools wrap
    /// base64 at 76 columns, as Nova accepts.
    static func decodeUserData(_ text: String, path: String) throws(BerthError) -> [UInt8] {
        var values: [UInt8] = []
        var padding = 0
        for (offset, byte) in text.utf8.enumerated() {
            let value: UInt8
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): continue
            case UInt8(ascii: "="):
                padding += 1
                continue
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            default:
                throw .invalidRequest(
                    "\(path) is not valid base64: unexpected character at byte \(offset); encode the user data "
                        + "with standard base64 (A-Z a-z 0-9 + /, '=' padding)")
            }
            guard padding == 0 else {
                throw .invalidRequest("\(path) is not valid base64: data after '=' padding at byte \(offset)")
            }
            values.append(value)
        }
        guard (values.count + padding) % 4 == 0, padding <= 2, values.count % 4 != 1 else {
            throw .invalidRequest(
                "\(path) is not valid base64: \(values.count) characters and \(padding) '=' do not make whole "
                    + "4-character groups; send padded base64")
        }
        let decodedSize = values.count / 4 * 3 + max(0, values.count % 4 - 1)
        guard decodedSize <= maxUserDataBytes else {
            throw .invalidRequest(
                "\(path) decodes to \(decodedSize) bytes; at most \(maxUserDataBytes) bytes (64 KiB) are allowed. "
                    + "Fetch larger content from the guest instead")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(decodedSize)
        var index = 0
        while index < values.count {
            let group = values[index..<min(index + 4, values.count)]
            var accumulator: UInt32 = 0
            for value in group { accumulator = accumulator << 6 | UInt32(value) }
            accumulator <<= 6 * UInt32(4 - group.count)
            for byteIndex in 0..<(group.count - 1) {
                bytes.append(UInt8(truncatingIfNeeded: accumulator >> (16 - 8 * byteIndex)))
            }
            index += 4
        }
        return bytes
    }

    static func checkPublicKeys(_ keys: [String: String], path: String) throws(BerthError) {
        guard keys.count <= maxPublicKeys else {
            throw .invalidRequest("\(path) has \(keys.count) keys; at most \(maxPublicKeys) are allowed")
        }
        for name in keys.keys.sorted() {
            let key = keys[name]!
            let nameAllowed = name.unicodeScalars.allSatisfy { scalar in
                switch scalar {
                case "a"..."z", "A"..."Z", "0"..."9", " ", "@", ".", "_", "-": true
                default: false
                }
            }
            guard nameAllowed, (1...255).contains(name.utf8.count) else {
                throw .invalidRequest(
                    "\(path) key name \(quoted(name)) must be 1-255 letters, digits, spaces, '@', '.', '_', '-'")
            }
            // authorized_keys is one key per line: a line break would smuggle in a second key.
            let parts = key.split(separator: " ", omittingEmptySubsequences: true)
            let typeOK = parts.first.map { $0.hasPrefix("ssh-") || $0.hasPrefix("ecdsa-") || $0.hasPrefix("sk-") }
            guard key.utf8.count <= maxPublicKeyBytes, !key.unicodeScalars.contains(where: isControl), parts.count >= 2,
                typeOK == true
            else {
                throw .invalidRequest(
                    "\(path).\(name) must be one OpenSSH public key line (\"ssh-ed25519 AAAA... comment\", at most "
                        + "\(maxPublicKeyBytes) bytes, no line breaks)")
            }
        }
    }

    static func isValidNodeName(_ name: String) -> Bool {
        CatalogID.isValid(name) && name.utf8.count <= 63
    }

    static func isValidProjectID(_ id: String) -> Bool {
        (1...64).contains(id.utf8.count)
            && id.unicodeScalars.allSatisfy { scalar in
                switch scalar {
                case "a"..."z", "A"..."Z", "0"..."9", "_", "-": true
                default: false
                }
            }
    }
}

/// A value as an error message shows what was sent: strings quoted, numbers as written, containers by type.
func describe(_ value: JSONValue) -> String {
    switch value {
    case .string(let text): quoted(text)
    case .int(let number): String(number)
    case .double(let number): String(number)
    case .bool(let flag): String(flag)
    case .null: "null"
    case .array: "an array"
    case .object: "an object"
    }
}

/// Field access on one JSON object with errors that carry the object's path.
private struct Fields {
    let object: JSONObject
    let path: String

    func required(_ key: String) throws(BerthError) -> JSONValue {
        guard let value = object[key], !value.isNull else {
            throw .invalidRequest("\(path).\(key) is required")
        }
        return value
    }

    func requiredString(_ key: String, rule: String) throws(BerthError) -> String {
        guard let value = object[key], !value.isNull else {
            throw .invalidRequest("\(path).\(key) is required: \(rule)")
        }
        guard case .string(let text) = value else {
            throw .invalidRequest("\(path).\(key) must be a string (\(rule)), got \(describe(value))")
        }
        return text
    }

    func optionalString(_ key: String) throws(BerthError) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        case let other?: throw .invalidRequest("\(path).\(key) must be a string, got \(describe(other))")
        }
    }

    func integer(_ key: String, in range: ClosedRange<Int>, unit: String = "") throws(BerthError) -> Int {
        let rule = "an integer \(range.lowerBound)-\(range.upperBound)\(unit)"
        guard let value = object[key], !value.isNull else {
            throw .invalidRequest("\(path).\(key) is required: \(rule)")
        }
        // A boolean is not a count, even though some JSON libraries would read true as 1.
        guard case let number? = value.intValue, value.boolValue == nil, let int = Int(exactly: number),
            range.contains(int)
        else {
            throw .invalidRequest("\(path).\(key) must be \(rule), got \(describe(value))")
        }
        return int
    }

    /// An object of strings (`metadata`, `public_keys`); absent or null is empty.
    func stringMap(_ key: String, error: (String) -> BerthError) throws(BerthError) -> [String: String] {
        switch object[key] {
        case nil, .null?:
            return [:]
        case .object(let members)?:
            var result: [String: String] = [:]
            for (name, member) in members {
                guard case .string(let text) = member else {
                    throw error("\(path).\(key).\(name) must be a string, got \(describe(member))")
                }
                result[name] = text
            }
            return result
        case let other?:
            throw error("\(path).\(key) must be an object of strings, got \(describe(other))")
        }
    }
}
