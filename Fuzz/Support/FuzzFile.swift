import Glibc

/// The fuzz input as a file, for the parsers that take a path: they open and read it exactly as they open an
/// image or a node's disk. Files live in one directory per process (`BERTH_FUZZ_TMPDIR`, else tmpfs at
/// /dev/shm, or /tmp where there is none), rewritten on every run and removed at exit. A crash leaves the
/// directory behind, holding the file the parser saw.
enum FuzzFile {
    nonisolated(unsafe) private static var directory: String?
    nonisolated(unsafe) private static var created: [String] = []

    /// Writes `bytes` to the file `name` (replacing what the previous run left) and, when `size` is larger,
    /// extends it with a sparse tail of zeros, as a disk bigger than the image written to it.
    static func write(_ bytes: [UInt8], name: String, size: UInt64 = 0) -> String {
        let path = workDirectory() + "/" + name
        if !created.contains(path) { created.append(path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { fatalError("fuzz harness: cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            guard result > 0 else {
                fatalError("fuzz harness: cannot write \(path): \(String(cString: strerror(errno)))")
            }
            done += result
        }
        if size > UInt64(bytes.count) {
            guard ftruncate(fd, off_t(size)) == 0 else { fatalError("fuzz harness: cannot extend \(path)") }
        }
        return path
    }

    /// The file's size now, to check that a parser did not grow a disk it was meant to stay inside.
    static func size(_ path: String) -> UInt64 {
        var status = stat()
        guard stat(path, &status) == 0 else { fatalError("fuzz harness: cannot stat \(path)") }
        return UInt64(status.st_size)
    }

    private static func workDirectory() -> String {
        if let directory { return directory }
        let base =
            getenv("BERTH_FUZZ_TMPDIR").map { String(cString: $0) }
            ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp")
        var template = Array("\(base)/berth-fuzz-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            fatalError("fuzz harness: cannot create a directory in \(base): \(String(cString: strerror(errno)))")
        }
        let path = String(cString: made)
        directory = path
        atexit { FuzzFile.removeAll() }
        return path
    }

    private static func removeAll() {
        for path in created { unlink(path) }
        if let directory { rmdir(directory) }
    }
}

/// The bytes libFuzzer hands a target, as the `[UInt8]` the parsers take.
func fuzzBytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
    Array(UnsafeBufferPointer(start: data, count: size))
}

/// Stops the run as a crash when a parser broke a promise that is not a trap by itself (a disk file that grew,
/// a partition placed over another): libFuzzer records the input like any other crash.
func fuzzViolation(_ message: String) -> Never {
    fatalError("fuzz property violated: \(message)")
}
