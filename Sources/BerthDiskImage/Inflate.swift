import CZlib

public struct InflateError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct InflateResult: Sendable, Equatable {
    /// Bytes written to the output.
    public var bytesWritten: Int
    /// The stream's final block ended; false when the output filled first.
    public var streamEnded: Bool
}

/// Raw DEFLATE (RFC 1951, no zlib header), as qcow2 stores compressed clusters: zlib's `inflate`, the decoder
/// QEMU itself uses, fuzzed continuously upstream. One `z_stream` per decoder, reset for every stream, so a
/// deploy inflating thousands of clusters allocates zlib's window once. Not thread-safe: one per reader.
public final class InflateDecoder {
    private let stream: UnsafeMutablePointer<z_stream>

    public init() {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // A 32 KiB window (-15) takes every raw stream; QEMU writes qcow2 clusters with a 4 KiB one (-12).
        let status = inflateInit2_(stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(status == Z_OK, "zlib inflateInit2 failed (\(status)): out of memory")
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Inflates a whole stream of at most `limit` bytes.
    public func decompress(_ input: [UInt8], limit: Int) throws(InflateError) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: limit)
        var outcome: Result<InflateResult, InflateError> = .failure(InflateError("not decoded"))
        input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { target in
                outcome = Result { () throws(InflateError) in try decompress(source, into: target) }
            }
        }
        let result = try outcome.get()
        guard result.streamEnded else {
            throw InflateError("the deflate stream produces more than \(limit) bytes")
        }
        output.removeLast(limit - result.bytesWritten)
        return output
    }

    /// Inflates `input` into `output` until the stream ends or `output` is full. Bytes after the stream's end
    /// are ignored (a qcow2 entry is rounded up to whole sectors); a stream that stops before its end, or
    /// that zlib finds corrupt, is an error with zlib's words.
    public func decompress(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(InflateError) -> InflateResult {
        guard let target = output.baseAddress, output.count > 0 else {
            return InflateResult(bytesWritten: 0, streamEnded: false)
        }
        guard let inputCount = UInt32(exactly: input.count), let outputCount = UInt32(exactly: output.count) else {
            throw InflateError("a deflate stream or its output of 4 GiB or more")
        }
        inflateReset(stream)
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = inputCount
        stream.pointee.next_out = target.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = outputCount
        let status = inflate(stream, Z_FINISH)
        let written = output.count - Int(stream.pointee.avail_out)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.next_out = nil
        }
        switch status {
        case Z_STREAM_END:
            return InflateResult(bytesWritten: written, streamEnded: true)
        case Z_OK where stream.pointee.avail_out == 0, Z_BUF_ERROR where stream.pointee.avail_out == 0:
            return InflateResult(bytesWritten: written, streamEnded: false)
        case Z_OK, Z_BUF_ERROR:
            throw InflateError("the deflate stream stops after \(written) bytes, before its final block ends")
        case Z_MEM_ERROR:
            throw InflateError("out of memory inflating")
        default:
            let reason = stream.pointee.msg.map { String(cString: $0) } ?? "error \(status)"
            throw InflateError("corrupt deflate stream: \(reason)")
        }
    }
}
