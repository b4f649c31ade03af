import Glibc

/// A file holding the transport URL (`--transport-url-file`). It must be private to its owner: a
/// password in a file that others can read is as good as public.
public enum TransportURLFile {
    /// Longer than any list of broker URLs; a bigger file is the wrong file.
    static let maximumBytes = 64 * 1024

    /// Reads the URL text, refusing a file that group or others may access.
    ///
    /// The mode is checked on the opened file, not on its name: a symbolic link (Kubernetes mounts its
    /// secrets that way) is judged by the file it points to, and nothing can swap the file between the
    /// check and the read.
    public static func read(_ path: String) throws(AMQPError) -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure(path, "cannot open it: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw failure(path, "cannot stat it: \(String(cString: strerror(errno)))")
        }
        try checkPrivate(mode: info.st_mode, path: path)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(path, "cannot read it: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += chunk[..<count]
            guard bytes.count <= maximumBytes else { throw failure(path, "it is larger than \(maximumBytes) bytes") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw failure(path, "it is not UTF-8 text") }
        return text
    }

    /// Accepts a regular file with no permissions for group or others (0600, 0400).
    public static func checkPrivate(mode: mode_t, path: String) throws(AMQPError) {
        guard mode & S_IFMT == S_IFREG else { throw failure(path, "it is not a regular file") }
        let permissions = mode & 0o7777
        guard permissions & 0o077 == 0 else {
            let octal = String(permissions, radix: 8)
            throw failure(
                path,
                "it has mode \(String(repeating: "0", count: max(0, 4 - octal.count)) + octal), so others can read the password; make it private with chmod 600 \(path)"
            )
        }
    }

    private static func failure(_ path: String, _ reason: String) -> AMQPError {
        AMQPError(.invalidURL, "--transport-url-file '\(path)': \(reason)")
    }
}
