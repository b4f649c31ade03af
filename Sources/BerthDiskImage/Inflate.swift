// A raw DEFLATE (RFC 1951) decoder. qcow2 compressed clusters are raw deflate streams (no zlib header, no
// checksum); the package takes no C library, so zlib is not available and this is written out in Swift.

/// Why a DEFLATE stream could not be decoded.
public struct InflateError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What `InflateDecoder.decompress` produced.
public struct InflateResult: Sendable, Equatable {
    /// Bytes written to the output buffer.
    public var bytesWritten: Int
    /// True when the final block ended; false when the output buffer filled up first (the rest of the stream is
    /// left undecoded, which is what qemu accepts for a compressed cluster: the cluster is complete).
    public var streamEnded: Bool
}

/// A reusable DEFLATE decoder. Its tables are allocated once, so decoding thousands of clusters allocates
/// nothing per cluster. Not thread-safe: use one per thread.
public final class InflateDecoder {
    private static let fastBits = 10
    private static let fastMask: UInt64 = (1 << 10) - 1

    // All tables live in one allocation, addressed by these offsets (in UInt16 units).
    private static let litFast = 0  // 1024 entries: symbol << 4 | code length, 0 = not in the fast table
    private static let distFast = 1024  // 1024
    private static let litCounts = 2048  // 16
    private static let litSymbols = 2064  // 288
    private static let distCounts = 2352  // 16
    private static let distSymbols = 2368  // 32
    private static let lenBase = 2400  // 29
    private static let lenExtra = 2432  // 29
    private static let distBase = 2464  // 30
    private static let distExtra = 2496  // 30
    private static let tableWords = 2528

    private let tables: UnsafeMutablePointer<UInt16>
    /// Code lengths of the current block (up to 288 + 30), then the 19 lengths of the code-length code at 320.
    private let lengths: UnsafeMutablePointer<UInt8>
    private var fixedLoaded = false

    public init() {
        tables = .allocate(capacity: Self.tableWords)
        tables.initialize(repeating: 0, count: Self.tableWords)
        lengths = .allocate(capacity: 344)
        lengths.initialize(repeating: 0, count: 344)
        let lengthBase: [UInt16] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195,
            227, 258,
        ]
        let lengthExtra: [UInt16] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ]
        let distanceBase: [UInt16] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
            4097, 6145, 8193, 12289, 16385, 24577,
        ]
        let distanceExtra: [UInt16] = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
        ]
        for index in 0..<29 {
            tables[Self.lenBase + index] = lengthBase[index]
            tables[Self.lenExtra + index] = lengthExtra[index]
        }
        for index in 0..<30 {
            tables[Self.distBase + index] = distanceBase[index]
            tables[Self.distExtra + index] = distanceExtra[index]
        }
    }

    deinit {
        tables.deallocate()
        lengths.deallocate()
    }

    /// Convenience for tests and small inputs: decodes a whole stream of at most `limit` output bytes.
    public func decompress(_ input: [UInt8], limit: Int) throws(InflateError) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: limit)
        // The closures of withUnsafeBytes are untyped-throwing, so the typed error travels in a Result.
        var outcome: Result<InflateResult, InflateError> = .failure(InflateError("not decoded"))
        input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { target in
                outcome = Result { () throws(InflateError) in try decompress(source, into: target) }
            }
        }
        let result = try outcome.get()
        guard result.streamEnded else {
            throw InflateError("the deflate stream produces more than \(limit) bytes")
        }
        output.removeLast(limit - result.bytesWritten)
        return output
    }

    /// Decodes `input` into `output` until the final block ends or `output` is full.
    public func decompress(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(InflateError) -> InflateResult {
        guard let outBase = output.baseAddress?.assumingMemoryBound(to: UInt8.self), output.count > 0 else {
            return InflateResult(bytesWritten: 0, streamEnded: false)
        }
        var reader = InflateBitReader(input)
        var written = 0
        let capacity = output.count
        while true {
            reader.refill()
            let final = reader.take(1) == 1
            let kind = reader.take(2)
            switch kind {
            case 0:
                let full = try storedBlock(&reader, outBase, capacity, &written)
                if full { return InflateResult(bytesWritten: written, streamEnded: false) }
            case 1, 2:
                if kind == 1 {
                    loadFixedTables()
                } else {
                    fixedLoaded = false
                    try loadDynamicTables(&reader)
                }
                let full = try huffmanBlock(&reader, outBase, capacity, &written)
                try reader.checkOverrun()
                if full { return InflateResult(bytesWritten: written, streamEnded: false) }
            default:
                throw InflateError("invalid block type 3")
            }
            try reader.checkOverrun()
            if final { return InflateResult(bytesWritten: written, streamEnded: true) }
            if written == capacity {
                // More blocks follow but the cluster is complete: nothing further can be emitted.
                return InflateResult(bytesWritten: written, streamEnded: false)
            }
        }
    }

    // MARK: - Blocks

    /// Returns true when the output filled before the block's data ended.
    private func storedBlock(
        _ reader: inout InflateBitReader, _ out: UnsafeMutablePointer<UInt8>, _ capacity: Int, _ written: inout Int
    ) throws(InflateError) -> Bool {
        reader.alignToByte()
        reader.refill()
        let length = Int(reader.take(16))
        let complement = Int(reader.take(16))
        guard length == (~complement & 0xffff) else {
            throw InflateError("stored block length \(length) does not match its complement")
        }
        try reader.checkOverrun()
        let fits = min(length, capacity - written)
        try reader.copyBytes(to: out + written, count: fits)
        written += fits
        return fits < length
    }

    /// Returns true when the output filled before the block's end-of-block code.
    private func huffmanBlock(
        _ reader: inout InflateBitReader, _ out: UnsafeMutablePointer<UInt8>, _ capacity: Int, _ written: inout Int
    ) throws(InflateError) -> Bool {
        let t = tables
        var position = written
        defer { written = position }
        while true {
            reader.refill()
            var symbol = try decode(
                &reader, fast: t + Self.litFast, counts: t + Self.litCounts,
                symbols: t + Self.litSymbols)
            if symbol < 256 {
                guard position < capacity else { return true }
                out[position] = UInt8(truncatingIfNeeded: symbol)
                position += 1
                continue
            }
            if symbol == 256 {
                return false
            }
            symbol -= 257
            guard symbol < 29 else { throw InflateError("invalid length symbol \(symbol + 257)") }
            let length = Int(t[Self.lenBase + symbol]) + Int(reader.take(Int(t[Self.lenExtra + symbol])))
            let distanceSymbol = try decode(
                &reader, fast: t + Self.distFast, counts: t + Self.distCounts,
                symbols: t + Self.distSymbols)
            guard distanceSymbol < 30 else { throw InflateError("invalid distance symbol \(distanceSymbol)") }
            let distance =
                Int(t[Self.distBase + distanceSymbol]) + Int(reader.take(Int(t[Self.distExtra + distanceSymbol])))
            guard distance <= position else {
                throw InflateError("distance \(distance) reaches before the start of the output")
            }
            let count = min(length, capacity - position)
            var source = out + position - distance
            var target = out + position
            if distance >= 8 && position + count + 8 <= capacity {
                // Eight bytes at a time; overlapping is fine because each load reads bytes already written.
                var left = count
                while left > 0 {
                    let word = UnsafeRawPointer(source).loadUnaligned(as: UInt64.self)
                    UnsafeMutableRawPointer(target).storeBytes(of: word, as: UInt64.self)
                    source += 8
                    target += 8
                    left -= 8
                }
            } else if distance == 1 {
                target.update(repeating: source.pointee, count: count)
            } else {
                for index in 0..<count { target[index] = source[index] }
            }
            position += count
            if count < length { return true }
        }
    }

    // MARK: - Huffman codes

    @inline(__always)
    private func decode(
        _ reader: inout InflateBitReader, fast: UnsafeMutablePointer<UInt16>, counts: UnsafeMutablePointer<UInt16>,
        symbols: UnsafeMutablePointer<UInt16>
    ) throws(InflateError) -> Int {
        let entry = fast[Int(reader.buffer & Self.fastMask)]
        if entry != 0 {
            reader.drop(Int(entry & 15))
            return Int(entry >> 4)
        }
        return try slowDecode(&reader, counts: counts, symbols: symbols)
    }

    /// Canonical decoding one bit at a time (as in zlib's puff.c), for codes longer than the fast table.
    private func slowDecode(
        _ reader: inout InflateBitReader, counts: UnsafeMutablePointer<UInt16>, symbols: UnsafeMutablePointer<UInt16>
    ) throws(InflateError) -> Int {
        var bits = reader.buffer
        var code = 0
        var first = 0
        var index = 0
        for length in 1...15 {
            code |= Int(bits & 1)
            bits >>= 1
            let count = Int(counts[length])
            if code - first < count {
                reader.drop(length)
                return Int(symbols[index + code - first])
            }
            index += count
            first = (first + count) << 1
            code <<= 1
        }
        throw InflateError("invalid Huffman code")
    }

    /// Builds the canonical code for `count` code lengths. Returns how many codes of the full tree are missing
    /// (0 = complete); throws when the lengths over-subscribe the tree.
    private func build(
        _ codeLengths: UnsafeMutablePointer<UInt8>, count: Int, fast: UnsafeMutablePointer<UInt16>, fastBits: Int,
        counts: UnsafeMutablePointer<UInt16>, symbols: UnsafeMutablePointer<UInt16>
    ) throws(InflateError) -> Int {
        counts.update(repeating: 0, count: 16)
        for symbol in 0..<count { counts[Int(codeLengths[symbol])] += 1 }
        var left = 1
        for length in 1...15 {
            left = (left << 1) - Int(counts[length])
            guard left >= 0 else { throw InflateError("over-subscribed Huffman code lengths") }
        }
        var offsets = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &offsets) { raw in
            let next = raw.bindMemory(to: Int.self)
            next[1] = 0
            for length in 1..<15 { next[length + 1] = next[length] + Int(counts[length]) }
            for symbol in 0..<count {
                let length = Int(codeLengths[symbol])
                if length != 0 {
                    symbols[next[length]] = UInt16(symbol)
                    next[length] += 1
                }
            }
        }
        fast.update(repeating: 0, count: 1 << fastBits)
        var code = 0
        var index = 0
        for length in 1...fastBits {
            for _ in 0..<Int(counts[length]) {
                var reversed = 0
                var value = code
                for _ in 0..<length {
                    reversed = (reversed << 1) | (value & 1)
                    value >>= 1
                }
                let entry = UInt16(truncatingIfNeeded: Int(symbols[index]) << 4 | length)
                var slot = reversed
                while slot < (1 << fastBits) {
                    fast[slot] = entry
                    slot += 1 << length
                }
                code += 1
                index += 1
            }
            code <<= 1
        }
        return left
    }

    private func loadFixedTables() {
        guard !fixedLoaded else { return }
        for symbol in 0..<288 {
            lengths[symbol] = symbol < 144 ? 8 : symbol < 256 ? 9 : symbol < 280 ? 7 : 8
        }
        let t = tables
        // The fixed lengths are a complete code by construction, so neither build can throw.
        _ = try? build(
            lengths, count: 288, fast: t + Self.litFast, fastBits: Self.fastBits,
            counts: t + Self.litCounts, symbols: t + Self.litSymbols)
        for symbol in 0..<30 { lengths[symbol] = 5 }
        _ = try? build(
            lengths, count: 30, fast: t + Self.distFast, fastBits: Self.fastBits,
            counts: t + Self.distCounts, symbols: t + Self.distSymbols)
        fixedLoaded = true
    }

    private static let codeLengthOrder: [Int] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    private func loadDynamicTables(_ reader: inout InflateBitReader) throws(InflateError) {
        reader.refill()
        let literalCount = Int(reader.take(5)) + 257
        let distanceCount = Int(reader.take(5)) + 1
        let codeLengthCount = Int(reader.take(4)) + 4
        guard literalCount <= 286, distanceCount <= 30 else {
            throw InflateError("too many length or distance symbols (\(literalCount), \(distanceCount))")
        }
        // The code-length code's tables use the distance slots: they are rebuilt right after.
        let t = tables
        let scratch = lengths + 320
        scratch.update(repeating: 0, count: 19)
        for index in 0..<codeLengthCount {
            reader.refill()
            scratch[Self.codeLengthOrder[index]] = UInt8(reader.take(3))
        }
        let missing = try build(
            scratch, count: 19, fast: t + Self.distFast, fastBits: 7,
            counts: t + Self.distCounts, symbols: t + Self.distSymbols)
        guard missing == 0 else { throw InflateError("incomplete code-length code") }
        let total = literalCount + distanceCount
        var index = 0
        while index < total {
            reader.refill()
            let entry = t[Self.distFast + Int(reader.buffer & 0x7f)]
            guard entry != 0 else { throw InflateError("invalid code-length code") }
            reader.drop(Int(entry & 15))
            let symbol = Int(entry >> 4)
            if symbol < 16 {
                lengths[index] = UInt8(symbol)
                index += 1
                continue
            }
            var value: UInt8 = 0
            var repeatCount: Int
            switch symbol {
            case 16:
                guard index > 0 else { throw InflateError("repeat of a code length with no previous length") }
                value = lengths[index - 1]
                repeatCount = 3 + Int(reader.take(2))
            case 17:
                repeatCount = 3 + Int(reader.take(3))
            default:
                repeatCount = 11 + Int(reader.take(7))
            }
            guard index + repeatCount <= total else { throw InflateError("code lengths overflow the symbol count") }
            for _ in 0..<repeatCount {
                lengths[index] = value
                index += 1
            }
        }
        try reader.checkOverrun()
        guard lengths[256] != 0 else { throw InflateError("the block has no end-of-block code") }
        let literalMissing = try build(
            lengths, count: literalCount, fast: t + Self.litFast, fastBits: Self.fastBits,
            counts: t + Self.litCounts, symbols: t + Self.litSymbols)
        // As zlib: an incomplete code is only allowed when it is a single code of length 1.
        if literalMissing != 0 && literalCount - Int(t[Self.litCounts]) != 1 {
            throw InflateError("incomplete literal/length code")
        }
        let distanceLengths = lengths + literalCount
        let distanceMissing = try build(
            distanceLengths, count: distanceCount, fast: t + Self.distFast,
            fastBits: Self.fastBits, counts: t + Self.distCounts,
            symbols: t + Self.distSymbols)
        if distanceMissing != 0 && distanceCount - Int(t[Self.distCounts]) != 1 {
            throw InflateError("incomplete distance code")
        }
    }
}

/// LSB-first bit reader over the input. Past the end of the input it supplies zeros and counts them, so the hot
/// loop never branches on the input length; `checkOverrun` turns having used those zeros into an error.
struct InflateBitReader {
    private let base: UnsafePointer<UInt8>?
    private let count: Int
    private var position = 0
    /// Zero bytes supplied past the end of the input.
    private var padding = 0
    private(set) var buffer: UInt64 = 0
    private var bitCount = 0

    init(_ input: UnsafeRawBufferPointer) {
        base = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        count = input.count
    }

    /// Tops the buffer up to at least 56 bits.
    @inline(__always)
    mutating func refill() {
        if position + 8 <= count, let base {
            let word = UInt64(littleEndian: UnsafeRawPointer(base + position).loadUnaligned(as: UInt64.self))
            buffer |= word << UInt64(bitCount)
            let bytes = (63 - bitCount) >> 3
            position += bytes
            bitCount += bytes << 3
            return
        }
        while bitCount <= 56 {
            if position < count, let base {
                buffer |= UInt64(base[position]) << UInt64(bitCount)
                position += 1
            } else {
                padding += 1
            }
            bitCount += 8
        }
    }

    @inline(__always)
    mutating func drop(_ bits: Int) {
        buffer >>= UInt64(bits)
        bitCount -= bits
    }

    /// The next `bits` (at most 32) bits; the caller has refilled.
    @inline(__always)
    mutating func take(_ bits: Int) -> UInt64 {
        let value = buffer & ((1 << UInt64(bits)) - 1)
        drop(bits)
        return value
    }

    mutating func alignToByte() { drop(bitCount & 7) }

    /// Throws when decoding consumed bits past the end of the input.
    func checkOverrun() throws(InflateError) {
        if padding * 8 > bitCount { throw InflateError("the deflate stream is truncated") }
    }

    /// Copies `bytes` whole bytes (after `alignToByte`): first those already in the bit buffer, then straight
    /// from the input.
    mutating func copyBytes(to target: UnsafeMutablePointer<UInt8>, count bytes: Int) throws(InflateError) {
        var done = 0
        while done < bytes && bitCount >= 8 {
            target[done] = UInt8(truncatingIfNeeded: take(8))
            done += 1
        }
        try checkOverrun()
        guard done < bytes else { return }
        // The bit buffer is empty here, so the input position is exactly the next byte of the stream. Its upper
        // bits may still hold look-ahead bytes that are about to be copied: clear them, or the next refill
        // would OR new bytes over them.
        buffer = 0
        guard position + (bytes - done) <= count, let base else {
            throw InflateError("the deflate stream is truncated inside a stored block")
        }
        (target + done).update(from: base + position, count: bytes - done)
        position += bytes - done
    }
}
