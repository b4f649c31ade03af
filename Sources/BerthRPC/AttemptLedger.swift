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
/// It also remembers the last `settledLimit` requests that were answered (reply and events confirmed by the
/// broker) just before their ack: a crash between that point and the broker taking the ack redelivers a
/// request whose outcome is already out, and the worker acks it again instead of running it (and emitting
/// its events) a second time.
///
/// On disk: one append-only log, `ledger.log`, a line `<sha256 of the oslo _unique_id> <count>` per change
/// (count 0: forgotten; `done`: settled, see above), so a request costs two small appends to the page cache and no file of its own.
/// A file per request (create, rename, unlink) cost ~650 µs of journal and discard work on an ext4 disk,
/// serialised behind this ledger's lock, and capped a worker at a few hundred requests per second whatever
/// the request. Each `write(2)` is whole or absent when the process dies, which is the failure that matters
/// here (a request that kills its worker); the old layout did not fsync either. A new ledger reads the log
/// back (the last line for a digest wins; an unfinished last line is ignored), also picks up counts left as
/// one file per request by earlier versions, and rewrites the log with only the open entries, as it does
/// whenever the log has grown past `compactionBytes`. One worker process owns a state directory at a time
/// (as the docs say: each worker keeps its own count). Names are digests, never a name from the bus. Without
/// a directory (tests, `--state-dir` unwritable) counts live in memory only.
final class AttemptLedger: Sendable {
    let directory: String?
    private let state: Mutex<State>

    static let logName = "ledger.log"
    /// Rewrite the log once this much was appended; a rewrite costs one small file of the open entries.
    static let compactionBytes = 1 << 20

    /// Settled requests remembered; a redelivery comes within seconds of the crash, so a few thousand cover
    /// every request a worker can have in hand.
    static let settledLimit = 4096

    private struct State {
        var counts: [String: Int] = [:]
        var settled = SettledSet()
        /// The log, open for appending; -1 without a directory or when it cannot be written.
        var log: Int32 = -1
        var appended = 0
    }

    init(directory: String?) {
        self.directory = directory
        var initial = State()
        if let directory {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            (initial.counts, initial.settled) = Self.recover(directory)
            initial.log = Self.rewrite(directory, initial.counts, initial.settled)
        }
        state = Mutex(initial)
    }

    deinit {
        state.withLock { state in
            if state.log >= 0 { close(state.log) }
        }
    }

    /// Records one more start of `key` and returns how many starts it has had, this one included.
    func begin(_ key: String) -> Int {
        let name = Self.fileName(key)
        return state.withLock { state in
            let count = (state.counts[name] ?? 0) + 1
            state.counts[name] = count
            record(name, String(count), in: &state)
            return count
        }
    }

    /// How many starts `key` has had that did not finish.
    func count(_ key: String) -> Int {
        let name = Self.fileName(key)
        return state.withLock { $0.counts[name] ?? 0 }
    }

    /// The request's outcome (reply, dead letter, events) is confirmed by the broker and it is about to be
    /// acked: forget its count and remember it as settled.
    func finish(_ key: String) {
        let name = Self.fileName(key)
        state.withLock { state in
            state.counts[name] = nil
            guard state.settled.insert(name, limit: Self.settledLimit) else { return }
            record(name, "done", in: &state)
        }
    }

    /// The request left this worker unanswered but not for a fault of its own (handed on to the pool): forget
    /// its count without marking it settled, since its copy must still run.
    func forget(_ key: String) {
        let name = Self.fileName(key)
        state.withLock { state in
            guard state.counts.removeValue(forKey: name) != nil else { return }
            record(name, "0", in: &state)
        }
    }

    /// True when `key` was settled (answered and about to be acked) by this worker before.
    func isSettled(_ key: String) -> Bool {
        let name = Self.fileName(key)
        return state.withLock { $0.settled.contains(name) }
    }

    /// The worker handed the request back unfinished (a drain, a lost connection): that start was no fault
    /// of the request's, so it does not count.
    func handBack(_ key: String) {
        let name = Self.fileName(key)
        state.withLock { state in
            guard let current = state.counts[name] else { return }
            let count = max(0, current - 1)
            state.counts[name] = count == 0 ? nil : count
            record(name, String(count), in: &state)
        }
    }

    static func fileName(_ key: String) -> String { SHA256Digest.hex(Array(key.utf8)) }

    // MARK: the log

    private func record(_ name: String, _ value: String, in state: inout State) {
        guard let directory, state.log >= 0 else { return }
        let line = Array("\(name) \(value)\n".utf8)
        let written = line.withUnsafeBytes { bytes -> Int in
            var done = 0
            while done < bytes.count {
                let n = write(state.log, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return done }
                done += n
            }
            return done
        }
        state.appended += written
        if written < line.count || state.appended >= Self.compactionBytes {
            // A failed append (disk full) or a long log: start a fresh log from what is in memory.
            close(state.log)
            state.log = Self.rewrite(directory, state.counts, state.settled)
            state.appended = 0
        }
    }

    /// Counts from the log and from per-request files of earlier versions (removed once the log has them).
    private static func recover(_ directory: String) -> ([String: Int], SettledSet) {
        var counts: [String: Int] = [:]
        var settled = SettledSet()
        if let data = FileManager.default.contents(atPath: "\(directory)/\(logName)") {
            // Lines end with "\n"; a last line without one was cut short by a crash.
            for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
            where data.last == UInt8(ascii: "\n") || line.endIndex != data.endIndex {
                let fields = line.split(separator: UInt8(ascii: " "))
                guard fields.count == 2, isDigest(fields[0]), let text = String(bytes: fields[1], encoding: .utf8)
                else { continue }
                let name = String(decoding: fields[0], as: UTF8.self)
                if text == "done" {
                    counts[name] = nil
                    settled.insert(name, limit: settledLimit)
                } else if let count = Int(text), count >= 0 {
                    counts[name] = count == 0 ? nil : count
                }
            }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where isDigest(Array(name.utf8)[...]) {
            if let data = FileManager.default.contents(atPath: "\(directory)/\(name)"),
                let count = Int(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                count > 0
            {
                counts[name] = max(counts[name] ?? 0, count)
            }
        }
        return (counts, settled)
    }

    /// Writes the open entries to a new log, puts it in place with rename, removes per-request files of
    /// earlier versions, and returns the new log open for appending (-1 if it cannot be written).
    private static func rewrite(_ directory: String, _ counts: [String: Int], _ settled: SettledSet) -> Int32 {
        let path = "\(directory)/\(logName)"
        let temporary = "\(directory)/.\(logName).tmp"
        let text = settled.names.map { "\($0) done\n" }.joined() + counts.map { "\($0.key) \($0.value)\n" }.joined()
        guard (try? Data(text.utf8).write(to: URL(fileURLWithPath: temporary))) != nil,
            rename(temporary, path) == 0
        else {
            unlink(temporary)
            return -1
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        where isDigest(Array(name.utf8)[...]) {
            unlink("\(directory)/\(name)")
        }
        return open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
    }

    private static func isDigest<S: Collection>(_ bytes: S) -> Bool where S.Element == UInt8 {
        bytes.count == 64
            && bytes.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

/// The newest settled request names, oldest first, at most `limit` of them.
struct SettledSet {
    private(set) var names: [String] = []
    private var members: Set<String> = []

    func contains(_ name: String) -> Bool { members.contains(name) }

    /// False when it was there already.
    @discardableResult
    mutating func insert(_ name: String, limit: Int) -> Bool {
        guard members.insert(name).inserted else { return false }
        names.append(name)
        if names.count > limit + limit / 4 {
            for old in names.prefix(names.count - limit) { members.remove(old) }
            names.removeFirst(names.count - limit)
        }
        return true
    }
}
