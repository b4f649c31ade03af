import BerthDiskImage

/// Raw DEFLATE streams as qcow2 compressed clusters carry them. The first byte picks the output size (a
/// cluster of 512 bytes to 64 KiB, as cluster_bits 9...16); the rest is the stream. The output buffer is
/// exactly that size, so AddressSanitizer sees any write past a cluster. The same decoder then decodes the
/// stream again, as the writer reuses one decoder for every cluster: state left from a previous block or
/// stream must not change the result.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let capacity = 512 << Int(data[0] % 8)
    let stream = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let decoder = InflateDecoder()
    let output = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    defer { output.deallocate() }
    let first = Result { () throws(InflateError) in try decoder.decompress(stream, into: output) }
    let firstBytes = [UInt8](output)
    let second = Result { () throws(InflateError) in try decoder.decompress(stream, into: output) }
    switch (first, second) {
    case (.success(let a), .success(let b)):
        if a != b || !firstBytes[0..<a.bytesWritten].elementsEqual(output[0..<b.bytesWritten]) {
            fuzzViolation("a reused decoder decoded the same stream differently (\(a) then \(b))")
        }
    case (.failure(let a), .failure(let b)):
        if a != b { fuzzViolation("a reused decoder failed differently: '\(a)' then '\(b)'") }
    default:
        fuzzViolation("a reused decoder changed its verdict: \(first) then \(second)")
    }
    return 0
}
