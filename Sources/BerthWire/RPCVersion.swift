/// An RPC API version, "X.Y" or "X.Y.Z", compared the way oslo.messaging's `version_is_compatible` does.
public struct RPCVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    /// Kept optional so a version is written back exactly as it was given ("1.0" stays "1.0", not "1.0.0");
    /// oslo treats a missing revision as 0 when comparing.
    public var revision: Int?

    public static let oneZero = RPCVersion(major: 1, minor: 0)

    public init(major: Int, minor: Int, revision: Int? = nil) {
        self.major = major
        self.minor = minor
        self.revision = revision
    }

    /// Parses "X.Y" or "X.Y.Z" with non-negative decimal parts; nil for anything else.
    public init?(_ text: String) {
        guard text.utf8.count <= 32 else { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        var numbers: [Int] = []
        for part in parts {
            guard !part.isEmpty, part.utf8.count <= 9, part.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let number = Int(part)
            else { return nil }
            numbers.append(number)
        }
        self.init(major: numbers[0], minor: numbers[1], revision: numbers.count == 3 ? numbers[2] : nil)
    }

    public var description: String {
        if let revision { "\(major).\(minor).\(revision)" } else { "\(major).\(minor)" }
    }

    /// Whether an endpoint at `self` serves a request for `requested`: same major, requested minor not newer,
    /// and for an equal minor, requested revision not newer.
    public func accepts(_ requested: RPCVersion) -> Bool {
        guard requested.major == major, requested.minor <= minor else { return false }
        if requested.minor == minor { return (requested.revision ?? 0) <= (revision ?? 0) }
        return true
    }

    public static func == (lhs: RPCVersion, rhs: RPCVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.revision ?? 0) == (rhs.major, rhs.minor, rhs.revision ?? 0)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(major)
        hasher.combine(minor)
        hasher.combine(revision ?? 0)
    }

    public static func < (lhs: RPCVersion, rhs: RPCVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.revision ?? 0) < (rhs.major, rhs.minor, rhs.revision ?? 0)
    }
}
