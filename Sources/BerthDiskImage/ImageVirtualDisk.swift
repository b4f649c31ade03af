import BerthCore

/// An image as it will lie on a node's disk, read before anything is written: a raw image's bytes, or a qcow2
/// image's virtual bytes through its cluster map; everything past the image reads as zeros. The deploy plan
/// reads the image's partition table from it, so the config step's decision is made before the first write.
final class ImageVirtualDisk: PartitionSectorReader {
    /// "image <path>", as messages name it.
    let path: String
    private let file: ImageSourceFile
    private let qcow2: QCOW2Image?
    private let virtualSize: UInt64
    private lazy var inflater: QCOW2ClusterInflater? = qcow2.map { QCOW2ClusterInflater(image: $0) }

    init(file: ImageSourceFile, qcow2: QCOW2Image?) {
        path = "image \(file.path)"
        self.file = file
        self.qcow2 = qcow2
        virtualSize = qcow2?.virtualSize ?? file.size
    }

    func read(at offset: UInt64, count: Int) throws(BerthError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        guard offset < virtualSize else { return bytes }
        // No overflow: the virtual size is at most 2^56 and `count` a table's size.
        let end = min(virtualSize, offset + UInt64(count))
        guard let qcow2 else {
            try readFile(into: &bytes, at: 0, count: Int(end - offset), fileOffset: offset)
            return bytes
        }
        let clusterSize = UInt64(qcow2.header.clusterSize)
        var position = offset
        while position < end {
            let within = position % clusterSize
            let length = min(clusterSize - within, end - position)
            let index = Int(position - offset)
            switch try qcow2.cluster(at: position) {
            case .zero, .unallocated:
                break
            case .data(let fileOffset):
                try readFile(into: &bytes, at: index, count: Int(length), fileOffset: fileOffset + within)
            case .compressed(let fileOffset, let compressedLength):
                guard let inflater else { preconditionFailure("a qcow2 image has an inflater") }
                let cluster = try inflater.inflate(
                    fileOffset: fileOffset, length: compressedLength, virtualOffset: position - within)
                bytes.replaceSubrange(index..<index + Int(length), with: cluster[Int(within)..<Int(within + length)])
            }
            position += length
        }
        return bytes
    }

    /// Reads file bytes into `bytes[index..<index + count]`; a short read (the end of a raw file) leaves zeros.
    private func readFile(into bytes: inout [UInt8], at index: Int, count: Int, fileOffset: UInt64)
        throws(BerthError)
    {
        var outcome: Result<Int, BerthError> = .success(0)
        bytes.withUnsafeMutableBytes { raw in
            let target = UnsafeMutableRawBufferPointer(rebasing: raw[index..<index + count])
            outcome = Result { () throws(BerthError) in try file.read(into: target, at: fileOffset) }
        }
        _ = try outcome.get()
    }
}
