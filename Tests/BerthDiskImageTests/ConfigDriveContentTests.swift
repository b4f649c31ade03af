import BerthCore
import BerthJSON
import Foundation
import Testing

@testable import BerthDiskImage

@Suite("Config drive content")
struct ConfigDriveContentTests {
    func parsed(_ file: FATImageWriter.File?) throws -> JSONValue {
        try JSONCodec.parse(try #require(file).contents)
    }

    @Test("Every dated version Nova writes, plus latest, each with meta_data.json")
    func versions() {
        let paths = Set(partSampleContent().files().map(\.path))
        for version in ConfigDriveContent.versions + ["latest"] {
            #expect(paths.contains("openstack/\(version)/meta_data.json"), "\(version)")
            #expect(paths.contains("openstack/\(version)/user_data"), "\(version)")
        }
        #expect(ConfigDriveContent.versions.last == "2018-08-27", "the newest version cloud-init knows")
        #expect(ConfigDriveContent.versions == ConfigDriveContent.versions.sorted())
    }

    @Test("Files appear from the version that introduced them")
    func versionGating() {
        let paths = Set(partSampleContent().files().map(\.path))
        #expect(!paths.contains("openstack/2013-04-04/vendor_data.json"))
        #expect(paths.contains("openstack/2013-10-17/vendor_data.json"))
        #expect(!paths.contains("openstack/2013-10-17/network_data.json"))
        #expect(paths.contains("openstack/2015-10-15/network_data.json"))
        #expect(!paths.contains("openstack/2016-06-30/vendor_data2.json"))
        #expect(paths.contains("openstack/2016-10-06/vendor_data2.json"))
        for name in ["meta_data.json", "user_data", "vendor_data.json", "network_data.json", "vendor_data2.json"] {
            #expect(paths.contains("openstack/latest/\(name)"), "\(name)")
        }
    }

    @Test("user_data only when given")
    func noUserData() {
        let paths = partSampleContent(userData: nil).files().map(\.path)
        #expect(!paths.contains { $0.hasSuffix("/user_data") })
    }

    @Test("meta_data.json carries Nova's keys")
    func metaData() throws {
        var content = partSampleContent()
        content.publicKeys["b-second"] = "ssh-rsa AAAAB3 second"
        let latest = try parsed(content.files().first { $0.path == "openstack/latest/meta_data.json" })
        #expect(latest["uuid"] == "8d3c9a3e-4c5b-4f1a-9c47-0d6f7e1b2a90")
        #expect(latest["name"] == "node-7")
        #expect(latest["hostname"] == "node-7.example")
        #expect(latest["launch_index"] == 0)
        #expect(latest["availability_zone"] == "nova")
        #expect(latest["project_id"] == "b1946ac92492d2347c6235b4d2611184")
        #expect(latest["meta"] == ["role": "compute"])
        #expect(latest["devices"] == [])
        #expect(latest["public_keys"]?.objectValue?.keys == ["b-second", "ops"])
        #expect(
            latest["keys"]?.arrayValue?.first
                == ["name": "b-second", "type": "ssh", "data": "ssh-rsa AAAAB3 second"])

        let folsom = try parsed(content.files().first { $0.path == "openstack/2012-08-10/meta_data.json" })
        #expect(folsom["keys"] == nil && folsom["devices"] == nil && folsom["project_id"] == nil)
        #expect(folsom["public_keys"]?["ops"] != nil)
    }

    @Test("network_data.json defaults to the minimal valid document; vendor data to {}")
    func defaults() throws {
        let files = partSampleContent().files()
        #expect(
            try parsed(files.first { $0.path == "openstack/latest/network_data.json" })
                == ["links": [], "networks": [], "services": []])
        #expect(try parsed(files.first { $0.path == "openstack/latest/vendor_data.json" }) == [:])
        #expect(try parsed(files.first { $0.path == "openstack/latest/vendor_data2.json" }) == [:])
    }

    @Test("cloud-init's own reader accepts the drive: uuid, hostname, keys and user data come back")
    func cloudInitReads() throws {
        let directory = try PartTestDirectory()
        let image = try directory.sparseFile("drive.img", bytes: 64 << 20)
        let userData = "#!/bin/sh\necho 'héllo' > /tmp/berth\n"
        var content = partSampleContent(userData: userData)
        content.networkData = [
            "links": [["id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56"]],
            "networks": [["id": "net0", "link": "eth0", "type": "ipv4_dhcp"]], "services": [],
        ]
        try FATImageWriter(sectorSize: 512).write(
            files: content.files(), diskPath: image, offset: 0, size: 64 << 20, hiddenSectors: 0)
        let view = try partVerifyConfigDrive(disk: image, offset: 0, size: 64 << 20, in: directory)
        partExpectSample(view, userData: userData)
        #expect(view["networkdata"]?["links"]?.arrayValue?.first?["id"] == "eth0")
        #expect(view["meta"] == ["role": "compute"])
    }
}
