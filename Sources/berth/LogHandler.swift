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
        let message = event.message
        let source = event.source
        var merged = metadata
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        var text = journal ? "<\(Self.syslogPriority(level))>" : ""
        switch LogSettings.shared.format {
        case .text:
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            text += "\(Self.timestamp()) \(level) \(label):\(fields.isEmpty ? "" : " " + fields) [\(source)] \(message)"
        case .json:
            var object: [String: Any] = [
                "time": Self.timestamp(), "level": level.rawValue, "logger": label, "source": source,
                "message": message.description,
            ]
            for (key, value) in merged where object[key] == nil { object[key] = Self.plain(value) }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            text += String(decoding: data, as: UTF8.self)
        }
        FileHandle.standardError.write(Data((text + "\n").utf8))
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
        var buffer = [Int8](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The level and format of every `BerthLogHandler` in the process: set at start, changed by a reload.
final class LogSettings: Sendable {
    static let shared = LogSettings()

    /// Read on every log call of every thread (swift-log asks the handler's level before building a message):
    /// an atomic, not a lock, so the check costs a load.
    private let levelIndex = Atomic<Int>(Logger.Level.allCases.firstIndex(of: .info)!)
    private let formatState = Mutex<BerthLogHandler.Format>(.text)

    var level: Logger.Level {
        get { Logger.Level.allCases[levelIndex.load(ordering: .relaxed)] }
        set { levelIndex.store(Logger.Level.allCases.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    var format: BerthLogHandler.Format {
        get { formatState.withLock { $0 } }
        set { formatState.withLock { $0 = newValue } }
    }
}
