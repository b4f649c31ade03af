import BerthJSON
import BerthRPC
import Foundation
import Synchronization

/// What a command that waits for the bus says on stderr, so a boot that takes minutes is never silent: a line
/// when the wait starts and one when it ends, with the time taken. On a terminal the start line also counts
/// the seconds, redrawn in place; in a log (not a terminal) it is two plain lines.
final class WaitProgress: Sendable {
    private let started = ContinuousClock.now
    private let terminal: Bool
    /// Set once `finish` has written: the ticker must not redraw over the last line.
    private let finished = Mutex(false)

    init(_ what: String, terminal: Bool = isatty(STDERR_FILENO) != 0) {
        self.terminal = terminal
        Self.write("berth: \(what)" + (terminal ? "" : "\n"))
        guard terminal else { return }
        Task { [self] in
            while true {
                try? await Task.sleep(for: .seconds(1))
                let done = finished.withLock { done in
                    if !done { Self.write("\r\u{1B}[Kberth: \(what) (\(elapsed))") }
                    return done
                }
                if done { return }
            }
        }
    }

    /// "12.3 s" since the wait started.
    var elapsed: String { String(format: "%.1f s", Double((ContinuousClock.now - started) / .milliseconds(1)) / 1000) }

    /// Ends the wait with `outcome` (e.g. "instance ... is ACTIVE") and the time it took.
    func finish(_ outcome: String) {
        finished.withLock { done in
            done = true
            Self.write((terminal ? "\r\u{1B}[K" : "") + "berth: \(outcome) after \(elapsed)\n")
        }
    }

    /// Ends the wait without an outcome line: the failure that ended it is reported on its own.
    func abandon() {
        finished.withLock { done in
            done = true
            if terminal { Self.write("\n") }
        }
    }

    private static func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}

extension OsloRPCClient {
    /// `call` for a command that waits a long time: says on stderr what it waits for (`waiting`) and, when the
    /// answer comes, `outcome` of it and the time taken. A result that is not an object comes back as
    /// `{"result": ...}`, so it still prints as a record.
    func call(
        _ method: String, args: JSONObject, server: String?, until deadline: ContinuousClock.Instant,
        waiting: String, outcome: (JSONObject) -> String
    ) async throws(RPCCallError) -> JSONObject {
        let progress = WaitProgress(waiting)
        let result: JSONValue
        do {
            result = try await call(method, args: args, server: server, timeout: remaining(until: deadline))
        } catch {
            progress.abandon()
            throw error
        }
        let record = result.objectValue ?? ["result": result]
        progress.finish(outcome(record))
        return record
    }
}
