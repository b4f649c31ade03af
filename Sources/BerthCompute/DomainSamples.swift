import BerthCore
import BerthLibvirt
import BerthWire
import Foundation

// The libvirt side of the `berth.metrics` samples: what a domain's Berth metadata and bulk stats become. The
// samples themselves are wire values (BerthWire), which the bus side publishes without seeing libvirt.

extension InstanceTags {
    /// The tags Berth's metadata in a domain gives its instance.
    public init(_ metadata: DomainMetadata, uuid: String) {
        self.init(
            instanceUUID: uuid, imageID: metadata.imageID, flavor: metadata.flavor.name,
            projectID: metadata.projectID, userID: metadata.userID)
    }
}

extension Meters {
    /// The samples one domain's bulk stats become, in a fixed order. A figure libvirt did not report (no disks,
    /// no NICs, a busy domain under NOWAIT) gives no sample rather than a made-up zero.
    public static func samples(
        from record: DomainStatsRecord, tags: InstanceTags, host: String, at timestamp: Date
    ) -> [MetricsSample] {
        func sample(_ name: String, _ unit: String, _ type: MetricsSample.Kind, _ value: Double) -> MetricsSample {
            tags.sample(name, unit, type, value, host: host, at: timestamp)
        }
        var samples: [MetricsSample] = []
        if let cpu = record["cpu.time"] {
            samples.append(sample(cpuTime, "ns", .cumulative, cpu))
        }
        // balloon.current is what the guest has been given; rss (what QEMU really holds) when there is no balloon.
        if let memory = record["balloon.current"] ?? record["balloon.rss"] {
            samples.append(sample(memoryUsed, "B", .gauge, memory * 1024))
        }
        let perDevice: [(name: String, group: String, field: String)] = [
            (diskReadBytes, "block", "rd.bytes"), (diskWriteBytes, "block", "wr.bytes"),
            (networkIncomingBytes, "net", "rx.bytes"), (networkOutgoingBytes, "net", "tx.bytes"),
        ]
        for meter in perDevice {
            if let total = sumOverDevices(record.values, group: meter.group, field: meter.field) {
                samples.append(sample(meter.name, "B", .cumulative, total))
            }
        }
        return samples
    }

    /// The sum of `<group>.<n>.<field>` over every device n; nil when no device reported it.
    static func sumOverDevices(_ values: [String: Double], group: String, field: String) -> Double? {
        let head = group + "."
        let tail = "." + field
        var total: Double?
        for (key, value) in values where key.hasPrefix(head) && key.hasSuffix(tail) {
            let index = key.dropFirst(head.count).dropLast(tail.count)
            guard !index.isEmpty, index.allSatisfy(\.isASCIIDigit) else { continue }
            total = (total ?? 0) + value
        }
        return total
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
