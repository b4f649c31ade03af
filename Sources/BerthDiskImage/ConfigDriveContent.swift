import BerthCore
import BerthJSON
import Foundation

/// What goes on a config drive (OpenStack "config-drive-v2"), laid out as Nova writes it so cloud-init's
/// ConfigDrive datasource (and cloudbase-init, Ignition's OpenStack provider) read it unchanged.
public struct ConfigDriveContent: Sendable, Hashable {
    /// The dated metadata versions Nova publishes, oldest first; cloud-init picks the newest it knows from
    /// the same list (cloudinit/sources/helpers/openstack.py `OS_VERSIONS`), then falls back to `latest`.
    public static let versions = [
        "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06", "2017-02-22",
        "2018-08-27",
    ]
    /// The smallest valid network_data.json: no links, networks or services, so cloud-init falls back to
    /// its own network configuration (DHCP on the first NIC) instead of failing on a missing key.
    public static let emptyNetworkData: JSONValue = ["links": [], "networks": [], "services": []]

    public var uuid: String
    public var name: String
    public var hostname: String
    /// Key name → OpenSSH public key.
    public var publicKeys: [String: String]
    /// User metadata (`nova boot --meta k=v`); cloud-init honours `dsmode` from here.
    public var meta: [String: String]
    public var launchIndex: Int
    public var availabilityZone: String
    public var projectID: String?
    /// Written only when given, as Nova does: an empty file and no file mean different things to cloud-init.
    public var userData: [UInt8]?
    public var networkData: JSONValue
    public var vendorData: JSONValue
    public var vendorData2: JSONValue

    public init(
        uuid: String, name: String, hostname: String, publicKeys: [String: String] = [:], meta: [String: String] = [:],
        launchIndex: Int = 0, availabilityZone: String = "nova", projectID: String? = nil, userData: [UInt8]? = nil,
        networkData: JSONValue = ConfigDriveContent.emptyNetworkData, vendorData: JSONValue = [:],
        vendorData2: JSONValue = [:]
    ) {
        self.uuid = uuid
        self.name = name
        self.hostname = hostname
        self.publicKeys = publicKeys
        self.meta = meta
        self.launchIndex = launchIndex
        self.availabilityZone = availabilityZone
        self.projectID = projectID
        self.userData = userData
        self.networkData = networkData
        self.vendorData = vendorData
        self.vendorData2 = vendorData2
    }

    /// What a boot request puts on its config drive, for a VM and a bare-metal node alike: one path for the
    /// content, so both get the same files from the same request.
    public init(request: BootRequest) {
        self.init(
            uuid: request.uuid, name: request.name, hostname: Self.hostname(request.name),
            publicKeys: request.publicKeys, meta: request.metadata, projectID: request.projectID,
            userData: request.userData)
    }

    /// The config drive's hostname: an RFC 1123 label made from the instance name (a label may not start or
    /// end with `-`, so those are trimmed).
    public static func hostname(_ name: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-")
        let lowered = String(name.lowercased().map { allowed.contains($0) ? $0 : "-" })
        let label = String(lowered.trimmingCharacters(in: CharacterSet(charactersIn: "-")).prefix(63))
        let trimmed = label.trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        return trimmed.isEmpty ? "instance" : trimmed
    }

    /// meta_data.json for one version directory. Keys appear in the version that introduced them in Nova
    /// (nova/api/metadata/base.py), so an old reader pinned to an old version sees what it expects.
    public func metaData(version: String) -> JSONValue {
        let keyNames = publicKeys.keys.sorted()
        var object = JSONObject()
        object["uuid"] = .string(uuid)
        object["name"] = .string(name)
        object["hostname"] = .string(hostname)
        object["public_keys"] = .object(JSONObject(keyNames.map { ($0, JSONValue.string(publicKeys[$0]!)) }))
        if ConfigDriveContent.isAtLeast(version, "2015-10-15") {
            object["keys"] = .array(
                keyNames.map { ["name": .string($0), "type": "ssh", "data": .string(publicKeys[$0]!)] })
        }
        object["meta"] = .object(JSONObject(meta.keys.sorted().map { ($0, JSONValue.string(meta[$0]!)) }))
        object["launch_index"] = .int(Int64(launchIndex))
        object["availability_zone"] = .string(availabilityZone)
        if let projectID, ConfigDriveContent.isAtLeast(version, "2015-10-15") {
            object["project_id"] = .string(projectID)
        }
        if ConfigDriveContent.isAtLeast(version, "2016-06-30") { object["devices"] = [] }
        return .object(object)
    }

    /// Every file of the drive, under `openstack/<version>/` for each dated version and `latest`.
    public func files() -> [FATImageWriter.File] {
        var files: [FATImageWriter.File] = []
        for version in ConfigDriveContent.versions + ["latest"] {
            let directory = "openstack/\(version)/"
            files.append(json(directory + "meta_data.json", metaData(version: version)))
            if let userData { files.append(FATImageWriter.File(path: directory + "user_data", contents: userData)) }
            if ConfigDriveContent.isAtLeast(version, "2013-10-17") {
                files.append(json(directory + "vendor_data.json", vendorData))
            }
            if ConfigDriveContent.isAtLeast(version, "2015-10-15") {
                files.append(json(directory + "network_data.json", networkData))
            }
            if ConfigDriveContent.isAtLeast(version, "2016-10-06") {
                files.append(json(directory + "vendor_data2.json", vendorData2))
            }
        }
        return files
    }

    private func json(_ path: String, _ value: JSONValue) -> FATImageWriter.File {
        FATImageWriter.File(path: path, contents: JSONCodec.serialize(value))
    }

    /// ISO dates compare as strings; `latest` is newer than all of them.
    static func isAtLeast(_ version: String, _ minimum: String) -> Bool {
        version == "latest" || version >= minimum
    }
}
