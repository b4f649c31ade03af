/// Why a catalog operation failed: a kind the RPC layer maps to one of Berth's failure classes, and a
/// message for the operator that says what was wrong and what to do about it.
public struct CatalogError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case imageNotFound
        case volumeNotFound
        case snapshotNotFound
        /// The call itself is malformed: bad id syntax where an id is being minted, conflicting arguments.
        case invalidRequest
        /// The image cannot be used or stored as asked: wrong format, no data, checksum mismatch.
        case invalidImage
        /// A property (or name, or format) fails the catalog's rules; stored nothing.
        case invalidProperty
        /// A record with the id the caller chose already exists.
        case alreadyExists
        /// Refused because something else still depends on the record; `force` overrides where offered.
        case inUse
        /// The catalog directory cannot be read or written: missing, not writable, read-only, disk full;
        /// or the image service cannot be reached, is failing, or refuses the data (too large, over quota).
        case catalogUnavailable
        /// The image service refused Berth's credentials (Glance 401) or the operation for them (403).
        case unauthorized
    }

    public let kind: Kind
    public let message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }

    /// The `berth.exceptions` class this error is reported as (DESIGN §3). A catalog that cannot be
    /// written is not the caller's fault; it fails the operation, so the handler names that failure.
    public func rpcClassName(operationFailure: String = "BuildFailed") -> String {
        switch kind {
        case .imageNotFound: "ImageNotFound"
        // Berth's API has no snapshot-specific class; Cinder reports a missing snapshot the same way.
        case .volumeNotFound, .snapshotNotFound: "VolumeNotFound"
        case .invalidImage, .invalidProperty: "InvalidImage"
        case .invalidRequest, .alreadyExists, .inUse: "InvalidRequest"
        case .catalogUnavailable, .unauthorized: operationFailure
        }
    }

    /// The class for a boot; snapshot handlers use `rpcClassName(operationFailure: "SnapshotFailed")`.
    public var rpcClassName: String { rpcClassName() }
}

extension CatalogError {
    static func imageNotFound(_ id: String) -> CatalogError {
        CatalogError(
            kind: .imageNotFound,
            message: "image \(id) is not in the catalog; list images with `berth images list` and use an existing id")
    }

    static func volumeNotFound(_ id: String) -> CatalogError {
        CatalogError(
            kind: .volumeNotFound,
            message: "volume \(id) is not in the catalog; list volumes with `berth volumes list` and use an existing id"
        )
    }

    static func snapshotNotFound(_ id: String) -> CatalogError {
        CatalogError(
            kind: .snapshotNotFound,
            message: "volume snapshot \(id) is not in the catalog; list volumes and their snapshots with "
                + "`berth volumes list` and use an existing id")
    }

    static func invalidRequest(_ message: String) -> CatalogError {
        CatalogError(kind: .invalidRequest, message: message)
    }

    static func invalidImage(_ message: String) -> CatalogError {
        CatalogError(kind: .invalidImage, message: message)
    }

    static func invalidProperty(_ message: String) -> CatalogError {
        CatalogError(kind: .invalidProperty, message: message)
    }

    static func inUse(_ message: String) -> CatalogError {
        CatalogError(kind: .inUse, message: message)
    }

    static func unavailable(_ message: String) -> CatalogError {
        CatalogError(kind: .catalogUnavailable, message: message)
    }
}
