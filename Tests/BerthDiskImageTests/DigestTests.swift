import BerthCore
import Foundation
import Testing

@testable import BerthDiskImage

struct DigestTests {
    private func hex(_ algorithm: ImageHashAlgorithm, _ bytes: [UInt8]) -> String {
        var hasher = ImageHasher(algorithm)
        hasher.update(bytes)
        return hasher.finalize()
    }

    @Test func knownVectors() {
        let abc = Array("abc".utf8)
        #expect(hex(.md5, []) == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(hex(.md5, abc) == "900150983cd24fb0d6963f7d28e17f72")
        #expect(hex(.sha256, []) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(.sha256, abc) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            hex(.sha384, abc)
                == "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                + "8086072ba1e7cc2358baeca134c825a7")
        #expect(
            hex(.sha512, abc)
                == "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
        #expect(
            hex(.sha512, [])
                == "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
                + "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")
    }

    /// Lengths around the block and padding boundaries (55/56/64 for md5/sha256, 111/112/128 for sha512), fed
    /// in uneven pieces, against the coreutils tools.
    @Test(arguments: [ImageHashAlgorithm.md5, .sha256, .sha384, .sha512])
    func streamingMatchesCoreutils(_ algorithm: ImageHashAlgorithm) throws {
        let directory = try ImgTestDirectory()
        let tool = "\(algorithm.rawValue)sum"
        for length in [1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 1000, 1 << 20, (1 << 20) + 37] {
            let bytes = imgRandomBytes(length, seed: UInt64(length) &* 7919)
            let path = try directory.write("data-\(length)", bytes)
            var hasher = ImageHasher(algorithm)
            var offset = 0
            var step = 1
            bytes.withUnsafeBytes { raw in
                while offset < length {
                    let count = min(step, length - offset)
                    hasher.update(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + count]))
                    offset += count
                    step = step * 3 + 1
                }
            }
            let expected = String(try imgTool(tool, [path]).text.prefix(algorithm.hexLength))
            #expect(hasher.finalize() == expected, "\(algorithm) of \(length) bytes")
        }
    }

    @Test func checksumPrefersOsHash() throws {
        let sha = String(repeating: "ab", count: 64)
        let chosen = try ImageChecksum.select(
            osHashAlgo: "sha512", osHashValue: sha, checksum: String(repeating: "0", count: 32))
        #expect(chosen?.algorithm == .sha512)
        #expect(chosen?.expected == sha)
        #expect(chosen?.field == "os_hash_value")
    }

    @Test func checksumFallsBackToLegacyMD5() throws {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E"
        let chosen = try ImageChecksum.select(osHashAlgo: nil, osHashValue: nil, checksum: md5)
        #expect(chosen?.algorithm == .md5)
        #expect(chosen?.expected == md5.lowercased())
        #expect(chosen?.field == "checksum")
        #expect(try ImageChecksum.select(osHashAlgo: "sha512", osHashValue: "", checksum: md5)?.algorithm == .md5)
        #expect(try ImageChecksum.select(osHashAlgo: nil, osHashValue: nil, checksum: nil) == nil)
    }

    @Test func checksumFromCatalogImage() throws {
        let image = CatalogImage(
            id: "i", name: "n", diskFormat: "raw", osHashAlgo: "sha256",
            osHashValue: String(repeating: "1", count: 64))
        #expect(try ImageChecksum.select(for: image)?.algorithm == .sha256)
    }

    @Test func unsupportedAlgorithmNamesTheSupportedOnes() {
        imgExpectError(.invalidImage, ["sha1", "md5, sha256, sha384, sha512"]) {
            try ImageChecksum.select(osHashAlgo: "sha1", osHashValue: String(repeating: "a", count: 40), checksum: nil)
        }
        imgExpectError(.invalidImage, ["os_hash_algo"]) {
            try ImageChecksum.select(osHashAlgo: nil, osHashValue: String(repeating: "a", count: 128), checksum: nil)
        }
        imgExpectError(.invalidImage, ["not a sha512 digest", "128 hex digits"]) {
            try ImageChecksum.select(osHashAlgo: "sha512", osHashValue: "abc", checksum: nil)
        }
        imgExpectError(.invalidImage, ["checksum", "not a md5 digest"]) {
            try ImageChecksum.select(osHashAlgo: nil, osHashValue: nil, checksum: String(repeating: "z", count: 32))
        }
    }

    /// Throughput in MB/s; prints only. Run in release: `BERTH_BENCH=1 swift test -c release --filter digestSpeed`.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["BERTH_BENCH"] != nil))
    func digestSpeed() {
        let bytes = imgRandomBytes(64 << 20, seed: 42)
        for algorithm in ImageHashAlgorithm.allCases {
            let clock = ContinuousClock()
            let started = clock.now
            var hasher = ImageHasher(algorithm)
            bytes.withUnsafeBytes { raw in
                for offset in stride(from: 0, to: raw.count, by: 4 << 20) {
                    hasher.update(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + (4 << 20)]))
                }
            }
            _ = hasher.finalize()
            let elapsed = clock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            print("digest \(algorithm.rawValue): \(Int(64 / seconds)) MiB/s")
        }
    }
}
