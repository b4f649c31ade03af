import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

struct InflateTests {
    /// Compresses `bytes` with Python's zlib as raw deflate (wbits = -15), the way qcow2 stores clusters.
    private func pythonDeflate(_ bytes: [UInt8], level: Int = 6, strategy: String = "Z_DEFAULT_STRATEGY")
        throws -> [UInt8]
    {
        let script = """
            import sys, zlib
            data = sys.stdin.buffer.read()
            c = zlib.compressobj(\(level), zlib.DEFLATED, -15, 9, zlib.\(strategy))
            sys.stdout.buffer.write(c.compress(data) + c.flush())
            """
        return [UInt8](try imgTool("python3", ["-c", script], input: Data(bytes)).output)
    }

    private static func samples() -> [(String, [UInt8])] {
        let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog. ", count: 2000).utf8)
        var mixed: [UInt8] = []
        for index in 0..<300 {
            mixed +=
                index % 3 == 0
                ? imgRandomBytes(700, seed: UInt64(index)) : [UInt8](repeating: UInt8(index & 0xff), count: 900)
        }
        return [
            ("empty", []),
            ("one byte", [0x41]),
            ("text", text),
            ("random", imgRandomBytes(200_000, seed: 9)),
            ("zeros", [UInt8](repeating: 0, count: 1 << 20)),
            ("mixed", mixed),
            ("short period", (0..<100_000).map { UInt8(truncatingIfNeeded: $0 % 7) }),
        ]
    }

    @Test func decodesPythonZlibAtEveryLevelAndStrategy() throws {
        let decoder = InflateDecoder()
        for (name, bytes) in Self.samples() {
            for (level, strategy) in [
                (0, "Z_DEFAULT_STRATEGY"), (1, "Z_DEFAULT_STRATEGY"), (6, "Z_DEFAULT_STRATEGY"),
                (9, "Z_DEFAULT_STRATEGY"), (6, "Z_FIXED"), (6, "Z_HUFFMAN_ONLY"), (6, "Z_RLE"), (9, "Z_FILTERED"),
            ] {
                let compressed = try pythonDeflate(bytes, level: level, strategy: strategy)
                do {
                    let decoded = try decoder.decompress(compressed, limit: bytes.count + 1)
                    let same = decoded == bytes
                    #expect(same, "\(name) at level \(level) \(strategy): \(decoded.count) bytes")
                } catch {
                    Issue.record("\(name) at level \(level) \(strategy): \(error)")
                }
            }
        }
    }

    @Test func stopsWhenTheOutputIsFull() throws {
        let bytes = imgRandomBytes(10_000, seed: 3) + [UInt8](repeating: 7, count: 10_000)
        let compressed = try pythonDeflate(bytes)
        var output = [UInt8](repeating: 0, count: 4096)
        let result = try compressed.withUnsafeBytes { input in
            try output.withUnsafeMutableBytes { try InflateDecoder().decompress(input, into: $0) }
        }
        #expect(result == InflateResult(bytesWritten: 4096, streamEnded: false))
        #expect(output.elementsEqual(bytes.prefix(4096)))
        #expect(throws: InflateError.self) { try InflateDecoder().decompress(compressed, limit: 100) }
    }

    @Test func rejectsTruncatedAndMalformedStreams() throws {
        let bytes = Array(String(repeating: "berth deploys bare metal. ", count: 500).utf8)
        let compressed = try pythonDeflate(bytes)
        let decoder = InflateDecoder()
        for cut in [1, compressed.count / 2, compressed.count - 1] {
            #expect(throws: InflateError.self, "cut at \(cut)") {
                try decoder.decompress(Array(compressed.prefix(cut)), limit: bytes.count)
            }
        }
        // Block type 3 is reserved.
        #expect(throws: InflateError("corrupt deflate stream: invalid block type")) {
            try decoder.decompress([0x07], limit: 10)
        }
        // A stored block whose length and complement disagree.
        #expect(throws: InflateError.self) { try decoder.decompress([0x01, 0x05, 0x00, 0x00, 0x00], limit: 10) }
        // Fixed block: literal "a", then a match at distance 2 with one byte behind it (zlib: "too far back").
        #expect(throws: InflateError("corrupt deflate stream: invalid distance too far back")) {
            try decoder.decompress([0x4b, 0x04, 0x42, 0x00], limit: 10)
        }
        // The decoder is still usable after errors.
        let again = try decoder.decompress(compressed, limit: bytes.count)
        #expect(again == bytes)
    }

    /// Real compressed clusters from `qemu-img convert -c`: each inflates to exactly one cluster holding the
    /// bytes `qemu-img convert -O raw` puts there.
    @Test(arguments: [65536, 4096, 512])
    func inflatesQemuCompressedClusters(_ clusterSize: Int) throws {
        let directory = try ImgTestDirectory()
        var content: [UInt8] = []
        for index in 0..<40 {
            content +=
                index % 2 == 0
                ? Array(String(repeating: "cluster \(index) ", count: 4000).utf8.prefix(48_000))
                : imgRandomBytes(20_000, seed: UInt64(index)) + [UInt8](repeating: 0, count: 28_000)
        }
        let raw = try directory.write("source.raw", content + [UInt8](repeating: 0, count: 512 - content.count % 512))
        let qcow2 = directory.file("c.qcow2")
        try imgTool("qemu-img", ["convert", "-c", "-O", "qcow2", "-o", "cluster_size=\(clusterSize)", raw, qcow2])
        let image = try QCOW2Image(path: qcow2)
        let reference = try [UInt8](Data(contentsOf: URL(fileURLWithPath: raw)))
        let decoder = InflateDecoder()
        var compressedClusters = 0
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: qcow2))
        defer { try? handle.close() }
        for extent in try image.extents() {
            guard case .compressed(let offset, let length) = extent.kind else { continue }
            try handle.seek(toOffset: offset)
            var input = [UInt8](try handle.read(upToCount: length) ?? Data())
            input += [UInt8](repeating: 0, count: length - input.count)
            var output = [UInt8](repeating: 0, count: clusterSize)
            let result = try input.withUnsafeBytes { source in
                try output.withUnsafeMutableBytes { try decoder.decompress(source, into: $0) }
            }
            #expect(result.bytesWritten == clusterSize)
            let start = Int(extent.virtualOffset)
            let end = min(start + clusterSize, reference.count)
            let same = output[0..<end - start].elementsEqual(reference[start..<end])
            #expect(same, "cluster at \(start)")
            compressedClusters += 1
        }
        #expect(compressedClusters > 10)
    }
}
