import BerthJSON
import BerthWire
import Foundation

/// What `berth monitor --by` groups samples by.
public enum MetricsGrouping: String, Sendable, Hashable, CaseIterable {
    case imageID = "image_id"
    case host
    case flavor

    public func key(of sample: MetricsSample) -> String {
        switch self {
        case .imageID: sample.imageID
        case .host: sample.host
        case .flavor: sample.flavor
        }
    }
}

/// Count, sum, mean and max of one metric in one group; for a cumulative counter also its rate.
public struct MetricsAggregate: Sendable, Equatable {
    /// One instance's counter over the window: how much it grew between its first and last reading.
    struct Growth: Sendable, Equatable {
        var first: Date
        var last: Date
        var reading: Double
        var increase = 0.0
    }

    public private(set) var count = 0
    public private(set) var sum = 0.0
    public private(set) var max = -Double.infinity
    public var unit: String
    public var type: MetricsSample.Kind
    private var growth: [String: Growth] = [:]

    public init(unit: String, type: MetricsSample.Kind) {
        self.unit = unit
        self.type = type
    }

    public var mean: Double { count == 0 ? 0 : sum / Double(count) }

    public mutating func add(_ value: Double) {
        count += 1
        sum += value
        max = Swift.max(max, value)
    }

    /// Follows one instance's cumulative reading. A lower reading than the last is a counter that started
    /// again (the domain restarted): its growth since then is the reading itself. Readings not newer than the
    /// last one (a batch that arrived late) are left out of the rate.
    mutating func follow(instance: String, reading: Double, at time: Date) {
        guard var known = growth[instance] else {
            growth[instance] = Growth(first: time, last: time, reading: reading)
            return
        }
        guard time > known.last else { return }
        known.increase += reading >= known.reading ? reading - known.reading : reading
        known.reading = reading
        known.last = time
        growth[instance] = known
    }

    /// Units per second the group's instances added up over the window (each instance's growth over its own
    /// first-to-last interval, summed); nil for a gauge, or before any instance has two readings.
    public var rate: Double? {
        let rates = growth.values.compactMap { known -> Double? in
            let seconds = known.last.timeIntervalSince(known.first)
            return seconds > 0 ? known.increase / seconds : nil
        }
        return rates.isEmpty ? nil : rates.reduce(0, +)
    }
}

/// Adds up `berth.metrics` samples per group (image, host or flavor) and metric.
///
/// Every sample is added as it is received, cumulative counters included: the figures then equal what any other
/// listener computes from the same samples, which is what lets a test (or an operator) reconcile the two. For a
/// cumulative counter the sum is therefore a sum of readings, not a total of work; its max is the largest reading
/// (the busiest instance's counter), and `count / instances` says how many polls each instance contributed.
public struct MetricsAggregator: Sendable {
    public struct Group: Sendable, Equatable {
        public var metrics: [String: MetricsAggregate] = [:]
        public var instances: Set<String> = []
    }

    public let grouping: MetricsGrouping
    /// Metric names to keep; empty keeps all.
    public let metricNames: Set<String>
    public private(set) var groups: [String: Group] = [:]
    /// `berth.metrics` notifications aggregated (duplicates not counted).
    public private(set) var notifications = 0
    public private(set) var samples = 0
    /// Payload entries that were not usable samples (no image id, value not a number, ...).
    public private(set) var rejected = 0
    /// Notifications of other event types on the same topic, or bodies that were not oslo notifications.
    public private(set) var ignored = 0
    /// Redelivered or republished notifications, recognised by `message_id` and not added twice.
    public private(set) var duplicates = 0
    /// The `message_id` of each aggregated notification in arrival order, when asked to keep them.
    public private(set) var messageIDs: [String] = []
    private let keepsMessageIDs: Bool
    private var recentIDs: Set<String> = []
    private var recentOrder: [String] = []
    /// Duplicates arrive within seconds (a republish after a lost confirm, a redelivery after a reconnect), so
    /// remembering the latest ids is enough and keeps a long-running monitor's memory flat.
    private let dedupWindow = 65_536

    public init(grouping: MetricsGrouping, metricNames: Set<String> = [], keepsMessageIDs: Bool = false) {
        self.grouping = grouping
        self.metricNames = metricNames
        self.keepsMessageIDs = keepsMessageIDs
    }

    /// Adds a decoded notification; anything but `berth.metrics` is counted as ignored.
    public mutating func add(_ notification: OsloNotification) {
        guard notification.eventType == MetricsBatch.eventType else {
            ignored += 1
            return
        }
        guard remember(notification.messageID) else {
            duplicates += 1
            return
        }
        notifications += 1
        if keepsMessageIDs { messageIDs.append(notification.messageID) }
        let (batch, bad) = MetricsBatch.samples(from: notification.payload)
        rejected += bad
        for sample in batch { add(sample) }
    }

    /// Adds an AMQP body as the monitor receives it: an oslo envelope (or a bare v1 dict) around a notification.
    public mutating func add(body: [UInt8], limits: JSONLimits = .default) {
        do {
            add(try OsloNotification.decode(OsloEnvelope.unwrap(body, limits: limits)))
        } catch {
            ignored += 1
        }
    }

    public mutating func add(_ sample: MetricsSample) {
        guard metricNames.isEmpty || metricNames.contains(sample.name) else { return }
        samples += 1
        let key = grouping.key(of: sample)
        groups[key, default: Group()].instances.insert(sample.instanceUUID)
        var aggregate = groups[key]?.metrics[sample.name] ?? MetricsAggregate(unit: sample.unit, type: sample.type)
        aggregate.add(sample.value)
        if sample.type == .cumulative {
            aggregate.follow(instance: sample.instanceUUID, reading: sample.value, at: sample.timestamp)
        }
        groups[key, default: Group()].metrics[sample.name] = aggregate
    }

    private mutating func remember(_ id: String) -> Bool {
        guard recentIDs.insert(id).inserted else { return false }
        recentOrder.append(id)
        if recentOrder.count > dedupWindow * 2 {
            let dropped = recentOrder.prefix(recentOrder.count - dedupWindow)
            recentIDs.subtract(dropped)
            recentOrder.removeFirst(dropped.count)
        }
        return true
    }

    /// The aggregate as `berth monitor --json` prints it (docs/metrics.md), groups and metrics sorted by name.
    public func json(final: Bool) -> JSONValue {
        var groupsJSON = JSONObject()
        for key in groups.keys.sorted() {
            let group = groups[key]!
            var metricsJSON = JSONObject()
            for name in group.metrics.keys.sorted() {
                let aggregate = group.metrics[name]!
                var metric: JSONObject = [
                    "unit": .string(aggregate.unit), "type": .string(aggregate.type.rawValue),
                    "count": .int(Int64(aggregate.count)), "sum": MetricsSample.number(aggregate.sum),
                    "mean": MetricsSample.number(aggregate.mean), "max": MetricsSample.number(aggregate.max),
                ]
                if aggregate.type == .cumulative { metric["rate"] = aggregate.rate.map(JSONValue.double) ?? .null }
                metricsJSON[name] = .object(metric)
            }
            groupsJSON[key] = ["instances": .int(Int64(group.instances.count)), "metrics": .object(metricsJSON)]
        }
        var result: JSONObject = [
            "by": .string(grouping.rawValue), "final": .bool(final), "notifications": .int(Int64(notifications)),
            "samples": .int(Int64(samples)), "rejected": .int(Int64(rejected)), "ignored": .int(Int64(ignored)),
            "duplicates": .int(Int64(duplicates)), "groups": .object(groupsJSON),
        ]
        if keepsMessageIDs { result["message_ids"] = .array(messageIDs.map(JSONValue.string)) }
        return .object(result)
    }
}

/// The live table of `berth monitor`: one row per group and metric.
public enum MetricsTable {
    public static func render(_ aggregator: MetricsAggregator, now: Date = Date()) -> String {
        let header = [
            aggregator.grouping.rawValue.uppercased(), "INSTANCES", "METRIC", "UNIT", "COUNT", "SUM", "MEAN", "MAX",
            "RATE/S",
        ]
        var rows: [[String]] = []
        for key in aggregator.groups.keys.sorted() {
            let group = aggregator.groups[key]!
            for (index, name) in group.metrics.keys.sorted().enumerated() {
                let aggregate = group.metrics[name]!
                rows.append([
                    index == 0 ? key : "", index == 0 ? String(group.instances.count) : "", name, aggregate.unit,
                    String(aggregate.count), format(aggregate.sum), format(aggregate.mean), format(aggregate.max),
                    aggregate.rate.map(format) ?? "-",
                ])
            }
        }
        // Numbers right-aligned so magnitudes line up; names left-aligned.
        let rightAligned: Set<Int> = [1, 4, 5, 6, 7, 8]
        let widths = header.indices.map { column in
            ([header] + rows).map { $0[column].count }.max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? padding + cell : cell + padding
            }.joined(separator: "  ").trimmingTrailingSpaces()
        }
        var text =
            "berth monitor  by \(aggregator.grouping.rawValue)  \(ISO8601UTC.format(now))  "
            + "notifications \(aggregator.notifications)  samples \(aggregator.samples)"
        if aggregator.rejected > 0 { text += "  rejected \(aggregator.rejected)" }
        text += "\n\n" + line(header) + "\n"
        if rows.isEmpty {
            text += "(no samples yet)\n"
        }
        for row in rows { text += line(row) + "\n" }
        return text
    }

    /// Whole numbers in full up to 15 digits, others with up to 4 significant decimals; beyond that, exponent form.
    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "-" }
        if value == value.rounded(), abs(value) < 1e15 {
            return String(Int64(value))
        }
        if abs(value) >= 1e15 || (abs(value) < 1e-3 && value != 0) {
            return String(format: "%.4e", value)
        }
        return String(format: "%.4f", value)
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
