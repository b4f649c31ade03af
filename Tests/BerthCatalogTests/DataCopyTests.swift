import BerthDigest
import Foundation
import Testing

@testable import BerthCatalog

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct DataCopyTests {
    /// Copying a sparse file keeps its bytes and its holes: data, a 6 MiB hole, data, a trailing hole.
    @Test func sparseCopyKeepsContentAndHoles() throws {
        let directory = try TemporaryDirectory()
        let source = "\(directory.path)/sparse.img"
        let head = patternBytes(70_000)
        let middle = patternBytes(3000, seed: 7)
        let size = 16 << 20
        let fd = open(source, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        #expect(fd >= 0)
        head.withUnsafeBytes { _ = pwrite(fd, $0.baseAddress, $0.count, 0) }
        middle.withUnsafeBytes { _ = pwrite(fd, $0.baseAddress, $0.count, 6 << 20) }
        ftruncate(fd, off_t(size))
        close(fd)

        let input = try Files.open(source, O_RDONLY, action: "open")
        let output = try Files.open("\(directory.path)/copy.img", O_WRONLY | O_CREAT, action: "create")
        let copied = try DataCopy.copy(from: .descriptor(input), to: output, hashing: false, sparse: true)
        #expect(copied.size == Int64(size))
        output.closeQuietly()

        let original = try Data(contentsOf: URL(fileURLWithPath: source))
        let copy = try Data(contentsOf: URL(fileURLWithPath: "\(directory.path)/copy.img"))
        #expect(copy == original)
        var info = stat()
        stat("\(directory.path)/copy.img", &info)
        #expect(Int(info.st_blocks) * 512 < size / 2, "the copy should keep the holes")
    }

    @Test func hashedCopyDigestsEveryByte() throws {
        let directory = try TemporaryDirectory()
        let bytes = [UInt8](repeating: 0, count: (1 << 20) + 3) + patternBytes(10)
        let output = try Files.open("\(directory.path)/out", O_WRONLY | O_CREAT, action: "create")
        let copied = try DataCopy.copy(from: .bytes(bytes), to: output, hashing: true, sparse: true)
        #expect(copied.md5 == MD5Digest.hex(bytes))
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(directory.path)/out")) == Data(bytes))
    }
}
