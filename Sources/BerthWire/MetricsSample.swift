import BerthJSON
import Foundation

/// One measurement in a `berth.metrics` notification (DESIGN §7): what, how much, and whose.
///
/// Every sample names the image its instance was booted from, so operators can compare images; `imageID` is
/// never empty, because a domain without Berth's metadata is not sampled at all.
public struct MetricsSample: Sendable, Hashable {
    /// Ceilometer's meter types: a gauge is a reading, a cumulative counter only grows over an instance's life,
    /// a delta is the change since the previous sample.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case gauge, cumulative, delta
    }

    public var name: String
    public var unit: String
    public var type: Kind
    public var value: Double
    public var imageID: String
    public var instanceUUID: String
    public var host: String
    /// The flavor's name.
    public var flavor: String
    public var timestamp: Date
    /// Whose instance (from the boot's request context); nil when the boot did not say.
    public var projectID: String?
    public var userID: String?

    public init(
        name: String, unit: String, type: Kind, value: Double, imageID: String, instanceUUID: String, host: String,
        flavor: String, timestamp: Date, projectID: String? = nil, userID: String? = nil
    ) {
        self.name = name
        self.unit = unit
        self.type = type
        self.value = value
        self.imageID = imageID
        self.instanceUUID = instanceUUID
        self.host = host
        self.flavor = flavor
        self.timestamp = timestamp
        self.projectID = projectID
        self.userID = userID
    }

    /// The sample as it goes on the wire, keys in DESIGN §7's order; `project_id`/`user_id` only when known.
    public func encode() -> JSONObject {
        var object: JSONObject = [
            "name": .string(name), "unit": .string(unit), "type": .string(type.rawValue),
            "value": Self.number(value), "image_id": .string(imageID), "instance_uuid": .string(instanceUUID),
            "host": .string(host), "flavor": .string(flavor), "timestamp": .string(ISO8601UTC.format(timestamp)),
        ]
        if let projectID { object["project_id"] = .string(projectID) }
        if let userID { object["user_id"] = .string(userID) }
        return object
    }

    /// Reads a sample a Berth worker (or anything writing the same shape) published. A sample without an image
    /// id, or with a value that is not a number, is refused: it could not be grouped or added up.
    public static func decode(_ object: JSONObject) throws(WireError) -> MetricsSample {
        func text(_ key: String) throws(WireError) -> String {
            guard let value = object[key] else { throw WireError(.missingField, "sample has no '\(key)'") }
            guard case .string(let string) = value else {
                throw WireError(.badField, "sample '\(key)' is a JSON \(value.typeName), expected a string")
            }
            return string
        }
        let imageID = try text("image_id")
        guard !imageID.isEmpty else { throw WireError(.badField, "sample 'image_id' is empty") }
        let typeText = try text("type")
        guard let type = Kind(rawValue: typeText) else {
            throw WireError(.badField, "sample type '\(typeText.prefix(32))' is not gauge, cumulative or delta")
        }
        guard let value = object["value"]?.doubleValue else {
            throw WireError(.badField, "sample 'value' is missing or not a number")
        }
        let timestampText = try text("timestamp")
        guard let timestamp = ISO8601UTC.parse(timestampText) else {
            throw WireError(.badField, "sample timestamp '\(timestampText.prefix(40))' is not ISO 8601 UTC")
        }
        func optionalText(_ key: String) throws(WireError) -> String? {
            object[key] == nil ? nil : try text(key)
        }
        return MetricsSample(
            name: try text("name"), unit: try text("unit"), type: type, value: value, imageID: imageID,
            instanceUUID: try text("instance_uuid"), host: try text("host"), flavor: try text("flavor"),
            timestamp: timestamp, projectID: try optionalText("project_id"), userID: try optionalText("user_id"))
    }

    /// Whole numbers go out as JSON integers, so a listener adding them up (Python ints) gets exact sums and
    /// nanosecond counters keep every digit a double can hold.
    package static func number(_ value: Double) -> JSONValue {
        if value.isFinite, value == value.rounded(), abs(value) < 9.2e18 {
            return .int(Int64(value))
        }
        return value.isFinite ? .double(value) : .null
    }
}

/// What every sample of one instance is tagged with, read once from its domain's Berth metadata.
public struct InstanceTags: Sendable, Hashable {
    public var instanceUUID: String
    public var imageID: String
    public var flavor: String
    public var projectID: String?
    public var userID: String?

    public init(
        instanceUUID: String, imageID: String, flavor: String, projectID: String? = nil, userID: String? = nil
    ) {
        self.instanceUUID = instanceUUID
        self.imageID = imageID
        self.flavor = flavor
        self.projectID = projectID
        self.userID = userID
    }

    /// A sample of this instance.
    package func sample(
        _ name: String, _ unit: String, _ type: MetricsSample.Kind, _ value: Double, host: String, at timestamp: Date
    ) -> MetricsSample {
        MetricsSample(
            name: name, unit: unit, type: type, value: value, imageID: imageID, instanceUUID: instanceUUID,
            host: host, flavor: flavor, timestamp: timestamp, projectID: projectID, userID: userID)
    }
}

/// The meters Berth publishes: names, units and types in one place for the poller, the monitor and the docs.
public enum Meters {
    public static let cpuTime = "cpu.time"
    public static let memoryUsed = "memory.used"
    public static let diskReadBytes = "disk.read.bytes"
    public static let diskWriteBytes = "disk.write.bytes"
    public static let networkIncomingBytes = "network.incoming.bytes"
    public static let networkOutgoingBytes = "network.outgoing.bytes"
    public static let bootDuration = "boot.duration"
    public static let deployThroughput = "deploy.throughput"

    public static func bootDurationSample(
        seconds: Double, tags: InstanceTags, host: String, at timestamp: Date
    ) -> MetricsSample {
        tags.sample(bootDuration, "s", .gauge, seconds, host: host, at: timestamp)
    }

    public static func deployThroughputSample(
        bytesPerSecond: Double, tags: InstanceTags, host: String, at timestamp: Date
    ) -> MetricsSample {
        tags.sample(deployThroughput, "B/s", .gauge, bytesPerSecond, host: host, at: timestamp)
    }
}

/// The `berth.metrics` notification's payload, `{"samples": [...]}`.
public enum MetricsBatch {
    public static let eventType = "berth.metrics"

    public static func payload(_ samples: [MetricsSample]) -> JSONValue {
        ["samples": .array(samples.map { .object($0.encode()) })]
    }

    /// The samples of a payload, and how many entries were not usable samples (so the monitor can say so).
    public static func samples(from payload: JSONValue) -> (samples: [MetricsSample], rejected: Int) {
        guard case .object(let object) = payload, case .array(let entries)? = object["samples"] else {
            return ([], 1)
        }
        var samples: [MetricsSample] = []
        var rejected = 0
        for entry in entries {
            guard case .object(let fields) = entry, let sample = try? MetricsSample.decode(fields) else {
                rejected += 1
                continue
            }
            samples.append(sample)
        }
        return (samples, rejected)
    }
}

/// ISO 8601 in UTC with microseconds, "2026-11-22T13:13:38.678233Z"; built on `PythonDateTime`, so no locale or
/// calendar setting can change it. Python's `datetime.fromisoformat` reads it (3.11+).
public enum ISO8601UTC {
    public static func format(_ date: Date) -> String {
        var text = PythonDateTime.format(date).replacingOccurrences(of: " ", with: "T")
        // PythonDateTime drops a zero fraction, as str(datetime) does; a fixed width is easier on readers.
        if text.count == 19 { text += ".000000" }
        return text + "Z"
    }

    public static func parse(_ text: String) -> Date? {
        guard text.hasSuffix("Z") || text.hasSuffix("+00:00") else { return nil }
        let body = text.hasSuffix("Z") ? text.dropLast() : text.dropLast(6)
        return PythonDateTime.parse(String(body))
    }
}
