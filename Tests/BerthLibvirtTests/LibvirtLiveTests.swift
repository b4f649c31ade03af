import CLibvirt
import Foundation
import Testing

@testable import BerthLibvirt

/// libvirt's in-process test driver: real libvirt code paths (open, RPC-free calls, error reporting) with a
/// fixed fake host, and no daemon. It has 16 CPUs, 3 GiB, and one running domain "test" with 2 vCPUs.
let testURI = "test:///default"

@Suite("LibvirtConnection against test:///default")
struct LibvirtConnectionTests {
    @Test func capabilitiesMatchTheCapturedDocument() throws {
        let connection = try LibvirtConnection(uri: testURI)
        let live = try HostCapabilities.parse(xml: connection.capabilitiesXML())
        #expect(live == (try HostCapabilities.parse(xml: testDriverCapabilities)))
        #expect(try connection.capabilities() == live)
    }

    @Test func hostFacts() throws {
        let connection = try LibvirtConnection(uri: testURI)
        #expect(connection.isAlive())
        #expect(try !connection.hostname().isEmpty)
        #expect(try connection.libVersion().wholeMatch(of: /\d+\.\d+\.\d+/) != nil)
        #expect(try connection.hypervisorVersion() == "0.0.2")
        let node = try connection.nodeInfo()
        #expect(node.cpus == 16)
        #expect(node.memoryKiB == 3 * 1024 * 1024)
        #expect(node.cpuModel == "i686")
        #expect(node.numaNodes == 2)
        #expect(try connection.freeMemoryBytes() > 0)
        #expect(try connection.activeVcpus() == 2)
    }

    @Test func closedConnectionFailsClearly() throws {
        let connection = try LibvirtConnection(uri: testURI)
        connection.close()
        connection.close()
        #expect(connection.isClosed)
        #expect(!connection.isAlive())
        let error = #expect(throws: LibvirtError.self) { try connection.hostname() }
        #expect(error?.code == Int32(VIR_ERR_INVALID_CONN.rawValue))
        #expect(error?.message.contains("connection was closed") == true)
    }

    @Test func badURIGivesAnOperatorMessage() {
        let error = #expect(throws: LibvirtError.self) { try LibvirtConnection(uri: "bogus:///x") }
        guard let error else { return }
        #expect(error.code != 0)
        #expect(error.message.hasPrefix("cannot connect to libvirt at bogus:///x: \(error.libvirtMessage); "))
        // No daemon here, so libvirt tries libvirtd's socket; with a daemon it rejects the scheme instead.
        #expect(
            error.message.hasSuffix("is libvirtd running? (libvirtd -d)")
                || error.message.hasSuffix("check the URI (for example qemu:///system, or test:///default for tests)"))
        #expect(error.isConnectionFailure)
        #expect("\(error)" == error.message)
    }
}

@Suite("LibvirtHost")
struct LibvirtHostTests {
    @Test func describesTheTestHost() async throws {
        let host = LibvirtHost(uri: testURI)
        let description = try await host.describe(hostName: "compute-7")
        #expect(description.host == "compute-7")
        #expect(description.architectures == ["i686"])
        #expect(description.hypervisorTypes == ["test"])
        #expect(description.vmModes == ["hvm", "xen"])
        #expect(description.pae)
        #expect(description.free.vcpus == 14)
        #expect(try await description.free.memoryMB == Int(host.freeMemoryBytes() / 1024 / 1024))
        #expect(description.version.hypervisor == "0.0.2")
        #expect(try await host.describe().host == host.hostname())
    }

    @Test func describeEncodesWithWireKeys() async throws {
        let description = try await LibvirtHost(uri: testURI).describe(hostName: "h")
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(description)) as? [String: Any]
        #expect(
            Set(json?.keys.map { $0 } ?? [])
                == ["host", "architectures", "hypervisor_types", "vm_modes", "pae", "free", "version"])
        #expect(Set((json?["free"] as? [String: Any])?.keys.map { $0 } ?? []) == ["vcpus", "memory_mb"])
        #expect(Set((json?["version"] as? [String: Any])?.keys.map { $0 } ?? []) == ["libvirt", "hypervisor"])
    }

    @Test func manyConcurrentCallsRunOnTheLibvirtThread() async throws {
        let host = LibvirtHost(uri: testURI)
        let expectedName = try await host.hostname()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<400 {
                group.addTask {
                    switch index % 4 {
                    case 0: return try await host.hostname() == expectedName
                    case 1: return try await host.nodeInfo().cpus == 16
                    case 2: return try await host.capabilities().hypervisorTypes == ["test"]
                    default:
                        let free = try await host.freeMemoryBytes()
                        let onLibvirtThread = await host.isOnLibvirtThread()
                        return free > 0 && onLibvirtThread
                    }
                }
            }
            for try await ok in group {
                #expect(ok)
            }
        }
        #expect(await host.reconnects == 0)
    }

    @Test func reopensALostConnectionOnce() async throws {
        let host = LibvirtHost(uri: testURI)
        try await host.connect()
        #expect(await host.isAlive())
        _ = try await host.capabilities()
        await host.dropConnectionForTesting()
        #expect(await !host.isAlive())
        #expect(try await host.nodeInfo().cpus == 16)
        #expect(await host.reconnects == 1)
        #expect(try await host.capabilities().architectures == ["i686"])
        await host.close()
        #expect(await !host.isAlive())
        #expect(try await !host.hostname().isEmpty)
        #expect(await host.reconnects == 1)
    }

    @Test func unreachableLibvirtThrowsOnEveryCall() async {
        let host = LibvirtHost(uri: "bogus:///x")
        await #expect(throws: LibvirtError.self) { try await host.connect() }
        let error = await #expect(throws: LibvirtError.self) { try await host.hostname() }
        #expect(error?.message.hasPrefix("cannot connect to libvirt at bogus:///x") == true)
        await #expect(throws: LibvirtError.self) { try await host.describe() }
    }

    @Test func withConnectionRunsCallerWork() async throws {
        let host = LibvirtHost(uri: testURI)
        let vcpus = try await host.withConnection { try $0.activeVcpus() }
        #expect(vcpus == 2)
    }
}
