import CCrypto

// Streaming hashers: image checksums (Glance's `os_hash_algo`/`os_hash_value` and the legacy md5 `checksum`) in
// the catalog and the deploy path, and the domain fingerprint (`SHA256Digest.fingerprint`), event ids and ledger
// names. OpenSSL's libcrypto does the work (it is linked already, through librabbitmq and libcurl): its
// assembly uses SHA-NI and AVX2 where the CPU has them, ~1.4 GB/s SHA-256 and ~0.55 GB/s SHA-512 on the CI
// machine against ~0.4 GB/s for the portable Swift code this replaced. MD5 only for Glance's legacy field,
// which is not a security check.

/// The digests Berth uses; each names its libcrypto `EVP_MD`.
enum DigestAlgorithm: Sendable {
    case md5, sha256, sha384, sha512

    /// The algorithm fetched once: `EVP_DigestInit_ex` with `EVP_sha256()` and the like fetches the
    /// implementation again on every init (OpenSSL 3's implicit fetch, ~0.9 µs of a 1.4 µs short hash), and
    /// the worker hashes a few short strings per request (ledger names, event ids, domain fingerprints).
    var evp: OpaquePointer {
        switch self {
        case .md5: Self.md5MD
        case .sha256: Self.sha256MD
        case .sha384: Self.sha384MD
        case .sha512: Self.sha512MD
        }
    }

    // Fetched on first use and kept for the life of the process (four small objects). An `EVP_MD` is
    // immutable once fetched and libcrypto lets any thread use it.
    nonisolated(unsafe) private static let md5MD = fetch("MD5")
    nonisolated(unsafe) private static let sha256MD = fetch("SHA256")
    nonisolated(unsafe) private static let sha384MD = fetch("SHA384")
    nonisolated(unsafe) private static let sha512MD = fetch("SHA512")

    private static func fetch(_ name: String) -> OpaquePointer {
        guard let md = EVP_MD_fetch(nil, name, nil) else { fatalError("libcrypto: EVP_MD_fetch(\(name)) failed") }
        return md
    }
}

/// One libcrypto digest context, owned: freed with its last reference.
private final class DigestContext: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ algorithm: DigestAlgorithm) {
        guard let pointer = EVP_MD_CTX_new() else { fatalError("libcrypto: EVP_MD_CTX_new failed (out of memory)") }
        self.pointer = pointer
        precondition(EVP_DigestInit_ex(pointer, algorithm.evp, nil) == 1, "libcrypto: EVP_DigestInit_ex failed")
    }

    init(copying other: DigestContext) {
        guard let pointer = EVP_MD_CTX_new() else { fatalError("libcrypto: EVP_MD_CTX_new failed (out of memory)") }
        self.pointer = pointer
        precondition(EVP_MD_CTX_copy_ex(pointer, other.pointer) == 1, "libcrypto: EVP_MD_CTX_copy_ex failed")
    }

    deinit { EVP_MD_CTX_free(pointer) }
}

/// A streaming hasher with value semantics: a copy hashes on independently (the context is copied on write),
/// as the Swift hashers it replaced did. `@unchecked Sendable` is safe for the same reason: a context is only
/// ever changed through a unique reference.
struct LibcryptoHasher: @unchecked Sendable {
    private var context: DigestContext

    init(_ algorithm: DigestAlgorithm) {
        context = DigestContext(algorithm)
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        if !isKnownUniquelyReferenced(&context) { context = DigestContext(copying: context) }
        precondition(EVP_DigestUpdate(context.pointer, base, bytes.count) == 1, "libcrypto: EVP_DigestUpdate failed")
    }

    /// The lowercase hex digest. The hasher is spent afterwards.
    mutating func finalize() -> String {
        if !isKnownUniquelyReferenced(&context) { context = DigestContext(copying: context) }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        precondition(EVP_DigestFinal_ex(context.pointer, &digest, &length) == 1, "libcrypto: EVP_DigestFinal_ex failed")
        return DigestHex.string(digest.prefix(Int(length)))
    }
}

enum DigestHex {
    private static let digits = Array("0123456789abcdef".utf8)

    static func string(_ bytes: some Collection<UInt8>) -> String {
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// MD5 (RFC 1321), streaming. Only for Glance's legacy `checksum`; not a security check.
public struct MD5Digest: Sendable {
    private var hasher = LibcryptoHasher(.md5)

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { hasher.update($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String { hasher.finalize() }

    /// The lowercase hex MD5 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalize()
    }
}

/// SHA-256 (FIPS 180-4), streaming.
public struct SHA256Digest: Sendable {
    private var hasher = LibcryptoHasher(.sha256)

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { hasher.update($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String { hasher.finalize() }

    /// The lowercase hex SHA-256 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalize()
    }

    /// `sha256:<hex>` of `text`'s UTF-8: how Berth records a fingerprint (the domain's, of
    /// `DomainSpec.canonicalText`), the algorithm named so it can change without old records matching new ones.
    public static func fingerprint(_ text: String) -> String {
        "sha256:" + hex(Array(text.utf8))
    }
}

/// SHA-512 (FIPS 180-4), streaming: Glance's default `os_hash_algo`. `SHA512Digest(truncatedTo384: true)` is
/// SHA-384.
public struct SHA512Digest: Sendable {
    private var hasher: LibcryptoHasher

    public init() { self.init(truncatedTo384: false) }

    public init(truncatedTo384: Bool) {
        hasher = LibcryptoHasher(truncatedTo384 ? .sha384 : .sha512)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bytes) }
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { hasher.update($0) } }

    /// The lowercase hex digest. The hasher is spent afterwards.
    public mutating func finalize() -> String { hasher.finalize() }

    /// The lowercase hex SHA-512 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalize()
    }
}
