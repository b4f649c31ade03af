/// MD5 (RFC 1321), streaming. Only for Glance's legacy `checksum` field, which clients still compare;
/// it is not a security check (`SHA512` is). Pure Swift because the package takes no crypto dependency.
struct MD5: Sendable {
    static let digestBytes = 16
    private static let blockBytes = 64

    private var state: (UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476)
    private var pending: [UInt8] = []
    private var totalBytes: UInt64 = 0

    init() { pending.reserveCapacity(Self.blockBytes) }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        totalBytes &+= UInt64(bytes.count)
        var rest = bytes[...]
        if !pending.isEmpty {
            let take = min(Self.blockBytes - pending.count, rest.count)
            pending.append(contentsOf: rest.prefix(take))
            rest = rest.dropFirst(take)
            guard pending.count == Self.blockBytes else { return }
            pending.withUnsafeBytes { compress($0.baseAddress!) }
            pending.removeAll(keepingCapacity: true)
        }
        let whole = rest.count / Self.blockBytes * Self.blockBytes
        if whole > 0, let base = bytes.baseAddress {
            var offset = rest.startIndex
            while offset < rest.startIndex + whole {
                compress(base + offset)
                offset += Self.blockBytes
            }
        }
        pending.append(contentsOf: rest.dropFirst(whole))
    }

    mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest; the hasher is spent afterwards.
    mutating func finalize() -> [UInt8] {
        let bitLength = totalBytes &* 8
        var tail: [UInt8] = [0x80]
        let used = (pending.count + 1) % Self.blockBytes
        tail += [UInt8](repeating: 0, count: (Self.blockBytes + 56 - used) % Self.blockBytes)
        for shift in stride(from: 0, to: 64, by: 8) { tail.append(UInt8(truncatingIfNeeded: bitLength >> shift)) }
        let savedTotal = totalBytes
        tail.withUnsafeBytes { update($0) }
        totalBytes = savedTotal
        var digest: [UInt8] = []
        for word in [state.0, state.1, state.2, state.3] {
            for shift in stride(from: 0, to: 32, by: 8) { digest.append(UInt8(truncatingIfNeeded: word >> shift)) }
        }
        return digest
    }

    private static let shifts: [UInt32] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
        5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
        6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ]

    private static let constants: [UInt32] = [
        0xd76a_a478, 0xe8c7_b756, 0x2420_70db, 0xc1bd_ceee, 0xf57c_0faf, 0x4787_c62a, 0xa830_4613, 0xfd46_9501,
        0x6980_98d8, 0x8b44_f7af, 0xffff_5bb1, 0x895c_d7be, 0x6b90_1122, 0xfd98_7193, 0xa679_438e, 0x49b4_0821,
        0xf61e_2562, 0xc040_b340, 0x265e_5a51, 0xe9b6_c7aa, 0xd62f_105d, 0x0244_1453, 0xd8a1_e681, 0xe7d3_fbc8,
        0x21e1_cde6, 0xc337_07d6, 0xf4d5_0d87, 0x455a_14ed, 0xa9e3_e905, 0xfcef_a3f8, 0x676f_02d9, 0x8d2a_4c8a,
        0xfffa_3942, 0x8771_f681, 0x6d9d_6122, 0xfde5_380c, 0xa4be_ea44, 0x4bde_cfa9, 0xf6bb_4b60, 0xbebf_bc70,
        0x289b_7ec6, 0xeaa1_27fa, 0xd4ef_3085, 0x0488_1d05, 0xd9d4_d039, 0xe6db_99e5, 0x1fa2_7cf8, 0xc4ac_5665,
        0xf429_2244, 0x432a_ff97, 0xab94_23a7, 0xfc93_a039, 0x655b_59c3, 0x8f0c_cc92, 0xffef_f47d, 0x8584_5dd1,
        0x6fa8_7e4f, 0xfe2c_e6e0, 0xa301_4314, 0x4e08_11a1, 0xf753_7e82, 0xbd3a_f235, 0x2ad7_d2bb, 0xeb86_d391,
    ]

    private mutating func compress(_ block: UnsafeRawPointer) {
        // Stack buffers and unchecked table pointers, one loop per round function: this runs once per 64 bytes
        // of every image, and the obvious form (an Array per block, a switch per step) is several times slower.
        state = withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 16) { words in
            for index in 0..<16 {
                words[index] = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
            }
            return Self.constants.withUnsafeBufferPointer { constants in
                Self.shifts.withUnsafeBufferPointer { shifts in
                    var (a, b, c, d) = state
                    @inline(__always)
                    func step(_ mixed: UInt32, _ round: Int, _ word: Int) {
                        let sum = mixed &+ a &+ constants[round] &+ words[word]
                        let shift = shifts[round]
                        a = d
                        d = c
                        c = b
                        b = b &+ ((sum << shift) | (sum >> (32 - shift)))
                    }
                    for round in 0..<16 { step((b & c) | (~b & d), round, round) }
                    for round in 16..<32 { step((d & b) | (~d & c), round, (5 * round + 1) & 15) }
                    for round in 32..<48 { step(b ^ c ^ d, round, (3 * round + 5) & 15) }
                    for round in 48..<64 { step(c ^ (b | ~d), round, (7 * round) & 15) }
                    return (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d)
                }
            }
        }
    }
}

/// Lowercase hex, the form Glance stores digests in.
func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}
