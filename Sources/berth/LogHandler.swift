import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How `berth` writes its log to stderr: `text` (one line per record, as swift-log's stream handler writes it)
/// or `json` (one JSON object per line, for log shippers). Under systemd (`$JOURNAL_STREAM` names stderr) each
/// line starts with its syslog priority, `<3>` ... `<7>`, so `journalctl -p warning` filters on it.
struct BerthLogHandler: LogHandler {
    enum Format: String, CaseIterable, Sendable {
        case text, json
    }

    let label: String
    let journal: Bool
    var metadata: Logger.Metadata = [:]

    /// Shared by every handler of the process, so a reload (SIGHUP) changes them for all loggers at once.
    var logLevel: Logger.Level {
        get { LogSettings.shared.level }
        set { LogSettings.shared.level = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// True when stderr is the journal stream systemd describes in `$JOURNAL_STREAM` (`<device>:<inode>`).
    static func stderrIsJournal(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let stream = environment["JOURNAL_STREAM"] else { return false }
        var status = stat()
        guard fstat(STDERR_FILENO, &status) == 0 else { return false }
        return stream == "\(status.st_dev):\(status.st_ino)"
    }

    func log(event: LogEvent) {
        let level = event.level
        var merged = metadata
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        // Built by appending into one string and written with one write(2): this runs for every request the
        // worker logs, and the interpolations, joined arrays and Foundation `FileHandle`/`Data` it replaced
        // cost ~8 µs a line, 3 % of a ping's CPU at K = 32.
        var text = ""
        text.reserveCapacity(256)
        if journal { text += "<\(Self.syslogPriority(level))>" }
        switch LogSettings.shared.format {
        case .text:
            text += Self.timestamp()
            text += " "
            text += level.rawValue
            text += " "
            text += label
            text += ":"
            for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
                text += " "
                text += key
                text += "="
                text += value.description
            }
            text += " ["
            text += event.source
            text += "] "
            text += event.message.description
        case .json:
            var object: [String: Any] = [
                "time": Self.timestamp(), "level": level.rawValue, "logger": label, "source": event.source,
                "message": event.message.description,
            ]
            for (key, value) in merged where object[key] == nil { object[key] = Self.plain(value) }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            text += String(decoding: data, as: UTF8.self)
        }
        text += "\n"
        text.withUTF8 { Self.writeAll($0) }
    }

    /// Writes the whole line to stderr, retrying a short or interrupted write; a line that cannot be written
    /// (stderr closed, disk full) is dropped, as swift-log's stream handler drops it.
    private static func writeAll(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard var next = UnsafeRawPointer(bytes.baseAddress) else { return }
        var left = bytes.count
        while left > 0 {
            let written = write(STDERR_FILENO, next, left)
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { return }
            next += written
            left -= written
        }
    }

    /// syslog(3) priorities: err 3, warning 4, notice 5, info 6, debug 7.
    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .critical: 2
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }

    private static func plain(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): values.map(plain)
        case .dictionary(let values): values.mapValues(plain)
        }
    }

    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
            let count = strftime(buffer.baseAddress!, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            return buffer.baseAddress!.withMemoryRebound(to: UInt8.self, capacity: count) {
                String(decoding: UnsafeBufferPointer(start: $0, count: count), as: UTF8.self)
            }
        }
    }
}

/// The level and format of every `BerthLogHandler` in the process: set at start, changed by a reload.
final class LogSettings: Sendable {
    static let shared = LogSettings()

    /// Read on every log call of every thread (swift-log asks the handler's level before building a message):
    /// atomics, not a lock, so the check costs a load.
    private let levelIndex = Atomic<Int>(levels.firstIndex(of: .info)!)
    private let formatIndex = Atomic<Int>(formats.firstIndex(of: .text)!)

    /// `allCases` builds a new array on every call: indexed once here instead.
    private static let levels = Logger.Level.allCases
    private static let formats = BerthLogHandler.Format.allCases

    var level: Logger.Level {
        get { Self.levels[levelIndex.load(ordering: .relaxed)] }
        set { levelIndex.store(Self.levels.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    var format: BerthLogHandler.Format {
        get { Self.formats[formatIndex.load(ordering: .relaxed)] }
        set { formatIndex.store(Self.formats.firstIndex(of: newValue)!, ordering: .relaxed) }
    }
}
