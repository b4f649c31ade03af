import BerthCore
import BerthDiskImage
import BerthJSON
import BerthWire
import Foundation
import Logging
import Synchronization
import Testing

@testable import BerthCompute

@Suite("Bare-metal deploy bookkeeping")
struct BareMetalTests {
    @Test(
        "Node inventory entries: NAME=PATH[:SECTOR_SIZE], names a boot request can use",
        arguments: [
            ("n1=/dev/sdb", "n1", "/dev/sdb", 512),
            ("rack-2.node_7=/srv/disk.img:4096", "rack-2.node_7", "/srv/disk.img", 4096),
            ("a=/x:512", "a", "/x", 512),
        ])
    func inventoryAccepts(text: String, name: String, path: String, sectorSize: Int) throws {
        var inventory = NodeInventory()
        try inventory.add(text)
        #expect(inventory.nodes[name] == NodeInventory.Node(name: name, path: path, sectorSize: sectorSize))
    }

    @Test(
        "Node inventory entries a boot request could not name, or that make no sense, are refused",
        arguments: [
            "no-equals", "=/dev/sdb", ".hidden=/dev/sdb", "-dash=/dev/sdb", "a/b=/dev/sdb", "n=relative/path",
            "n=/dev/sdb:1024", String(repeating: "n", count: 64) + "=/dev/sdb",
        ])
    func inventoryRefuses(text: String) {
        var inventory = NodeInventory()
        #expect(throws: BerthError.self) { try inventory.add(text) }
        #expect(inventory.nodes.isEmpty)
    }

    @Test(
        "The config drive's hostname is an RFC 1123 label made from the instance name",
        arguments: [
            ("web-1", "web-1"), ("Web Server 01", "web-server-01"),
            (" -e2e <guest> & 'friends'- ", "e2e--guest-----friends"),
            ("---", "instance"), ("ünïcode", "n-code"),
            (String(repeating: "a", count: 62) + "-b", String(repeating: "a", count: 62)),
        ])
    func hostname(name: String, expected: String) {
        #expect(ConfigDriveContent.hostname(name) == expected)
    }

    @Test("A repeat answers what the first deploy did: bytes_written and seconds come from the record")
    func repeatAnswer() throws {
        let record = DeployRecord(
            uuid: "u", name: "n", node: "node1", imageID: "img", fingerprint: "f", requestID: "r",
            bytesWritten: 7_352_320, seconds: 0.442721004)
        let decoded = try JSONCodec.decode(DeployRecord.self, from: try JSONCodec.encode(record))
        #expect(decoded == record)
        // A record from before these fields were kept still decodes, and answers without them.
        let old = try JSONCodec.decode(
            DeployRecord.self,
            from: Array(#"{"uuid":"u","name":"n","node":"node1","image_id":"img","fingerprint":"f"}"#.utf8))
        #expect(old.bytesWritten == nil && old.seconds == nil)
    }

    @Test("A node is leased to one deploy at a time, the refusal names the holder, and it is free again after")
    func nodeLease() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("berth-lease-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let node = NodeInventory.Node(name: "node1", path: "/dev/null", sectorSize: 512)
        let holder = "3f2a8c1e-5b7d-4e9a-8c2f-1a2b3c4d5e6f"
        let other = "9b1d7f3c-2e4a-4c6b-8d0f-5a7c9e1b3d5f"
        var first: NodeLease? = try NodeLease(node: node, uuid: holder, directory: directory)
        #expect(first != nil)
        do {
            _ = try NodeLease(node: node, uuid: other, directory: directory)
            Issue.record("a second lease on a leased node was granted")
        } catch {
            #expect(error.kind == .deployFailed)
            #expect(error.message.contains("being deployed right now (instance \(holder))"), "\(error.message)")
        }
        do {
            _ = try NodeLease(node: node, uuid: holder, directory: directory)
            Issue.record("the holder's own uuid got a second lease")
        } catch {
            #expect(error.message.contains("an earlier request for it is still running"), "\(error.message)")
        }
        first = nil
        let again = try NodeLease(node: node, uuid: other, directory: directory)
        let elsewhere = try NodeLease(
            node: NodeInventory.Node(name: "node2", path: "/dev/null", sectorSize: 512), uuid: holder,
            directory: directory)
        withExtendedLifetime((again, elsewhere)) {}
    }
}
