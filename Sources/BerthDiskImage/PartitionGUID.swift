/// A GUID as GPT stores it: 16 bytes whose first three fields are little-endian ("mixed endian"), so
/// `EBD0A0A2-B9E5-4433-87C0-68B6B72699C7` starts with the bytes `A2 A0 D0 EB` on disk.
public struct PartitionGUID: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes in on-disk order.
    public let bytes: [UInt8]

    public static let zero = PartitionGUID(onDisk: [UInt8](repeating: 0, count: 16))
    /// Microsoft basic data: what a FAT partition is typed as on GPT, and what Linux and Windows expect there.
    public static let microsoftBasicData = PartitionGUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")!
    public static let linuxFilesystem = PartitionGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")!

    public init(onDisk bytes: [UInt8]) {
        precondition(bytes.count == 16, "a GUID is 16 bytes")
        self.bytes = bytes
    }

    /// Parses the canonical text form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, any case).
    public init?(_ text: String) {
        let hex = text.filter { $0 != "-" }
        guard text.count == 36, hex.count == 32 else { return nil }
        var big: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            big.append(byte)
            index = next
        }
        let dashes = [8, 13, 18, 23].map { text[text.index(text.startIndex, offsetBy: $0)] }
        guard dashes.allSatisfy({ $0 == "-" }) else { return nil }
        bytes = PartitionGUID.swapMixedEndian(big)
    }

    /// A random (version 4) GUID, as GPT tools make for disk and partition unique GUIDs.
    public static func random() -> PartitionGUID {
        var generator = SystemRandomNumberGenerator()
        var big = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        big[6] = (big[6] & 0x0F) | 0x40
        big[8] = (big[8] & 0x3F) | 0x80
        return PartitionGUID(onDisk: swapMixedEndian(big))
    }

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    public var description: String {
        let big = PartitionGUID.swapMixedEndian(bytes)
        let hex = big.map { byte in
            let digits = String(byte, radix: 16, uppercase: true)
            return digits.count == 1 ? "0" + digits : digits
        }
        return [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }.joined(separator: "-")
    }

    /// Converts between the textual (big-endian) byte order and the on-disk order; its own inverse.
    private static func swapMixedEndian(_ input: [UInt8]) -> [UInt8] {
        var output = input
        output[0] = input[3]
        output[1] = input[2]
        output[2] = input[1]
        output[3] = input[0]
        output[4] = input[5]
        output[5] = input[4]
        output[6] = input[7]
        output[7] = input[6]
        return output
    }
}
