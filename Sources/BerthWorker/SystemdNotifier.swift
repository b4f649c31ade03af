import Foundation
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per state change to the socket
/// in `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Outside systemd there is no socket and
/// every call does nothing.
public struct SystemdNotifier: Sendable {
    let socketPath: String?
    /// Half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises; nil when the unit has no `WatchdogSec=`
    /// or the watchdog is meant for another process (`$WATCHDOG_PID`).
    public let watchdogInterval: Duration?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        let forUs = environment["WATCHDOG_PID"].map { $0 == String(getpid()) } ?? true
        if path != nil, forUs, let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 {
            watchdogInterval = .microseconds(Int64(clamping: usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    public var isEnabled: Bool { socketPath != nil }

    /// Sends `READY=1`, `STATUS=...`, ... lines; false when there is no socket or the send failed (systemd
    /// is gone: nothing a worker could do about it).
    @discardableResult
    public func notify(_ lines: String...) -> Bool {
        guard let socketPath else { return false }
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        // An abstract socket: a leading NUL instead of '@', and the length covers exactly the name.
        if path.first == UInt8(ascii: "@") { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path.first == 0 ? 0 : 1))
        let message = Array(lines.joined(separator: "\n").utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                message.withUnsafeBytes { bytes in
                    sendto(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
        return sent == message.count
    }
}

/// Tells systemd how the worker is doing, for `Type=notify` units: `READY=1` once the queues are consumed
/// (the caller sends it before the group runs), `STATUS=` with the requests in flight, `WATCHDOG=1` at half
/// of `WatchdogSec=` while the event loop turns, `STOPPING=1` when the drain starts.
public struct SystemdStatusService: Service {
    let notifier: SystemdNotifier
    let inFlight: @Sendable () -> Int
    let logger: Logger

    public init(notifier: SystemdNotifier, logger: Logger, inFlight: @escaping @Sendable () -> Int) {
        self.notifier = notifier
        self.inFlight = inFlight
        self.logger = logger
    }

    public func run() async throws {
        guard notifier.isEnabled else { return }
        let interval = min(notifier.watchdogInterval ?? .seconds(5), .seconds(5))
        await withGracefulShutdownHandler {
            while !Task.isCancelled, !Task.isShuttingDownGracefully {
                var lines = ["STATUS=consuming; \(inFlight()) requests in flight"]
                if notifier.watchdogInterval != nil { lines.append("WATCHDOG=1") }
                notifier.notify(lines.joined(separator: "\n"))
                try? await Task.sleep(for: interval)
            }
        } onGracefulShutdown: {
            notifier.notify("STOPPING=1", "STATUS=draining; \(inFlight()) requests in flight")
        }
    }
}

/// SIGHUP, systemd's reload signal: by default it ends a process, and systemd counts that as a clean exit.
/// The worker catches it, says so, and goes on serving; the configuration it was started with stays.
public final class ReloadSignal {
    private let source: any DispatchSourceSignal

    public init(logger: Logger, onReload: @escaping @Sendable () -> Void = {}) {
        signal(SIGHUP, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler {
            logger.notice("SIGHUP: reload requested; the worker keeps serving")
            onReload()
        }
        source.resume()
    }

    deinit {
        source.cancel()
    }
}
