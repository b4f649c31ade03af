/// Bounds applied before and while parsing, so a hostile or broken publisher cannot make the worker
/// allocate without limit or recurse deeply.
public struct JSONLimits: Sendable, Hashable {
    /// Largest accepted body in bytes, checked before json-c sees the first byte.
    public var maxBytes: Int
    /// Deepest accepted nesting, counted the way json-c counts it: the top-level value is level 1 and
    /// each enclosing array or object adds one, so `7` and `[]` are depth 1, `[7]` and `[[]]` depth 2.
    /// Values are clamped to `1...JSONLimits.depthCeiling` because both json-c and the conversion to
    /// `JSONValue` recurse once per level.
    public var maxDepth: Int

    /// Four MiB covers every oslo.messaging payload we have seen with room to spare; 32 levels is json-c's
    /// own default and far deeper than any RPC argument nova sends.
    public static let `default` = JSONLimits(maxBytes: 4 << 20, maxDepth: 32)

    /// The largest depth honoured, whatever `maxDepth` says; deeper would risk the stack of a
    /// cooperative-pool thread.
    public static let depthCeiling = 1024

    public init(maxBytes: Int, maxDepth: Int) {
        self.maxBytes = maxBytes
        self.maxDepth = maxDepth
    }

    /// The depth actually honoured: `maxDepth` clamped to `1...depthCeiling`.
    public var effectiveDepth: Int { min(max(maxDepth, 1), Self.depthCeiling) }
}
