/// How a client treats message bodies over a size limit: read and dropped a frame at a time, never held whole,
/// so a stream of huge messages costs no more memory than one frame. Only the first `excerptBytes` are kept
/// (for the dead-letter copy), and a scanner sees every byte as it passes (to find a call's reply address).
public struct AMQPBodyLimit: Sendable {
    public var maxBytes: Int
    public var excerptBytes: Int
    public var makeScanner: @Sendable () -> any AMQPBodyScanner

    public init(maxBytes: Int, excerptBytes: Int = 4096, makeScanner: @escaping @Sendable () -> any AMQPBodyScanner) {
        self.maxBytes = maxBytes
        self.excerptBytes = excerptBytes
        self.makeScanner = makeScanner
    }

    /// Bodies over `maxBytes` are read and dropped with nothing kept but their size: for a reader that has no
    /// use for a message that large.
    public static func dropping(over maxBytes: Int) -> AMQPBodyLimit {
        AMQPBodyLimit(maxBytes: maxBytes, excerptBytes: 0) { IgnoredBody() }
    }
}

/// The scanner of a body nobody looks at.
struct IgnoredBody: AMQPBodyScanner {
    var isFinished: Bool { true }
    func scan(_ bytes: UnsafeRawBufferPointer) {}
}

/// Follows a body too large to keep as it streams past. It must use bounded memory and never trap, whatever
/// the bytes: they come straight from the bus.
public protocol AMQPBodyScanner: Sendable {
    mutating func scan(_ bytes: UnsafeRawBufferPointer)
    /// True once the rest of the body cannot change what the scanner found, so it is only read and dropped.
    var isFinished: Bool { get }
}

/// What is left of a body over the limit: its size as the content header announced it, its first bytes, and
/// the scanner that saw all of it.
public struct AMQPOversizedBody: Sendable {
    public let size: UInt64
    public let excerpt: [UInt8]
    public let scanner: any AMQPBodyScanner
}
