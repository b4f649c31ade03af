import BerthDigest
import BerthCore

/// The hash functions an image's checksum may use. Glance's `os_hash_algo` is any `hashlib` name (sha512 by
/// default); these are the ones Berth implements.
public enum ImageHashAlgorithm: String, Sendable, Hashable, CaseIterable {
    case md5
    case sha256
    case sha384
    case sha512

    /// Hex digits in a digest, to reject a malformed expected value before reading gigabytes.
    public var hexLength: Int {
        switch self {
        case .md5: 32
        case .sha256: 64
        case .sha384: 96
        case .sha512: 128
        }
    }

    static var supportedList: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// A streaming hasher for any `ImageHashAlgorithm`.
public struct ImageHasher: Sendable {
    private enum Engine: Sendable {
        case md5(MD5Digest)
        case sha256(SHA256Digest)
        case sha512(SHA512Digest)
    }

    public let algorithm: ImageHashAlgorithm
    private var engine: Engine

    public init(_ algorithm: ImageHashAlgorithm) {
        self.algorithm = algorithm
        switch algorithm {
        case .md5: engine = .md5(MD5Digest())
        case .sha256: engine = .sha256(SHA256Digest())
        case .sha384: engine = .sha512(SHA512Digest(truncatedTo384: true))
        case .sha512: engine = .sha512(SHA512Digest())
        }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        // Copy out, update, store back: Swift cannot mutate an enum payload in place. The copy costs one small
        // array copy per call, nothing against the megabytes each call hashes.
        switch engine {
        case .md5(var digest):
            digest.update(bytes)
            engine = .md5(digest)
        case .sha256(var digest):
            digest.update(bytes)
            engine = .sha256(digest)
        case .sha512(var digest):
            digest.update(bytes)
            engine = .sha512(digest)
        }
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String {
        switch engine {
        case .md5(var digest): digest.finalize()
        case .sha256(var digest): digest.finalize()
        case .sha512(var digest): digest.finalize()
        }
    }
}

/// The checksum an image's bytes must match: `os_hash_algo`/`os_hash_value` when the image has them, else the
/// legacy md5 `checksum`, else nothing to verify. Computed over the image file as uploaded (as Glance computes
/// it), not over the converted disk.
public struct ImageChecksum: Sendable, Hashable, CustomStringConvertible {
    public let algorithm: ImageHashAlgorithm
    /// Lowercase hex.
    public let expected: String
    /// Which image field the value came from (`os_hash_value` or `checksum`), for messages.
    public let field: String

    public init(algorithm: ImageHashAlgorithm, expected: String, field: String = "os_hash_value") throws(BerthError) {
        let value = expected.lowercased()
        guard value.count == algorithm.hexLength, value.utf8.allSatisfy({ DigestHexDigit.isHex($0) }) else {
            throw .invalidImage(
                "the image's \(field) \(Self.cut(expected)) is not a \(algorithm.rawValue) digest "
                    + "(\(algorithm.hexLength) hex digits); fix the image's metadata")
        }
        self.algorithm = algorithm
        self.expected = value
        self.field = field
    }

    /// Chooses the checksum to verify from Glance's fields. An `os_hash_algo` Berth does not implement is an
    /// error rather than a silent fallback to md5: the operator asked for that algorithm.
    public static func select(
        osHashAlgo: String?, osHashValue: String?, checksum: String?
    ) throws(BerthError) -> ImageChecksum? {
        let algo = osHashAlgo.flatMap { $0.isEmpty ? nil : $0 }
        let value = osHashValue.flatMap { $0.isEmpty ? nil : $0 }
        if let value {
            guard let algo else {
                throw .invalidImage(
                    "the image has os_hash_value but no os_hash_algo; set os_hash_algo (one of "
                        + "\(ImageHashAlgorithm.supportedList)) or remove os_hash_value")
            }
            guard let algorithm = ImageHashAlgorithm(rawValue: algo.lowercased()) else {
                throw .invalidImage(
                    "os_hash_algo \(Self.cut(algo)) is not supported (supported: \(ImageHashAlgorithm.supportedList)); "
                        + "re-upload the image with one of them")
            }
            return try ImageChecksum(algorithm: algorithm, expected: value, field: "os_hash_value")
        }
        if let checksum = checksum.flatMap({ $0.isEmpty ? nil : $0 }) {
            return try ImageChecksum(algorithm: .md5, expected: checksum, field: "checksum")
        }
        return nil
    }

    public static func select(for image: CatalogImage) throws(BerthError) -> ImageChecksum? {
        try select(osHashAlgo: image.osHashAlgo, osHashValue: image.osHashValue, checksum: image.checksum)
    }

    /// Throws `InvalidImage` when `actual` (hex) differs from the expected value; `consequence` tells the reader
    /// what state the disk is in.
    public func verify(
        _ actual: String, imagePath: String, consequence: String = "nothing was written to the disk"
    ) throws(BerthError) {
        guard actual.lowercased() == expected else {
            throw .invalidImage(
                "image file \(imagePath) does not match its \(field): \(algorithm.rawValue) is \(actual), expected "
                    + "\(expected); the image was corrupted or changed; \(consequence)")
        }
    }

    public var description: String { "\(algorithm.rawValue):\(expected)" }

    private static func cut(_ text: String) -> String {
        let shown = text.count > 40 ? String(text.prefix(40)) + "..." : text
        return "\"\(shown)\""
    }
}

enum DigestHexDigit {
    static func isHex(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66)
    }
}
