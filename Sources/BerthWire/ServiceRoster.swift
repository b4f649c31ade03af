import Foundation

/// The pool as its reports tell it: the last report of each worker, and whether it is up, draining or down.
/// Nova's servicegroup rule: a service whose last report is older than `service_down_time` is down. A worker
/// whose last report says `stopped` shut down cleanly and is gone from the list.
public struct ServiceRoster: Sendable {
    public enum Status: String, Sendable, Equatable, CaseIterable {
        case up, draining, down
    }

    public struct Entry: Sendable, Equatable {
        public var report: ServiceReport
        /// When the worker sent it (the notification's timestamp, the worker's clock).
        public var sentAt: Date
        public var status: Status
        /// Seconds since the report, by the reader's clock (negative when the worker's clock is ahead).
        public var age: Double
    }

    /// A worker is one host name serving one topic of one control exchange.
    struct Key: Hashable {
        var controlExchange: String
        var topic: String
        var host: String
    }

    private var latest: [Key: (report: ServiceReport, sentAt: Date)] = [:]

    public init() {}

    /// Keeps `report` unless a later one of the same worker is already held (reports can arrive out of order
    /// across a cluster's nodes).
    public mutating func add(_ report: ServiceReport, sentAt: Date) {
        let key = Key(controlExchange: report.controlExchange, topic: report.topic, host: report.host)
        if let held = latest[key], held.sentAt > sentAt { return }
        latest[key] = (report, sentAt)
    }

    /// Every worker not gone, ordered by control exchange, topic and host.
    public func entries(now: Date, serviceDownTime: Double) -> [Entry] {
        latest.sorted { lhs, rhs in
            (lhs.key.controlExchange, lhs.key.topic, lhs.key.host) < (
                rhs.key.controlExchange, rhs.key.topic, rhs.key.host
            )
        }.compactMap { _, held in
            let age = now.timeIntervalSince(held.sentAt)
            let status: Status
            switch held.report.state {
            case .stopped: return nil
            case _ where age > serviceDownTime: status = .down
            case .draining: status = .draining
            case .up: status = .up
            }
            return Entry(report: held.report, sentAt: held.sentAt, status: status, age: age)
        }
    }
}
