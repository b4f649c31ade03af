// Streaming hashers: image checksums (Glance's `os_hash_algo`/`os_hash_value` and the legacy md5 `checksum`) in
// the catalog and the deploy path, and `DomainSpec.fingerprint`. Written out here because Berth takes no crypto
// dependency (its C libraries are librabbitmq, libvirt and json-c); MD5 only for Glance's legacy field, which is
// not a security check. The module is compiled optimised even in debug builds: every byte of every image goes
// through one of these.

/// The block-buffering common to the Merkle–Damgård hashers: whole blocks go straight from the caller's buffer to
/// `compress`, only a partial block at either end is copied into `pending`.
protocol DigestEngine {
    static var blockBytes: Int { get }
    var pending: [UInt8] { get set }
    var totalBytes: UInt64 { get set }
    /// Hashes `count` consecutive blocks starting at `blocks`.
    mutating func compress(_ blocks: UnsafeRawPointer, count: Int)
}

extension DigestEngine {
    mutating func absorb(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        totalBytes &+= UInt64(bytes.count)
        var offset = 0
        if !pending.isEmpty {
            let take = min(Self.blockBytes - pending.count, bytes.count)
            pending.append(contentsOf: UnsafeRawBufferPointer(start: base, count: take))
            offset = take
            guard pending.count == Self.blockBytes else { return }
            // A copy (a retain, no allocation) so `compress` may mutate self while the block is read.
            let block = pending
            block.withUnsafeBytes { compress($0.baseAddress!, count: 1) }
            pending.removeAll(keepingCapacity: true)
        }
        let blocks = (bytes.count - offset) / Self.blockBytes
        if blocks > 0 {
            compress(base + offset, count: blocks)
            offset += blocks * Self.blockBytes
        }
        if offset < bytes.count {
            pending.append(contentsOf: UnsafeRawBufferPointer(start: base + offset, count: bytes.count - offset))
        }
    }

    /// Appends the 0x80 marker, zeros and the bit length (`lengthBytes` wide, big- or little-endian) so that the
    /// message ends on a block boundary.
    mutating func pad(lengthBytes: Int, bigEndian: Bool) {
        let bitLength = totalBytes &* 8
        var tail: [UInt8] = [0x80]
        let used = (pending.count + 1) % Self.blockBytes
        let zeros = (Self.blockBytes * 2 - lengthBytes - used) % Self.blockBytes
        tail += [UInt8](repeating: 0, count: zeros + lengthBytes - 8)
        for index in 0..<8 {
            let shift = bigEndian ? UInt64(56 - 8 * index) : UInt64(8 * index)
            tail.append(UInt8(truncatingIfNeeded: bitLength >> shift))
        }
        let saved = totalBytes
        tail.withUnsafeBytes { absorb($0) }
        totalBytes = saved
    }
}

enum DigestHex {
    private static let digits = Array("0123456789abcdef".utf8)

    static func string(_ bytes: [UInt8]) -> String {
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

// MARK: - MD5

/// MD5 (RFC 1321), streaming. Only for Glance's legacy `checksum`; not a security check.
public struct MD5Digest: Sendable, DigestEngine {
    static let blockBytes = 64
    var pending: [UInt8] = []
    var totalBytes: UInt64 = 0
    private var a: UInt32 = 0x6745_2301
    private var b: UInt32 = 0xefcd_ab89
    private var c: UInt32 = 0x98ba_dcfe
    private var d: UInt32 = 0x1032_5476

    public init() { pending.reserveCapacity(Self.blockBytes) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { absorb(bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { absorb($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String {
        pad(lengthBytes: 8, bigEndian: false)
        var out: [UInt8] = []
        for word in [a, b, c, d] {
            for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: word >> UInt32(shift))) }
        }
        return DigestHex.string(out)
    }

    // The 64 steps are written out: a table-driven loop with a per-step switch runs at about half the speed.
    @inline(__always)
    private static func step(
        _ a: inout UInt32, _ b: UInt32, _ mixed: UInt32, _ word: UInt32, _ constant: UInt32, _ shift: UInt32
    ) {
        let sum = a &+ mixed &+ word &+ constant
        a = b &+ ((sum << shift) | (sum >> (32 - shift)))
    }

    mutating func compress(_ blocks: UnsafeRawPointer, count: Int) {
        var (a, b, c, d) = (self.a, self.b, self.c, self.d)
        for index in 0..<count {
            let p = blocks + index * 64
            @inline(__always) func w(_ i: Int) -> UInt32 {
                UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
            }
            let (sa, sb, sc, sd) = (a, b, c, d)
            @inline(__always) func f(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { z ^ (x & (y ^ z)) }
            @inline(__always) func g(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { y ^ (z & (x ^ y)) }
            @inline(__always) func h(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { x ^ y ^ z }
            @inline(__always) func i(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { y ^ (x | ~z) }
            Self.step(&a, b, f(b, c, d), w(0), 0xd76a_a478, 7)
            Self.step(&d, a, f(a, b, c), w(1), 0xe8c7_b756, 12)
            Self.step(&c, d, f(d, a, b), w(2), 0x2420_70db, 17)
            Self.step(&b, c, f(c, d, a), w(3), 0xc1bd_ceee, 22)
            Self.step(&a, b, f(b, c, d), w(4), 0xf57c_0faf, 7)
            Self.step(&d, a, f(a, b, c), w(5), 0x4787_c62a, 12)
            Self.step(&c, d, f(d, a, b), w(6), 0xa830_4613, 17)
            Self.step(&b, c, f(c, d, a), w(7), 0xfd46_9501, 22)
            Self.step(&a, b, f(b, c, d), w(8), 0x6980_98d8, 7)
            Self.step(&d, a, f(a, b, c), w(9), 0x8b44_f7af, 12)
            Self.step(&c, d, f(d, a, b), w(10), 0xffff_5bb1, 17)
            Self.step(&b, c, f(c, d, a), w(11), 0x895c_d7be, 22)
            Self.step(&a, b, f(b, c, d), w(12), 0x6b90_1122, 7)
            Self.step(&d, a, f(a, b, c), w(13), 0xfd98_7193, 12)
            Self.step(&c, d, f(d, a, b), w(14), 0xa679_438e, 17)
            Self.step(&b, c, f(c, d, a), w(15), 0x49b4_0821, 22)

            Self.step(&a, b, g(b, c, d), w(1), 0xf61e_2562, 5)
            Self.step(&d, a, g(a, b, c), w(6), 0xc040_b340, 9)
            Self.step(&c, d, g(d, a, b), w(11), 0x265e_5a51, 14)
            Self.step(&b, c, g(c, d, a), w(0), 0xe9b6_c7aa, 20)
            Self.step(&a, b, g(b, c, d), w(5), 0xd62f_105d, 5)
            Self.step(&d, a, g(a, b, c), w(10), 0x0244_1453, 9)
            Self.step(&c, d, g(d, a, b), w(15), 0xd8a1_e681, 14)
            Self.step(&b, c, g(c, d, a), w(4), 0xe7d3_fbc8, 20)
            Self.step(&a, b, g(b, c, d), w(9), 0x21e1_cde6, 5)
            Self.step(&d, a, g(a, b, c), w(14), 0xc337_07d6, 9)
            Self.step(&c, d, g(d, a, b), w(3), 0xf4d5_0d87, 14)
            Self.step(&b, c, g(c, d, a), w(8), 0x455a_14ed, 20)
            Self.step(&a, b, g(b, c, d), w(13), 0xa9e3_e905, 5)
            Self.step(&d, a, g(a, b, c), w(2), 0xfcef_a3f8, 9)
            Self.step(&c, d, g(d, a, b), w(7), 0x676f_02d9, 14)
            Self.step(&b, c, g(c, d, a), w(12), 0x8d2a_4c8a, 20)

            Self.step(&a, b, h(b, c, d), w(5), 0xfffa_3942, 4)
            Self.step(&d, a, h(a, b, c), w(8), 0x8771_f681, 11)
            Self.step(&c, d, h(d, a, b), w(11), 0x6d9d_6122, 16)
            Self.step(&b, c, h(c, d, a), w(14), 0xfde5_380c, 23)
            Self.step(&a, b, h(b, c, d), w(1), 0xa4be_ea44, 4)
            Self.step(&d, a, h(a, b, c), w(4), 0x4bde_cfa9, 11)
            Self.step(&c, d, h(d, a, b), w(7), 0xf6bb_4b60, 16)
            Self.step(&b, c, h(c, d, a), w(10), 0xbebf_bc70, 23)
            Self.step(&a, b, h(b, c, d), w(13), 0x289b_7ec6, 4)
            Self.step(&d, a, h(a, b, c), w(0), 0xeaa1_27fa, 11)
            Self.step(&c, d, h(d, a, b), w(3), 0xd4ef_3085, 16)
            Self.step(&b, c, h(c, d, a), w(6), 0x0488_1d05, 23)
            Self.step(&a, b, h(b, c, d), w(9), 0xd9d4_d039, 4)
            Self.step(&d, a, h(a, b, c), w(12), 0xe6db_99e5, 11)
            Self.step(&c, d, h(d, a, b), w(15), 0x1fa2_7cf8, 16)
            Self.step(&b, c, h(c, d, a), w(2), 0xc4ac_5665, 23)

            Self.step(&a, b, i(b, c, d), w(0), 0xf429_2244, 6)
            Self.step(&d, a, i(a, b, c), w(7), 0x432a_ff97, 10)
            Self.step(&c, d, i(d, a, b), w(14), 0xab94_23a7, 15)
            Self.step(&b, c, i(c, d, a), w(5), 0xfc93_a039, 21)
            Self.step(&a, b, i(b, c, d), w(12), 0x655b_59c3, 6)
            Self.step(&d, a, i(a, b, c), w(3), 0x8f0c_cc92, 10)
            Self.step(&c, d, i(d, a, b), w(10), 0xffef_f47d, 15)
            Self.step(&b, c, i(c, d, a), w(1), 0x8584_5dd1, 21)
            Self.step(&a, b, i(b, c, d), w(8), 0x6fa8_7e4f, 6)
            Self.step(&d, a, i(a, b, c), w(15), 0xfe2c_e6e0, 10)
            Self.step(&c, d, i(d, a, b), w(6), 0xa301_4314, 15)
            Self.step(&b, c, i(c, d, a), w(13), 0x4e08_11a1, 21)
            Self.step(&a, b, i(b, c, d), w(4), 0xf753_7e82, 6)
            Self.step(&d, a, i(a, b, c), w(11), 0xbd3a_f235, 10)
            Self.step(&c, d, i(d, a, b), w(2), 0x2ad7_d2bb, 15)
            Self.step(&b, c, i(c, d, a), w(9), 0xeb86_d391, 21)

            a &+= sa
            b &+= sb
            c &+= sc
            d &+= sd
        }
        (self.a, self.b, self.c, self.d) = (a, b, c, d)
    }
}

// MARK: - SHA-256

/// SHA-256 (FIPS 180-4), streaming.
public struct SHA256Digest: Sendable, DigestEngine {
    static let blockBytes = 64
    var pending: [UInt8] = []
    var totalBytes: UInt64 = 0
    private var state: [UInt32] = [
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
    ]

    public init() { pending.reserveCapacity(Self.blockBytes) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { absorb(bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { absorb($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String {
        pad(lengthBytes: 8, bigEndian: true)
        var out: [UInt8] = []
        for word in state {
            for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: word >> shift)) }
        }
        return DigestHex.string(out)
    }

    private static let constants: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    @inline(__always)
    private static func rotr(_ value: UInt32, _ count: UInt32) -> UInt32 { (value >> count) | (value << (32 - count)) }

    /// One round: only `d` and `h` change; the caller rotates which variable plays which role.
    @inline(__always)
    private static func round(
        _ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32, _ e: UInt32, _ f: UInt32, _ g: UInt32,
        _ h: inout UInt32, _ constantPlusWord: UInt32
    ) {
        let t1 = h &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ (g ^ (e & (f ^ g))) &+ constantPlusWord
        let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) | (c & (a | b)))
        d &+= t1
        h = t1 &+ t2
    }

    mutating func compress(_ blocks: UnsafeRawPointer, count: Int) {
        // One stack schedule and one hoisted table pointer for all blocks of the call: per-block arrays or
        // bounds-checked table reads would cost more than the rounds themselves.
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            Self.constants.withUnsafeBufferPointer { k in
                state.withUnsafeMutableBufferPointer { s in
                    var (h0, h1, h2, h3, h4, h5, h6, h7) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
                    for index in 0..<count {
                        let p = blocks + index * 64
                        for t in 0..<16 {
                            w[t] = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: t * 4, as: UInt32.self))
                        }
                        for t in 16..<64 {
                            let x = w[t - 15]
                            let y = w[t - 2]
                            let s0 = Self.rotr(x, 7) ^ Self.rotr(x, 18) ^ (x >> 3)
                            let s1 = Self.rotr(y, 17) ^ Self.rotr(y, 19) ^ (y >> 10)
                            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
                        }
                        var (a, b, c, d, e, f, g, h) = (h0, h1, h2, h3, h4, h5, h6, h7)
                        // Eight rounds per pass with the roles of the variables rotated instead of moving the
                        // values: a quarter faster than the textbook loop (measured, -O).
                        for t in stride(from: 0, to: 64, by: 8) {
                            Self.round(a, b, c, &d, e, f, g, &h, k[t] &+ w[t])
                            Self.round(h, a, b, &c, d, e, f, &g, k[t + 1] &+ w[t + 1])
                            Self.round(g, h, a, &b, c, d, e, &f, k[t + 2] &+ w[t + 2])
                            Self.round(f, g, h, &a, b, c, d, &e, k[t + 3] &+ w[t + 3])
                            Self.round(e, f, g, &h, a, b, c, &d, k[t + 4] &+ w[t + 4])
                            Self.round(d, e, f, &g, h, a, b, &c, k[t + 5] &+ w[t + 5])
                            Self.round(c, d, e, &f, g, h, a, &b, k[t + 6] &+ w[t + 6])
                            Self.round(b, c, d, &e, f, g, h, &a, k[t + 7] &+ w[t + 7])
                        }
                        h0 &+= a
                        h1 &+= b
                        h2 &+= c
                        h3 &+= d
                        h4 &+= e
                        h5 &+= f
                        h6 &+= g
                        h7 &+= h
                    }
                    (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]) = (h0, h1, h2, h3, h4, h5, h6, h7)
                }
            }
        }
    }
}

// MARK: - SHA-512 / SHA-384

/// SHA-512 (FIPS 180-4), streaming: Glance's default `os_hash_algo`. `SHA512Digest(truncatedTo384: true)` is
/// SHA-384, which is the same function with other initial values and a shorter output.
public struct SHA512Digest: Sendable, DigestEngine {
    static let blockBytes = 128
    var pending: [UInt8] = []
    var totalBytes: UInt64 = 0
    private var state: [UInt64]
    private let outputWords: Int

    public init() { self.init(truncatedTo384: false) }

    public init(truncatedTo384: Bool) {
        if truncatedTo384 {
            state = [
                0xcbbb_9d5d_c105_9ed8, 0x629a_292a_367c_d507, 0x9159_015a_3070_dd17, 0x152f_ecd8_f70e_5939,
                0x6733_2667_ffc0_0b31, 0x8eb4_4a87_6858_1511, 0xdb0c_2e0d_64f9_8fa7, 0x47b5_481d_befa_4fa4,
            ]
            outputWords = 6
        } else {
            state = [
                0x6a09_e667_f3bc_c908, 0xbb67_ae85_84ca_a73b, 0x3c6e_f372_fe94_f82b, 0xa54f_f53a_5f1d_36f1,
                0x510e_527f_ade6_82d1, 0x9b05_688c_2b3e_6c1f, 0x1f83_d9ab_fb41_bd6b, 0x5be0_cd19_137e_2179,
            ]
            outputWords = 8
        }
        pending.reserveCapacity(Self.blockBytes)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { absorb(bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { absorb($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String {
        // Images are far below 2^64 bits, so the high half of the 128-bit length is zero.
        pad(lengthBytes: 16, bigEndian: true)
        var out: [UInt8] = []
        for word in state.prefix(outputWords) {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: word >> shift)) }
        }
        return DigestHex.string(out)
    }

    private static let constants: [UInt64] = [
        0x428a_2f98_d728_ae22, 0x7137_4491_23ef_65cd, 0xb5c0_fbcf_ec4d_3b2f, 0xe9b5_dba5_8189_dbbc,
        0x3956_c25b_f348_b538, 0x59f1_11f1_b605_d019, 0x923f_82a4_af19_4f9b, 0xab1c_5ed5_da6d_8118,
        0xd807_aa98_a303_0242, 0x1283_5b01_4570_6fbe, 0x2431_85be_4ee4_b28c, 0x550c_7dc3_d5ff_b4e2,
        0x72be_5d74_f27b_896f, 0x80de_b1fe_3b16_96b1, 0x9bdc_06a7_25c7_1235, 0xc19b_f174_cf69_2694,
        0xe49b_69c1_9ef1_4ad2, 0xefbe_4786_384f_25e3, 0x0fc1_9dc6_8b8c_d5b5, 0x240c_a1cc_77ac_9c65,
        0x2de9_2c6f_592b_0275, 0x4a74_84aa_6ea6_e483, 0x5cb0_a9dc_bd41_fbd4, 0x76f9_88da_8311_53b5,
        0x983e_5152_ee66_dfab, 0xa831_c66d_2db4_3210, 0xb003_27c8_98fb_213f, 0xbf59_7fc7_beef_0ee4,
        0xc6e0_0bf3_3da8_8fc2, 0xd5a7_9147_930a_a725, 0x06ca_6351_e003_826f, 0x1429_2967_0a0e_6e70,
        0x27b7_0a85_46d2_2ffc, 0x2e1b_2138_5c26_c926, 0x4d2c_6dfc_5ac4_2aed, 0x5338_0d13_9d95_b3df,
        0x650a_7354_8baf_63de, 0x766a_0abb_3c77_b2a8, 0x81c2_c92e_47ed_aee6, 0x9272_2c85_1482_353b,
        0xa2bf_e8a1_4cf1_0364, 0xa81a_664b_bc42_3001, 0xc24b_8b70_d0f8_9791, 0xc76c_51a3_0654_be30,
        0xd192_e819_d6ef_5218, 0xd699_0624_5565_a910, 0xf40e_3585_5771_202a, 0x106a_a070_32bb_d1b8,
        0x19a4_c116_b8d2_d0c8, 0x1e37_6c08_5141_ab53, 0x2748_774c_df8e_eb99, 0x34b0_bcb5_e19b_48a8,
        0x391c_0cb3_c5c9_5a63, 0x4ed8_aa4a_e341_8acb, 0x5b9c_ca4f_7763_e373, 0x682e_6ff3_d6b2_b8a3,
        0x748f_82ee_5def_b2fc, 0x78a5_636f_4317_2f60, 0x84c8_7814_a1f0_ab72, 0x8cc7_0208_1a64_39ec,
        0x90be_fffa_2363_1e28, 0xa450_6ceb_de82_bde9, 0xbef9_a3f7_b2c6_7915, 0xc671_78f2_e372_532b,
        0xca27_3ece_ea26_619c, 0xd186_b8c7_21c0_c207, 0xeada_7dd6_cde0_eb1e, 0xf57d_4f7f_ee6e_d178,
        0x06f0_67aa_7217_6fba, 0x0a63_7dc5_a2c8_98a6, 0x113f_9804_bef9_0dae, 0x1b71_0b35_131c_471b,
        0x28db_77f5_2304_7d84, 0x32ca_ab7b_40c7_2493, 0x3c9e_be0a_15c9_bebc, 0x431d_67c4_9c10_0d4c,
        0x4cc5_d4be_cb3e_42b6, 0x597f_299c_fc65_7e2a, 0x5fcb_6fab_3ad6_faec, 0x6c44_198c_4a47_5817,
    ]

    @inline(__always)
    private static func rotr(_ value: UInt64, _ count: UInt64) -> UInt64 { (value >> count) | (value << (64 - count)) }

    /// One round: only `d` and `h` change; the caller rotates which variable plays which role.
    @inline(__always)
    private static func round(
        _ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: inout UInt64, _ e: UInt64, _ f: UInt64, _ g: UInt64,
        _ h: inout UInt64, _ constantPlusWord: UInt64
    ) {
        let t1 = h &+ (rotr(e, 14) ^ rotr(e, 18) ^ rotr(e, 41)) &+ (g ^ (e & (f ^ g))) &+ constantPlusWord
        let t2 = (rotr(a, 28) ^ rotr(a, 34) ^ rotr(a, 39)) &+ ((a & b) | (c & (a | b)))
        d &+= t1
        h = t1 &+ t2
    }

    mutating func compress(_ blocks: UnsafeRawPointer, count: Int) {
        // One stack schedule and one hoisted table pointer for all blocks of the call (see SHA256Digest).
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 80) { w in
            Self.constants.withUnsafeBufferPointer { k in
                state.withUnsafeMutableBufferPointer { s in
                    var (h0, h1, h2, h3, h4, h5, h6, h7) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
                    for index in 0..<count {
                        let p = blocks + index * 128
                        for t in 0..<16 {
                            w[t] = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: t * 8, as: UInt64.self))
                        }
                        for t in 16..<80 {
                            let x = w[t - 15]
                            let y = w[t - 2]
                            let s0 = Self.rotr(x, 1) ^ Self.rotr(x, 8) ^ (x >> 7)
                            let s1 = Self.rotr(y, 19) ^ Self.rotr(y, 61) ^ (y >> 6)
                            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
                        }
                        var (a, b, c, d, e, f, g, h) = (h0, h1, h2, h3, h4, h5, h6, h7)
                        // Eight rounds per pass with the roles rotated (see SHA256Digest).
                        for t in stride(from: 0, to: 80, by: 8) {
                            Self.round(a, b, c, &d, e, f, g, &h, k[t] &+ w[t])
                            Self.round(h, a, b, &c, d, e, f, &g, k[t + 1] &+ w[t + 1])
                            Self.round(g, h, a, &b, c, d, e, &f, k[t + 2] &+ w[t + 2])
                            Self.round(f, g, h, &a, b, c, d, &e, k[t + 3] &+ w[t + 3])
                            Self.round(e, f, g, &h, a, b, c, &d, k[t + 4] &+ w[t + 4])
                            Self.round(d, e, f, &g, h, a, b, &c, k[t + 5] &+ w[t + 5])
                            Self.round(c, d, e, &f, g, h, a, &b, k[t + 6] &+ w[t + 6])
                            Self.round(b, c, d, &e, f, g, h, &a, k[t + 7] &+ w[t + 7])
                        }
                        h0 &+= a
                        h1 &+= b
                        h2 &+= c
                        h3 &+= d
                        h4 &+= e
                        h5 &+= f
                        h6 &+= g
                        h7 &+= h
                    }
                    (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]) = (h0, h1, h2, h3, h4, h5, h6, h7)
                }
            }
        }
    }
}

// MARK: - One-shot

extension MD5Digest {
    /// The lowercase hex MD5 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalize()
    }
}

extension SHA256Digest {
    /// The lowercase hex SHA-256 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalize()
    }
}

extension SHA512Digest {
    /// The lowercase hex SHA-512 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalize()
    }
}
