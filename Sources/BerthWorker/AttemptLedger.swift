import BerthDigest
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How many times this host has started each request it has not finished, kept on disk so that a request
/// whose handler kills the worker is still counted after the restart (DESIGN §9, "poison").
///
/// A classic queue tells a consumer only *that* a message was delivered before (`redelivered`), not how often;
/// a quorum queue counts (`x-delivery-count`) and the worker takes the larger of the two. The count is per
/// host: in a pool of N workers on classic queues a poison request is tried at most N × `--max-attempts`
/// times before every worker has refused it; on quorum queues the broker's count is shared, so at most
/// `--max-attempts` times in all.
///
/// One small file per request in flight, named by the SHA-256 of its oslo `_unique_id` (never a name from the
/// bus), written with rename so a crash leaves the old count or the new one; removed when the request is
/// acked. Without a directory (tests, `--state-dir` unwritable) counts live in memory only.
final class AttemptLedger: Sendable {
    let directory: String?
    private let memory = Mutex<[String: Int]>([:])

    init(directory: String?) {
        self.directory = directory
        if let directory { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
    }

    /// Records one more start of `key` and returns how many starts it has had, this one included.
    func begin(_ key: String) -> Int {
        let name = Self.fileName(key)
        return memory.withLock { counts in
            let count = max(counts[name] ?? 0, read(name)) + 1
            counts[name] = count
            write(name, count)
            return count
        }
    }

    /// The request was answered and acked: forget it.
    func finish(_ key: String) {
        let name = Self.fileName(key)
        memory.withLock { counts in
            counts[name] = nil
            if let directory { unlink("\(directory)/\(name)") }
        }
    }

    /// The worker handed the request back unfinished (a drain, a lost connection): that start was no fault
    /// of the request's, so it does not count.
    func handBack(_ key: String) {
        let name = Self.fileName(key)
        memory.withLock { counts in
            let count = max(0, (counts[name] ?? read(name)) - 1)
            if count == 0 {
                counts[name] = nil
                if let directory { unlink("\(directory)/\(name)") }
            } else {
                counts[name] = count
                write(name, count)
            }
        }
    }

    static func fileName(_ key: String) -> String { SHA256Digest.hex(Array(key.utf8)) }

    private func read(_ name: String) -> Int {
        guard let directory, let data = FileManager.default.contents(atPath: "\(directory)/\(name)"),
            let text = String(data: data, encoding: .utf8), let count = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return 0 }
        return max(0, count)
    }

    private func write(_ name: String, _ count: Int) {
        guard let directory else { return }
        let temporary = "\(directory)/.\(name).tmp"
        guard (try? Data("\(count)\n".utf8).write(to: URL(fileURLWithPath: temporary))) != nil else { return }
        rename(temporary, "\(directory)/\(name)")
    }
}
