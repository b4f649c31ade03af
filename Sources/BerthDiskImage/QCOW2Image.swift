import BerthCore

/// The fields of a qcow2 header (docs/interop/qcow2.txt in QEMU) that decide how to read the image.
public struct QCOW2Header: Sendable, Hashable {
    public var version: Int
    public var backingFileOffset: UInt64
    public var backingFileSize: UInt32
    public var clusterBits: Int
    public var virtualSize: UInt64
    public var cryptMethod: UInt32
    public var l1Size: Int
    public var l1TableOffset: UInt64
    public var snapshotCount: Int
    /// Version 3 only (zero for version 2).
    public var incompatibleFeatures: UInt64
    public var compatibleFeatures: UInt64
    public var autoclearFeatures: UInt64
    public var headerLength: Int
    /// 0 = zlib (deflate), 1 = zstd.
    public var compressionType: UInt8

    public var clusterSize: Int { 1 << clusterBits }
    /// Entries in one L2 table (one cluster of 8-byte entries).
    public var l2Entries: Int { clusterSize / 8 }
}

/// One run of the virtual disk and where its bytes come from.
public struct QCOW2Extent: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// Stored uncompressed at `fileOffset` in the image file, contiguous for the whole extent.
        case data(fileOffset: UInt64)
        /// One compressed cluster: `length` bytes of raw deflate at `fileOffset` (the last sector may be padding).
        case compressed(fileOffset: UInt64, length: Int)
        /// Reads as zeros (the v3 zero flag).
        case zero
        /// Not allocated: reads as zeros (there is no backing file; those are refused).
        case unallocated
    }

    public var virtualOffset: UInt64
    public var length: UInt64
    public var kind: Kind
}

/// What `QCOW2Image.validate()` found walking every table.
public struct QCOW2Summary: Sendable, Hashable {
    /// Bytes of the virtual disk held in uncompressed data clusters.
    public var dataBytes: UInt64 = 0
    /// Bytes of the virtual disk held in compressed clusters (virtual, not compressed, bytes).
    public var compressedBytes: UInt64 = 0
    /// Bytes of the virtual disk that are zero clusters or unallocated.
    public var zeroBytes: UInt64 = 0
    public var l2Tables: Int = 0
}

/// A qcow2 image opened for reading its active layer (snapshots are not deployed, as `qemu-img convert` does).
/// The header is parsed and every refusal that the header alone decides happens in `init`; `validate()`
/// walks all L1/L2 tables so that an inconsistent image is refused before a byte is written.
public final class QCOW2Image {
    public let path: String
    public let header: QCOW2Header
    public var virtualSize: UInt64 { header.virtualSize }
    public var fileSize: UInt64 { file.size }
    let file: ImageSourceFile

    /// QEMU's own limit on the active L1 table (QCOW_MAX_L1_SIZE): bigger tables mean a corrupt header.
    static let maxL1Bytes = 32 << 20
    /// Offset bits of L1 and standard L2 entries.
    static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    static let compressedFlag: UInt64 = 1 << 62
    static let zeroFlag: UInt64 = 1

    public convenience init(path: String) throws(BerthError) {
        try self.init(file: ImageSourceFile(path: path))
    }

    init(file: ImageSourceFile) throws(BerthError) {
        self.file = file
        path = file.path
        let fileSize = file.size
        let fixed = try file.readBytes(count: Int(min(fileSize, 4096)), at: 0, what: "the qcow2 header")
        guard fixed.count >= 72, ImageBytes.be32(fixed, 0) == 0x5146_49fb else {
            throw .invalidImage("image \(file.path) is not a qcow2 file or its header is truncated")
        }
        var header = QCOW2Header(
            version: Int(ImageBytes.be32(fixed, 4)), backingFileOffset: ImageBytes.be64(fixed, 8),
            backingFileSize: ImageBytes.be32(fixed, 16), clusterBits: Int(ImageBytes.be32(fixed, 20)),
            virtualSize: ImageBytes.be64(fixed, 24), cryptMethod: ImageBytes.be32(fixed, 32),
            l1Size: Int(ImageBytes.be32(fixed, 36)), l1TableOffset: ImageBytes.be64(fixed, 40),
            snapshotCount: Int(ImageBytes.be32(fixed, 60)), incompatibleFeatures: 0, compatibleFeatures: 0,
            autoclearFeatures: 0, headerLength: 72, compressionType: 0)
        guard header.version == 2 || header.version == 3 else {
            throw .invalidImage("image \(file.path) is qcow2 version \(header.version); Berth reads versions 2 and 3")
        }
        if header.version == 3 {
            guard fixed.count >= 104 else {
                throw .invalidImage("image \(file.path) is truncated inside its qcow2 version 3 header")
            }
            header.incompatibleFeatures = ImageBytes.be64(fixed, 72)
            header.compatibleFeatures = ImageBytes.be64(fixed, 80)
            header.autoclearFeatures = ImageBytes.be64(fixed, 88)
            header.headerLength = Int(ImageBytes.be32(fixed, 100))
            if header.headerLength > 104 && fixed.count > 104 { header.compressionType = fixed[104] }
        }
        guard (9...21).contains(header.clusterBits) else {
            throw .invalidImage(
                "image \(file.path) has qcow2 cluster_bits \(header.clusterBits), outside 9...21; the header is corrupt"
            )
        }
        // Header extensions may run to the end of the first cluster, past the 4 KiB read so far.
        var firstCluster = fixed
        if header.clusterSize > fixed.count && fileSize > UInt64(fixed.count) {
            firstCluster = try file.readBytes(
                count: Int(min(UInt64(header.clusterSize), fileSize)), at: 0, what: "the first cluster")
        }
        try Self.refuseUnsupported(header, fixed: firstCluster, file: file)
        try Self.checkLayout(header, file: file)
        self.header = header
    }

    // MARK: - Header checks

    private static func refuseUnsupported(_ header: QCOW2Header, fixed: [UInt8], file: ImageSourceFile)
        throws(BerthError)
    {
        let path = file.path
        if header.backingFileOffset != 0 {
            var name = "unreadable"
            let size = Int(min(header.backingFileSize, 1023))
            if let bytes = try? file.readBytes(count: size, at: header.backingFileOffset, what: "the backing file name")
            {
                name = ImageText.quoted(bytes)
            }
            throw .invalidImage(
                "image \(path) is a qcow2 overlay with a backing file (\(name)); a node gets the whole image, so "
                    + "flatten it first: `qemu-img convert -O qcow2 overlay.qcow2 flat.qcow2`")
        }
        if header.cryptMethod != 0 {
            let method = header.cryptMethod == 1 ? "AES" : header.cryptMethod == 2 ? "LUKS" : "\(header.cryptMethod)"
            throw .invalidImage(
                "image \(path) is an encrypted qcow2 (encryption method \(method)); Berth has no key to decrypt it; "
                    + "upload a decrypted image")
        }
        let incompatible = header.incompatibleFeatures
        if incompatible & 1 != 0 {
            throw .invalidImage(
                "image \(path) is marked dirty (qcow2 incompatible feature bit 0: its refcounts may be stale); "
                    + "run `qemu-img check -r all` on it and upload it again")
        }
        if incompatible & 2 != 0 {
            throw .invalidImage(
                "image \(path) is marked corrupt by QEMU (qcow2 incompatible feature bit 1); repair it with "
                    + "`qemu-img check -r all` or rebuild it")
        }
        if incompatible & 4 != 0 {
            throw .invalidImage(
                "image \(path) keeps its data in an external data file (qcow2 incompatible feature bit 2), which "
                    + "is not part of the upload; convert it: `qemu-img convert -O qcow2 image.qcow2 whole.qcow2`")
        }
        if incompatible & 8 != 0 && header.compressionType != 0 {
            throw .invalidImage(
                "image \(path) has zstd-compressed clusters (compression type \(header.compressionType)), which are "
                    + "unsupported; convert it with `qemu-img convert -c -O qcow2 -o compression_type=zlib`")
        }
        if incompatible & 16 != 0 {
            throw .invalidImage(
                "image \(path) uses extended L2 entries (subclusters, qcow2 incompatible feature bit 4), which "
                    + "Berth does not read; convert it with `qemu-img convert -O qcow2 -o extended_l2=off`")
        }
        let unknown = incompatible & ~UInt64(0x1f)
        if unknown != 0 {
            throw .invalidImage(
                "image \(path) uses qcow2 incompatible features Berth does not know (bits \(ImageBytes.hex(unknown))); "
                    + "convert it with `qemu-img convert -O qcow2 -o compat=1.1`")
        }
        try checkExtensions(header, fixed: fixed, path: path)
    }

    /// Walks the header extensions (they follow the header, inside the first cluster): an external data file
    /// name or an encryption header is a refusal even if the feature bits were cleared.
    private static func checkExtensions(_ header: QCOW2Header, fixed: [UInt8], path: String) throws(BerthError) {
        var offset = header.version == 2 ? 72 : header.headerLength
        guard header.version == 2 || (offset >= 104 && offset % 8 == 0) else {
            throw .invalidImage("image \(path) has an invalid qcow2 header_length \(offset)")
        }
        let end = min(fixed.count, header.clusterSize)
        while offset + 8 <= end {
            let type = ImageBytes.be32(fixed, offset)
            let length = Int(ImageBytes.be32(fixed, offset + 4))
            if type == 0 { return }
            let padded = (length + 7) & ~7
            guard offset + 8 + padded <= header.clusterSize else {
                throw .invalidImage(
                    "image \(path) has a qcow2 header extension (type \(ImageBytes.hex(UInt64(type)))) that runs past "
                        + "the first cluster; the header is corrupt")
            }
            switch type {
            case 0x4441_5441:
                throw .invalidImage(
                    "image \(path) names an external data file (qcow2 header extension 0x44415441), which is not "
                        + "part of the upload; convert it: `qemu-img convert -O qcow2 image.qcow2 whole.qcow2`")
            case 0x0537_be77:
                throw .invalidImage(
                    "image \(path) carries a full-disk-encryption header (qcow2 header extension 0x0537be77); "
                        + "upload a decrypted image")
            default:
                break
            }
            offset += 8 + padded
        }
    }

    private static func checkLayout(_ header: QCOW2Header, file: ImageSourceFile) throws(BerthError) {
        let path = file.path
        let clusterSize = UInt64(header.clusterSize)
        guard header.virtualSize <= 1 << 56 else {
            throw .invalidImage(
                "image \(path) claims a virtual size of \(header.virtualSize) bytes; the header is corrupt")
        }
        let l2Coverage = clusterSize * UInt64(header.l2Entries)
        let needed = (header.virtualSize + l2Coverage - 1) / l2Coverage
        guard UInt64(header.l1Size) >= needed else {
            throw .invalidImage(
                "image \(path) has an L1 table of \(header.l1Size) entries but its virtual size needs \(needed); "
                    + "the image is corrupt")
        }
        guard header.l1Size * 8 <= maxL1Bytes else {
            throw .invalidImage("image \(path) has an L1 table of \(header.l1Size) entries, more than QEMU allows")
        }
        guard header.l1TableOffset % clusterSize == 0 else {
            throw .invalidImage(
                "image \(path) has l1_table_offset \(header.l1TableOffset), not cluster-aligned; the image is corrupt")
        }
        // Written so that no sum can overflow: the offset comes from the file and may be near 2^64. The table
        // lying inside the file also bounds the walk by the file's size, not by the size the header claims.
        if needed > 0 {
            guard header.l1TableOffset >= clusterSize, header.l1TableOffset <= file.size,
                UInt64(header.l1Size) * 8 <= file.size - header.l1TableOffset
            else {
                throw .invalidImage(
                    "image \(path) is truncated or inconsistent: its L1 table (l1_size \(header.l1Size) at "
                        + "l1_table_offset \(header.l1TableOffset)) lies outside the file (\(file.size) bytes)")
            }
        }
    }

    // MARK: - Tables

    /// Walks every L1 and L2 entry and checks each points inside the file; throws `InvalidImage` naming the
    /// table and index of the first bad entry. Reads the tables a cluster at a time and, when
    /// `inflatingCompressed`, inflates every compressed cluster into a scratch buffer so that a corrupt one is
    /// refused before a disk is written (no more work than the write will do).
    public func validate(inflatingCompressed: Bool = false) throws(BerthError) -> QCOW2Summary {
        var summary = QCOW2Summary()
        let inflater = inflatingCompressed ? QCOW2ClusterInflater(image: self) : nil
        var reader = makeExtentReader()
        while let extent = try reader.next() {
            switch extent.kind {
            case .data: summary.dataBytes += extent.length
            case .compressed(let fileOffset, let length):
                summary.compressedBytes += extent.length
                _ = try inflater?.inflate(fileOffset: fileOffset, length: length, virtualOffset: extent.virtualOffset)
            case .zero, .unallocated: summary.zeroBytes += extent.length
            }
        }
        summary.l2Tables = reader.l2TablesRead
        return summary
    }

    /// Where the cluster holding `virtualOffset` (below the virtual size) comes from: random access for reading
    /// a few sectors, such as the partition table, without walking the tables.
    func cluster(at virtualOffset: UInt64) throws(BerthError) -> QCOW2Extent.Kind {
        let l2Coverage = UInt64(header.clusterSize) * UInt64(header.l2Entries)
        let l1Index = Int(virtualOffset / l2Coverage)
        let l1Bytes = try file.readBytes(
            count: 8, at: header.l1TableOffset + UInt64(l1Index) * 8, what: "the L1 table")
        guard let table = try l2TableOffset(ImageBytes.be64(l1Bytes, 0), l1Index: l1Index) else { return .unallocated }
        let l2Index = Int((virtualOffset >> UInt64(header.clusterBits)) & UInt64(header.l2Entries - 1))
        let l2Bytes = try file.readBytes(count: 8, at: table + UInt64(l2Index) * 8, what: "an L2 table")
        return try decode(ImageBytes.be64(l2Bytes, 0), l1Index: l1Index, l2Index: l2Index)
    }

    /// The L2 table an L1 entry points to, checked to lie inside the file; nil when the entry is unallocated.
    func l2TableOffset(_ entry: UInt64, l1Index: Int) throws(BerthError) -> UInt64? {
        let tableOffset = entry & Self.offsetMask
        if tableOffset == 0 { return nil }
        guard tableOffset % UInt64(header.clusterSize) == 0 else {
            throw inconsistent("L1 entry \(l1Index) points to an L2 table at unaligned offset \(tableOffset)")
        }
        guard tableOffset + UInt64(header.clusterSize) <= fileSize else {
            throw inconsistent(
                "L1 entry \(l1Index) points to an L2 table at offset \(tableOffset), outside the file "
                    + "(\(fileSize) bytes)")
        }
        return tableOffset
    }

    /// Decodes one L2 entry, checking that what it points to lies inside the file. Offsets are masked to
    /// 56 bits (62 for compressed entries), so no sum here can overflow.
    func decode(_ entry: UInt64, l1Index: Int, l2Index: Int) throws(BerthError) -> QCOW2Extent.Kind {
        let clusterSize = UInt64(header.clusterSize)
        if entry & Self.compressedFlag != 0 {
            let (offset, length) = Self.compressedRange(entry, clusterBits: header.clusterBits)
            // The sector count rounds the end up to a sector, so the range may end past EOF by < 512 bytes.
            let limit = (fileSize + 511) & ~UInt64(511)
            guard offset >= clusterSize, offset + UInt64(length) <= limit else {
                throw inconsistent(
                    "L2 table \(l1Index) entry \(l2Index) points to a compressed cluster at \(offset) (+\(length) "
                        + "bytes), outside the file (\(fileSize) bytes)")
            }
            return .compressed(fileOffset: offset, length: length)
        }
        // As QEMU reads it: the zero flag wins over an allocation (a preallocated zero cluster reads as zeros).
        if entry & Self.zeroFlag != 0 { return .zero }
        let offset = entry & Self.offsetMask
        if offset == 0 { return .unallocated }
        guard offset % clusterSize == 0 else {
            throw inconsistent("L2 table \(l1Index) entry \(l2Index) points to unaligned data offset \(offset)")
        }
        guard offset + clusterSize <= fileSize else {
            throw inconsistent(
                "L2 table \(l1Index) entry \(l2Index) points to a data cluster at offset \(offset), outside the "
                    + "file (\(fileSize) bytes)")
        }
        return .data(fileOffset: offset)
    }

    func inconsistent(_ detail: String) -> BerthError {
        .invalidImage(
            "image \(path) is truncated or inconsistent: \(detail); check it with `qemu-img check` and upload a "
                + "good copy")
    }

    /// A reader of the extents in virtual order, with memory bounded by one L2 table and a slice of the L1 table.
    public func makeExtentReader() -> QCOW2ExtentReader { QCOW2ExtentReader(image: self) }

    /// All extents at once; for tests and small images (the count grows with the image's fragmentation).
    public func extents() throws(BerthError) -> [QCOW2Extent] {
        var reader = makeExtentReader()
        var all: [QCOW2Extent] = []
        while let extent = try reader.next() { all.append(extent) }
        return all
    }

    /// The byte range of a compressed cluster entry: offset and length as QEMU's qcow2 format defines them.
    static func compressedRange(_ entry: UInt64, clusterBits: Int) -> (offset: UInt64, length: Int) {
        let shift = 62 - (clusterBits - 8)
        let offset = entry & ((1 << UInt64(shift)) - 1)
        let sectors = Int((entry >> UInt64(shift)) & ((1 << UInt64(clusterBits - 8)) - 1)) + 1
        return (offset, sectors * 512 - Int(offset & 511))
    }
}

/// Iterates a qcow2 image's extents in virtual order, merging neighbouring clusters of the same kind (and data
/// clusters that are contiguous in the file). Every entry is checked as it is decoded.
public struct QCOW2ExtentReader {
    private let image: QCOW2Image
    private let header: QCOW2Header
    private var cursor: UInt64 = 0
    private var l1Index = 0
    /// A window of the L1 table: entries [l1WindowStart, l1WindowStart + l1Window.count).
    private var l1Window: [UInt64] = []
    private var l1WindowStart = 0
    private var l2Table: [UInt8] = []
    private var l2Index = -1
    private var pending: QCOW2Extent?
    private(set) var l2TablesRead = 0
    /// L2 tables seen, by cluster index in the file: one bit per cluster of the file, so the memory follows
    /// the file's size, not the number of L1 entries.
    private var l2TablesSeen: QCOW2ClusterSet

    private static let l1WindowEntries = 4096

    init(image: QCOW2Image) {
        self.image = image
        header = image.header
        l2TablesSeen = QCOW2ClusterSet(clusters: image.fileSize >> UInt64(image.header.clusterBits))
    }

    public mutating func next() throws(BerthError) -> QCOW2Extent? {
        while let piece = try nextPiece() {
            guard var current = pending else {
                pending = piece
                continue
            }
            if Self.canMerge(current, piece) {
                current.length += piece.length
                pending = current
                continue
            }
            pending = piece
            return current
        }
        defer { pending = nil }
        return pending
    }

    private static func canMerge(_ first: QCOW2Extent, _ second: QCOW2Extent) -> Bool {
        switch (first.kind, second.kind) {
        case (.zero, .zero), (.unallocated, .unallocated):
            return true
        case (.data(let a), .data(let b)):
            return a + first.length == b
        default:
            return false
        }
    }

    /// The next cluster, or the whole range of an unallocated L2 table.
    private mutating func nextPiece() throws(BerthError) -> QCOW2Extent? {
        let virtualSize = header.virtualSize
        guard cursor < virtualSize else { return nil }
        let clusterBits = UInt64(header.clusterBits)
        let l2Coverage = UInt64(header.clusterSize) * UInt64(header.l2Entries)
        if l2Index < 0 {
            guard let tableOffset = try image.l2TableOffset(try l1Entry(l1Index), l1Index: l1Index) else {
                let end = min((UInt64(l1Index) + 1) * l2Coverage, virtualSize)
                let piece = QCOW2Extent(virtualOffset: cursor, length: end - cursor, kind: .unallocated)
                cursor = end
                l1Index += 1
                return piece
            }
            // An active layer never shares an L2 table; a shared one would let a small file make a walk of
            // every entry of every L1 slot (minutes), so the walk stays proportional to the file.
            guard l2TablesSeen.insert(tableOffset >> clusterBits) else {
                throw image.inconsistent(
                    "L1 entry \(l1Index) points to the L2 table at offset \(tableOffset), already used by an earlier "
                        + "L1 entry")
            }
            l2Table = try image.file.readBytes(count: header.clusterSize, at: tableOffset, what: "an L2 table")
            l2TablesRead += 1
            l2Index = Int((cursor >> clusterBits) & UInt64(header.l2Entries - 1))
        }
        let entry = ImageBytes.be64(l2Table, l2Index * 8)
        let index = l2Index
        let length = min(UInt64(header.clusterSize), virtualSize - cursor)
        let kind = try image.decode(entry, l1Index: l1Index, l2Index: index)
        let piece = QCOW2Extent(virtualOffset: cursor, length: length, kind: kind)
        cursor += length
        l2Index += 1
        if l2Index == header.l2Entries {
            l2Index = -1
            l1Index += 1
        }
        return piece
    }

    private mutating func l1Entry(_ index: Int) throws(BerthError) -> UInt64 {
        if index < l1WindowStart || index >= l1WindowStart + l1Window.count {
            let count = min(Self.l1WindowEntries, header.l1Size - index)
            let bytes = try image.file.readBytes(
                count: count * 8, at: header.l1TableOffset + UInt64(index) * 8, what: "the L1 table")
            l1Window = (0..<count).map { ImageBytes.be64(bytes, $0 * 8) }
            l1WindowStart = index
        }
        return l1Window[index - l1WindowStart]
    }

}

/// Inflates compressed clusters with buffers allocated once: the input holds up to two clusters and a sector
/// (the most a compressed entry spans), the output one cluster.
final class QCOW2ClusterInflater {
    private let image: QCOW2Image
    private let input: UnsafeMutableRawBufferPointer
    private let cluster: UnsafeMutableRawBufferPointer
    private let decoder = InflateDecoder()

    init(image: QCOW2Image) {
        self.image = image
        input = .allocate(byteCount: image.header.clusterSize * 2 + 512, alignment: 64)
        cluster = .allocate(byteCount: image.header.clusterSize, alignment: 4096)
    }

    deinit {
        input.deallocate()
        cluster.deallocate()
    }

    /// The cluster's bytes, valid until the next call.
    func inflate(fileOffset: UInt64, length: Int, virtualOffset: UInt64) throws(BerthError) -> UnsafeRawBufferPointer {
        let compressed = UnsafeMutableRawBufferPointer(rebasing: input[0..<length])
        let got = try image.file.read(into: compressed, at: fileOffset)
        // The last sector of the entry may lie past the end of the file: QEMU reads zeros there too.
        if got < length {
            UnsafeMutableRawBufferPointer(rebasing: compressed[got...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        let result: InflateResult
        do {
            result = try decoder.decompress(UnsafeRawBufferPointer(compressed), into: cluster)
        } catch {
            throw .invalidImage(
                "the compressed cluster at virtual offset \(virtualOffset) (file offset \(fileOffset)) of image "
                    + "\(image.path) is corrupt (\(error.message)); check it with `qemu-img check` and upload a "
                    + "good copy")
        }
        guard result.bytesWritten == cluster.count else {
            throw .invalidImage(
                "the compressed cluster at virtual offset \(virtualOffset) of image \(image.path) is corrupt: it "
                    + "inflates to \(result.bytesWritten) bytes, not \(cluster.count)")
        }
        return UnsafeRawBufferPointer(cluster)
    }
}

/// A set of cluster indexes below a bound, one bit each.
struct QCOW2ClusterSet {
    private var words: [UInt64]

    init(clusters: UInt64) {
        words = [UInt64](repeating: 0, count: Int((clusters + 63) / 64))
    }

    /// Inserts `cluster` (below the bound); false when it was already there.
    mutating func insert(_ cluster: UInt64) -> Bool {
        let (word, bit) = (Int(cluster / 64), UInt64(1) << (cluster % 64))
        guard words[word] & bit == 0 else { return false }
        words[word] |= bit
        return true
    }
}
