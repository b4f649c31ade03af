/// 8.3 short names and VFAT long-name entries, as Windows and Linux's vfat driver make them.
enum FATShortName {
    /// Characters an 8.3 name may hold besides A-Z and 0-9.
    private static let punctuation = Set("!#$%&'()-@^_`{}~".utf8)
    /// Characters no FAT name may hold, long or short.
    static let forbiddenInLongNames = Set("\\/:*?\"<>|".unicodeScalars)

    /// The 11-byte short name for `longName` in a directory whose short names are `taken`, and whether a
    /// long-name entry must precede it (any name that is not already an upper-case 8.3 name).
    static func make(for longName: String, taken: Set<[UInt8]>) -> (name: [UInt8], needsLongName: Bool) {
        if let exact = exactShortName(longName), !taken.contains(exact) { return (exact, false) }

        var lossy = false
        var stripped = Array(longName.uppercased().unicodeScalars)
        stripped.removeAll { $0 == " " }
        while stripped.first == "." { stripped.removeFirst() }
        if stripped.count != longName.unicodeScalars.count { lossy = true }
        let lastDot = stripped.lastIndex(of: ".")
        let baseScalars = lastDot.map { Array(stripped[..<$0]) } ?? stripped
        let extScalars = lastDot.map { Array(stripped[stripped.index(after: $0)...]) } ?? []
        func mapped(_ scalars: [Unicode.Scalar]) -> [UInt8] {
            scalars.compactMap { scalar -> UInt8? in
                if scalar == "." {
                    lossy = true
                    return nil
                }
                if scalar.isASCII, isShortNameByte(UInt8(scalar.value)) { return UInt8(scalar.value) }
                lossy = true
                return UInt8(ascii: "_")
            }
        }
        var base = mapped(baseScalars)
        var ext = mapped(extScalars)
        if base.count > 8 || ext.count > 3 { lossy = true }
        if base.isEmpty { base = Array("_".utf8) }
        ext = Array(ext.prefix(3))

        if !lossy {
            let candidate = padded(Array(base.prefix(8)), ext)
            if !taken.contains(candidate) { return (candidate, true) }
        }
        for number in 1... {
            let tail = Array("~\(number)".utf8)
            let candidate = padded(Array(base.prefix(8 - tail.count)) + tail, ext)
            if !taken.contains(candidate) { return (candidate, true) }
        }
        fatalError("unreachable: an unbounded range always yields a free numeric tail")
    }

    /// `name` as an 11-byte short name when it already is a valid upper-case 8.3 name.
    private static func exactShortName(_ name: String) -> [UInt8]? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.allSatisfy({ $0 == UInt8(ascii: ".") || isShortNameByte($0) }) else { return nil }
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count <= 2, (1...8).contains(parts[0].count) else { return nil }
        let ext = parts.count == 2 ? Array(parts[1]) : []
        guard parts.count == 1 || (1...3).contains(ext.count) else { return nil }
        return padded(Array(parts[0]), ext)
    }

    private static func isShortNameByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || punctuation.contains(byte)
    }

    private static func padded(_ base: [UInt8], _ ext: [UInt8]) -> [UInt8] {
        base + [UInt8](repeating: 0x20, count: 8 - base.count) + ext + [UInt8](repeating: 0x20, count: 3 - ext.count)
    }

    /// The checksum of a short name that ties its long-name entries to it (Microsoft FAT specification §7).
    static func checksum(_ shortName: [UInt8]) -> UInt8 {
        shortName.reduce(UInt8(0)) { sum, byte in (sum & 1 == 1 ? 0x80 : 0) &+ (sum >> 1) &+ byte }
    }

    /// The long-name directory entries for `name`, in on-disk order (last part first), 13 UTF-16 units each.
    static func longNameEntries(_ name: String, shortName: [UInt8]) -> [[UInt8]] {
        let units = Array(name.utf16)
        let count = (units.count + 12) / 13
        let sum = checksum(shortName)
        let slots = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
        var entries: [[UInt8]] = []
        for part in 1...count {
            var entry = [UInt8](repeating: 0, count: 32)
            entry[0] = UInt8(part) | (part == count ? 0x40 : 0)
            entry[11] = 0x0F
            entry[13] = sum
            for (index, offset) in slots.enumerated() {
                let position = (part - 1) * 13 + index
                // The name ends with one NUL unit, then 0xFFFF padding fills the entry.
                let unit: UInt16 = position < units.count ? units[position] : position == units.count ? 0 : 0xFFFF
                PartitionBytes.put16(unit, into: &entry, at: offset)
            }
            entries.append(entry)
        }
        return entries.reversed()
    }

    /// Long-name entries one name needs (0 when the short name says it all).
    static func longNameEntryCount(_ name: String) -> Int { (name.utf16.count + 12) / 13 }
}
