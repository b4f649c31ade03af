import Foundation
import Testing

@testable import BerthLibvirt

/// Where the end-to-end tests find a real libvirtd, and what happens when it is missing: with
/// `BERTH_REQUIRE_SERVICES=1` (the test script and CI) they fail; by hand without it they are skipped, saying why.
enum RealLibvirt {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var uri: String { environment["BERTH_LIBVIRT_URI"] ?? "qemu:///system" }
    static var required: Bool { environment["BERTH_REQUIRE_SERVICES"] == "1" }

    /// Nil when libvirtd answers; otherwise why not. Asked once per test process.
    static let unreachable: String? = {
        do {
            _ = try LibvirtConnection(uri: uri).hostname()
            return nil
        } catch {
            return "\(error)"
        }
    }()

    static var run: Bool { unreachable == nil || required }

    static let skipReason = Comment(
        rawValue: "libvirt is not reachable at \(uri) (\(unreachable ?? "")); start it (scripts/start-services.sh) "
            + "or set BERTH_REQUIRE_SERVICES=1 to fail instead")

    /// Fails the test at its start, saying why, when libvirtd was required but is not there.
    static func requireReachable() throws {
        if let unreachable {
            throw SetupFailure(description: "BERTH_REQUIRE_SERVICES=1 but \(unreachable)")
        }
    }

    static let guestDirectory = environment["BERTH_TEST_GUEST_DIR"] ?? "/var/tmp/berth-test-guest"
    static let poolName = "berth-test"
    static let poolPath = "/var/lib/berth/test-pool"

    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// Runs a command to completion; throws with its output when it fails.
    @discardableResult
    static func command(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw SetupFailure(
                description: "\(executable) \(arguments.joined(separator: " ")) exited "
                    + "\(process.terminationStatus): \(text)")
        }
        return text
    }

    /// The file's text, "" when it cannot be read (yet). Plain read(2): Foundation's
    /// `String(contentsOfFile:)` leaks a buffer (LeakSanitizer) when it reads a file that is still growing.
    static func contents(of path: String) -> String {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = read(descriptor, &chunk, chunk.count)
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    struct SetupFailure: Error, CustomStringConvertible {
        var description: String
    }
}

@Suite("A real guest on libvirtd", .enabled(if: RealLibvirt.run, RealLibvirt.skipReason))
struct LibvirtEndToEndTests {
    /// A direct-kernel-boot guest (no firmware disk boot, no network) whose root disk is a pool volume.
    static func guestXML(uuid: String, kernel: String, initrd: String, volume: String, console: String) -> String {
        let e = StorageXML.escape
        return """
            <domain type='qemu'>
              <name>berth-\(uuid)</name>
              <uuid>\(uuid)</uuid>
              <metadata>
                <berth:instance xmlns:berth='https://berth.example/xmlns/instance/1.0'>
                  <berth:image_id>e2e-test</berth:image_id>
                </berth:instance>
              </metadata>
              <memory unit='MiB'>256</memory>
              <vcpu>1</vcpu>
              <os>
                <type arch='x86_64'>hvm</type>
                <kernel>\(e(kernel))</kernel>
                <initrd>\(e(initrd))</initrd>
                <cmdline>console=ttyS0 berth.test=hello root=/dev/vda</cmdline>
              </os>
              <features>
                <acpi/>
                <apic/>
              </features>
              <clock offset='utc'/>
              <on_poweroff>destroy</on_poweroff>
              <on_crash>destroy</on_crash>
              <devices>
                <disk type='volume' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source pool='\(e(RealLibvirt.poolName))' volume='\(e(volume))'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <serial type='file'>
                  <source path='\(e(console))'/>
                  <target port='0'/>
                </serial>
                <console type='file'>
                  <source path='\(e(console))'/>
                  <target type='serial' port='0'/>
                </console>
                <controller type='usb' model='none'/>
                <memballoon model='none'/>
              </devices>
            </domain>
            """
    }

    @Test(.timeLimit(.minutes(5)))
    func guestBootsFromAnOverlayAndPrintsItsCommandLine() async throws {
        try RealLibvirt.requireReachable()
        let guest = RealLibvirt.guestDirectory
        let script = RealLibvirt.repositoryRoot.appendingPathComponent("scripts/build-test-guest.sh").path
        try RealLibvirt.command(script, [guest])

        let uuid = newUUID()
        let work = "/var/tmp/berth-e2e-\(uuid.prefix(8))"
        let base = "\(work)/base.raw"
        let console = "\(work)/console.log"
        let volume = "berth-\(uuid).qcow2"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try RealLibvirt.command("/usr/bin/qemu-img", ["create", "-q", "-f", "raw", base, "16M"])

        let host = LibvirtHost(uri: RealLibvirt.uri)
        func cleanUp() async {
            _ = try? await host.destroyAndUndefine(uuid: uuid)
            _ = try? await host.deleteVolume(pool: RealLibvirt.poolName, name: volume)
            try? FileManager.default.removeItem(atPath: work)
        }
        do {
            try await host.ensurePool(name: RealLibvirt.poolName, path: RealLibvirt.poolPath)
            let overlay = try await host.createOverlay(
                pool: RealLibvirt.poolName, name: volume, backingPath: base, backingFormat: .raw,
                capacityBytes: 16 << 20)
            #expect(overlay == "\(RealLibvirt.poolPath)/\(volume)")
            let image = try RealLibvirt.command("/usr/bin/qemu-img", ["info", "-U", "--output=json", overlay])
            let info = try #require(try JSONSerialization.jsonObject(with: Data(image.utf8)) as? [String: Any])
            #expect(info["format"] as? String == "qcow2")
            #expect(info["backing-filename"] as? String == base)
            #expect(info["backing-filename-format"] as? String == "raw")
            #expect(info["virtual-size"] as? Int == 16 << 20)

            let xml = Self.guestXML(
                uuid: uuid, kernel: "\(guest)/vmlinuz", initrd: "\(guest)/initramfs.cpio.gz", volume: volume,
                console: console)
            let clock = ContinuousClock()
            let started = clock.now
            let domain = try await host.defineAndStart(xml: xml)
            #expect(domain.name == "berth-\(uuid)")
            // The running domain's disk is the pool volume, and libvirt found the raw base image underneath.
            #expect(domain.xml.contains("volume='\(volume)'"))
            #expect(domain.xml.contains("<source file='\(base)'/>"))

            var line: Substring?
            while line == nil && clock.now - started < .seconds(60) {
                try await Task.sleep(for: .milliseconds(250))
                let log = RealLibvirt.contents(of: console)
                line = log.split(whereSeparator: \.isNewline).first { $0.hasPrefix("BERTH-CMDLINE:") }
            }
            let elapsed = clock.now - started
            let found = try #require(line, "no BERTH-CMDLINE line on the console within 60 s (\(console))")
            #expect(found.contains("berth.test=hello"))
            print(
                "guest printed its command line \(elapsed.formatted(.units(fractionalPart: .show(length: 1)))) "
                    + "after defineAndStart: \(found)")

            #expect(try await host.destroyAndUndefine(uuid: uuid))
            #expect(try await host.deleteVolume(pool: RealLibvirt.poolName, name: volume))
            #expect(try await host.domain(uuid: uuid) == nil)
            #expect(try await host.volumePath(pool: RealLibvirt.poolName, name: volume) == nil)
            #expect(!FileManager.default.fileExists(atPath: overlay))
            // Cross-checked with virsh, which shares none of Berth's code.
            let domains = try RealLibvirt.command("/usr/bin/virsh", ["-c", RealLibvirt.uri, "list", "--all", "--name"])
            #expect(!domains.contains(uuid))
            let volumes = try RealLibvirt.command(
                "/usr/bin/virsh", ["-c", RealLibvirt.uri, "vol-list", RealLibvirt.poolName])
            #expect(!volumes.contains(volume))
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }

    @Test func aGuestThatCannotStartLeavesNothingDefined() async throws {
        try RealLibvirt.requireReachable()
        let uuid = newUUID()
        // virtlogd creates the console log before QEMU fails on the kernel; keep it somewhere removed afterwards.
        let work = "/var/tmp/berth-e2e-\(uuid.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let xml = Self.guestXML(
            uuid: uuid, kernel: "/nonexistent/berth-vmlinuz", initrd: "/nonexistent/berth-initrd",
            volume: "unused.qcow2", console: "\(work)/console.log"
        ).replacingOccurrences(of: #"(?s)<disk .*</disk>"#, with: "", options: .regularExpression)
        let host = LibvirtHost(uri: RealLibvirt.uri)
        let error = await #expect(throws: LibvirtError.self) { try await host.defineAndStart(xml: xml) }
        #expect(error?.message.hasPrefix("cannot start domain berth-\(uuid): ") == true)
        #expect(try await host.domain(uuid: uuid) == nil)
        #expect(try await !host.destroyAndUndefine(uuid: uuid))
    }
}
