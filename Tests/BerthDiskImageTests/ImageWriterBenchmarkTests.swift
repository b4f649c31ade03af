import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

/// Deploy time against `qemu-img convert -O raw -S 4k`; prints only (timings are not asserted).
/// Run in release: `BERTH_BENCH=1 swift test -c release --filter ImageWriterBenchmarkTests`.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["BERTH_BENCH"] != nil))
struct ImageWriterBenchmarkTests {
    private func seconds(_ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock()
        let started = clock.now
        try body()
        let elapsed = clock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    @Test func deployVersusQemuImg() throws {
        let directory = try ImgTestDirectory()
        let size: UInt64 = 1 << 30
        // 1 GiB: 384 MiB of incompressible data, 128 MiB of compressible text, the rest zeros.
        let raw = try imgSparseDisk(directory.file("bench.raw"), size: size)
        try imgTool("dd", ["if=/dev/urandom", "of=\(raw)", "bs=1M", "count=384", "conv=notrunc", "status=none"])
        let text = try directory.write(
            "text", Array(String(repeating: "berth deploys bare metal nodes ", count: 1 << 16).utf8))
        for index in 0..<64 {
            try imgTool(
                "dd",
                [
                    "if=\(text)", "of=\(raw)", "bs=1M", "count=2", "seek=\(512 + index * 4)", "conv=notrunc",
                    "status=none",
                ])
        }
        let qcow2 = directory.file("bench.qcow2")
        try imgTool("qemu-img", ["convert", "-O", "qcow2", raw, qcow2])
        let compressed = directory.file("bench-c.qcow2")
        try imgTool("qemu-img", ["convert", "-c", "-O", "qcow2", raw, compressed])

        for (name, image) in [("raw", raw), ("qcow2", qcow2), ("qcow2 compressed", compressed)] {
            let sha = String(try imgTool("sha512sum", [image]).text.prefix(128))
            let checksum = try ImageChecksum.select(osHashAlgo: "sha512", osHashValue: sha, checksum: nil)
            // Warm the page cache so both sides read from memory.
            _ = try imgTool("cat", [image])
            let qemuDisk = directory.file("qemu.disk")
            try? FileManager.default.removeItem(atPath: qemuDisk)
            let qemu = try seconds { try imgTool("qemu-img", ["convert", "-O", "raw", "-S", "4k", image, qemuDisk]) }
            try FileManager.default.removeItem(atPath: qemuDisk)
            for verify in [false, true] {
                let disk = try imgSparseDisk(directory.file("berth.disk"), size: size)
                var report: DeployReport?
                var planSeconds = 0.0
                let total = try seconds {
                    var plan: DeployPlan?
                    planSeconds = try seconds {
                        plan = try ImageWriter.plan(
                            imagePath: image, diskPath: disk, checksum: verify ? checksum : nil, configDrive: false)
                    }
                    report = try plan?.write()
                }
                let format = { (value: Double) in String(format: "%.2f", value) }
                print(
                    "bench \(name) checksum=\(verify): berth \(format(total)) s (plan \(format(planSeconds)) s, "
                        + "write \(format(report?.seconds ?? 0)) s), qemu-img \(format(qemu)) s, "
                        + "ratio \(format(total / qemu))")
                try FileManager.default.removeItem(atPath: disk)
            }
        }
    }
}
