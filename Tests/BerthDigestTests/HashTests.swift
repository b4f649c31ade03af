import Testing

import BerthDigest

@Suite struct HashTests {
    static func md5(_ bytes: [UInt8]) -> String {
        var hasher = MD5Digest()
        hasher.update(bytes)
        return hasher.finalize()
    }

    static func sha512(_ bytes: [UInt8]) -> String {
        var hasher = SHA512Digest()
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// RFC 1321, appendix A.5.
    @Test(arguments: [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
        (String(repeating: "1234567890", count: 8), "57edf4a22be3c955ac49da2e2107b67a"),
    ])
    func md5KnownVectors(input: String, digest: String) {
        #expect(Self.md5(Array(input.utf8)) == digest)
    }

    /// FIPS 180-2 appendix C and the NIST example values.
    @Test(arguments: [
        (
            "",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
                + "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        ),
        (
            "abc",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
        (
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                + "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
                + "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
        ),
    ])
    func sha512KnownVectors(input: String, digest: String) {
        #expect(Self.sha512(Array(input.utf8)) == digest)
    }

    @Test func sha512OfOneMillionAs() {
        #expect(
            Self.sha512([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
                + "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b"
        )
    }

    /// Feeding the same bytes in odd-sized pieces must give the digest of feeding them at once: the
    /// catalog hashes 1 MiB chunks, block boundaries fall anywhere.
    @Test func streamingMatchesOneShot() {
        let bytes = patternBytes(5000)
        var md5 = MD5Digest()
        var sha = SHA512Digest()
        var offset = 0
        for size in [1, 63, 64, 65, 127, 128, 129, 7, 1000, 3] + Array(repeating: 250, count: 20) {
            let end = min(offset + size, bytes.count)
            bytes[offset..<end].withUnsafeBytes {
                md5.update($0); sha.update($0)
            }
            offset = end
        }
        bytes[offset...].withUnsafeBytes {
            md5.update($0); sha.update($0)
        }
        #expect(md5.finalize() == Self.md5(bytes))
        #expect(sha.finalize() == Self.sha512(bytes))
    }
}

/// Deterministic bytes that are not all alike (a linear congruential sequence).
func patternBytes(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

/// The hashers are values: a copy taken midway hashes on by itself (the catalog keeps hashers in structs).
@Suite struct HasherValueTests {
    @Test func aCopyHashesOnIndependently() {
        var first = SHA512Digest()
        first.update(Array("abc".utf8))
        var second = first
        second.update(Array("def".utf8))
        #expect(first.finalize() == SHA512Digest.hex(Array("abc".utf8)))
        #expect(second.finalize() == SHA512Digest.hex(Array("abcdef".utf8)))
    }
}
