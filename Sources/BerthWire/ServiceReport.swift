import BerthJSON
import Foundation

/// What a worker says about itself every report interval: the payload of a `berth.service.report`
/// notification on the `berth.services` exchange (contracts/schemas/events/berth.service.report.json).
/// Nova's servicegroup keeps the same facts in its database; here they travel on the bus, so `berth hosts`
/// needs nothing but the broker.
public struct ServiceReport: Sendable, Equatable, Codable {
    public static let eventType = "berth.service.report"

    public enum State: String, Sendable, Equatable, Codable, CaseIterable {
        /// Consuming and working.
        case up
        /// SIGTERM received: no new requests, finishing the ones in hand.
        case draining
        /// The last report of a clean shutdown: the worker is gone, not down.
        case stopped
    }

    /// vCPUs and memory, as libvirt reports them.
    public struct Resources: Sendable, Equatable, Codable {
        public var vcpus: Int
        public var memoryMB: Int

        public init(vcpus: Int, memoryMB: Int) {
            self.vcpus = vcpus
            self.memoryMB = memoryMB
        }

        enum CodingKeys: String, CodingKey {
            case vcpus
            case memoryMB = "memory_mb"
        }
    }

    public var host: String
    public var topic: String
    public var controlExchange: String
    public var state: State
    public var version: String
    /// Random per process: a restarted worker with the same host name is told from its predecessor.
    public var instanceID: String
    public var pid: Int
    public var uptimeSeconds: Double
    public var reportIntervalSeconds: Double
    /// `host:port` of the broker node the worker's RPC connection is on; nil while it reconnects.
    public var broker: String?
    public var concurrency: Int
    public var inFlight: Int
    /// Nil when libvirt could not be asked (it is down or restarting): unknown, not zero.
    public var capacity: Resources?
    public var free: Resources?
    public var instances: Int?

    public init(
        host: String, topic: String, controlExchange: String, state: State, version: String, instanceID: String,
        pid: Int, uptimeSeconds: Double, reportIntervalSeconds: Double, broker: String?, concurrency: Int,
        inFlight: Int, capacity: Resources? = nil, free: Resources? = nil, instances: Int? = nil
    ) {
        self.host = host
        self.topic = topic
        self.controlExchange = controlExchange
        self.state = state
        self.version = version
        self.instanceID = instanceID
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.reportIntervalSeconds = reportIntervalSeconds
        self.broker = broker
        self.concurrency = concurrency
        self.inFlight = inFlight
        self.capacity = capacity
        self.free = free
        self.instances = instances
    }

    enum CodingKeys: String, CodingKey {
        case host, topic, state, version, pid, broker, concurrency, capacity, free, instances
        case controlExchange = "control_exchange"
        case instanceID = "instance_id"
        case uptimeSeconds = "uptime_s"
        case reportIntervalSeconds = "report_interval_s"
        case inFlight = "in_flight"
    }

    /// The notification a worker publishes: `publisher_id` `compute.<host>`, priority info.
    public func notification(at date: Date = Date()) throws -> OsloNotification {
        OsloNotification(
            publisherID: "compute.\(host)", eventType: Self.eventType, priority: .info,
            payload: try JSONValueEncoder().encode(self), timestamp: date)
    }

    /// The report a `berth.service.report` notification carries, checked field by field: a report comes from
    /// the bus, and a reader prints and sorts what it holds.
    public static func decode(_ notification: OsloNotification) throws(WireError) -> ServiceReport {
        guard notification.eventType == eventType else {
            throw WireError(.badField, "event_type '\(notification.eventType.prefix(64))' is not \(eventType)")
        }
        let report: ServiceReport
        do {
            report = try JSONValueDecoder().decode(ServiceReport.self, from: notification.payload)
        } catch {
            throw WireError(.badField, "\(eventType) payload does not match its contract: \(error)")
        }
        try report.validate()
        return report
    }

    func validate() throws(WireError) {
        for (field, text, limit) in [
            ("host", host, 128), ("topic", topic, 255), ("control_exchange", controlExchange, 255),
            ("version", version, 64), ("instance_id", instanceID, 64), ("broker", broker ?? "-", 300),
        ] {
            guard !text.isEmpty, text.utf8.count <= limit, text.unicodeScalars.allSatisfy(Self.isPrintable) else {
                throw WireError(.badField, "\(Self.eventType) \(field) must be 1-\(limit) printable bytes")
            }
        }
        let counts = [
            ("pid", pid), ("concurrency", concurrency), ("in_flight", inFlight), ("instances", instances ?? 0),
            ("capacity.vcpus", capacity?.vcpus ?? 0), ("capacity.memory_mb", capacity?.memoryMB ?? 0),
            ("free.vcpus", free?.vcpus ?? 0), ("free.memory_mb", free?.memoryMB ?? 0),
        ]
        for (field, value) in counts where value < 0 {
            throw WireError(.badField, "\(Self.eventType) \(field) is \(value); it must not be negative")
        }
        for (field, value) in [("uptime_s", uptimeSeconds), ("report_interval_s", reportIntervalSeconds)]
        where !(value.isFinite && value >= 0) {
            throw WireError(.badField, "\(Self.eventType) \(field) must be a number of seconds, 0 or more")
        }
    }

    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value >= 0x20 && scalar.value != 0x7F
    }
}
