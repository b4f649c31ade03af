import BerthJSON
import BerthWire
import Foundation
import Testing

@testable import BerthRPC

/// `berth monitor`'s arithmetic: every sample added as received, per group and metric.
struct MetricsAggregatorTests {
    static let when = Date(timeIntervalSince1970: 1_800_000_000)

    static func sample(
        _ value: Double, name: String = "cpu.time", image: String, uuid: String, host: String = "h1",
        flavor: String = "tiny", type: MetricsSample.Kind = .cumulative
    ) -> MetricsSample {
        MetricsSample(
            name: name, unit: "ns", type: type, value: value, imageID: image, instanceUUID: uuid, host: host,
            flavor: flavor, timestamp: when)
    }

    static func notification(_ samples: [MetricsSample], id: String = OsloIDs.uuid4()) -> OsloNotification {
        OsloNotification(
            messageID: id, publisherID: "compute.h1", eventType: MetricsBatch.eventType, priority: .sample,
            payload: MetricsBatch.payload(samples))
    }

    static let samples = [
        sample(10, image: "img-a", uuid: "u1", host: "h1"),
        sample(30, image: "img-a", uuid: "u2", host: "h2", flavor: "big"),
        sample(5, image: "img-b", uuid: "u3", host: "h1"),
        sample(11, image: "img-a", uuid: "u1", host: "h1"),
        sample(2048, name: "memory.used", image: "img-a", uuid: "u1", type: .gauge),
    ]

    @Test func countSumMeanMaxPerImage() throws {
        var aggregator = MetricsAggregator(grouping: .imageID)
        aggregator.add(Self.notification(Self.samples))
        let a = try #require(aggregator.groups["img-a"])
        let cpu = try #require(a.metrics["cpu.time"])
        #expect(cpu.count == 3)
        #expect(cpu.sum == 51)
        #expect(cpu.mean == 17)
        #expect(cpu.max == 30)
        #expect(a.instances == ["u1", "u2"])
        #expect(a.metrics["memory.used"]?.count == 1)
        #expect(aggregator.groups["img-b"]?.metrics["cpu.time"]?.sum == 5)
        #expect(aggregator.samples == 5)
        #expect(aggregator.notifications == 1)
    }

    @Test(arguments: [
        (MetricsGrouping.host, ["h1": 3, "h2": 1]),
        (MetricsGrouping.flavor, ["tiny": 3, "big": 1]),
        (MetricsGrouping.imageID, ["img-a": 3, "img-b": 1]),
    ])
    func groupingsCountCPUSamples(grouping: MetricsGrouping, counts: [String: Int]) {
        var aggregator = MetricsAggregator(grouping: grouping, metricNames: ["cpu.time"])
        for sample in Self.samples { aggregator.add(sample) }
        #expect(aggregator.groups.mapValues { $0.metrics["cpu.time"]?.count ?? 0 } == counts)
        // The filter keeps only the metrics asked for, and counts only what it kept.
        #expect(aggregator.groups.values.allSatisfy { $0.metrics.keys.sorted() == ["cpu.time"] })
        #expect(aggregator.samples == 4)
    }

    @Test func duplicatesOtherEventsAndGarbageAreCountedNotAdded() {
        var aggregator = MetricsAggregator(grouping: .imageID, keepsMessageIDs: true)
        let first = Self.notification([Self.samples[0]], id: "id-1")
        aggregator.add(first)
        aggregator.add(first)
        aggregator.add(
            OsloNotification(publisherID: "compute.h1", eventType: "instance.create.end", priority: .info, payload: [:])
        )
        aggregator.add(body: Array("not json".utf8))
        aggregator.add(body: OsloEnvelope.wrap(Self.notification([Self.samples[2]], id: "id-2").encode()))
        #expect(aggregator.notifications == 2)
        #expect(aggregator.duplicates == 1)
        #expect(aggregator.ignored == 2)
        #expect(aggregator.samples == 2)
        #expect(aggregator.messageIDs == ["id-1", "id-2"])
    }

    @Test func jsonShape() throws {
        var aggregator = MetricsAggregator(grouping: .imageID, keepsMessageIDs: true)
        aggregator.add(Self.notification(Self.samples, id: "id-1"))
        let json = aggregator.json(final: true)
        let text = JSONCodec.serializeString(json)
        let object = try #require(json.objectValue)
        #expect(
            object.keys == [
                "by", "final", "notifications", "samples", "rejected", "ignored", "duplicates", "groups", "message_ids",
            ])
        #expect(object["by"] == "image_id")
        #expect(object["final"] == true)
        #expect(object["message_ids"] == ["id-1"])
        let a = try #require(object["groups"]?.objectValue?["img-a"]?.objectValue)
        #expect(a["instances"] == 2)
        let cpu = try #require(a["metrics"]?.objectValue?["cpu.time"]?.objectValue)
        #expect(cpu.keys == ["unit", "type", "count", "sum", "mean", "max", "rate"])
        // All samples share one timestamp: no interval, no rate yet.
        #expect(cpu["rate"] == .null)
        #expect(a["metrics"]?.objectValue?["memory.used"]?.objectValue?["rate"] == nil)
        #expect(cpu["count"] == 3)
        #expect(cpu["sum"] == 51)
        #expect(cpu["mean"] == 17)
        #expect(cpu["max"] == 30)
        #expect(text.contains(#""img-b":{"instances":1,"metrics":{"cpu.time":{"unit":"ns","type":"cumulative","#))

        // Without being asked, no id list (it grows with every notification).
        var plain = MetricsAggregator(grouping: .host)
        plain.add(Self.notification(Self.samples))
        #expect(plain.json(final: false).objectValue?["message_ids"] == nil)
        #expect(plain.json(final: false).objectValue?["final"] == false)
    }

    @Test func tableHasARowPerGroupAndMetric() {
        var aggregator = MetricsAggregator(grouping: .imageID)
        #expect(MetricsTable.render(aggregator, now: Self.when).contains("(no samples yet)"))
        aggregator.add(Self.notification(Self.samples))
        let table = MetricsTable.render(aggregator, now: Self.when)
        let lines = table.split(separator: "\n").map(String.init)
        #expect(lines[0].hasPrefix("berth monitor  by image_id  2027-01-15T08:00:00.000000Z"))
        #expect(
            lines[1].split(separator: " ") == [
                "IMAGE_ID", "INSTANCES", "METRIC", "UNIT", "COUNT", "SUM", "MEAN", "MAX", "RATE/S",
            ])
        #expect(lines[2].split(separator: " ") == ["img-a", "2", "cpu.time", "ns", "3", "51", "17", "30", "-"])
        #expect(lines[3].split(separator: " ") == ["memory.used", "ns", "1", "2048", "2048", "2048", "-"])
        #expect(lines[4].split(separator: " ") == ["img-b", "1", "cpu.time", "ns", "1", "5", "5", "5", "-"])
        #expect(lines.allSatisfy { $0.last != " " })
    }

    /// Cumulative counters are turned into rates: each instance's growth over its own first-to-last interval,
    /// summed over the group; a counter that falls started again, and a late reading is left out.
    @Test func cumulativeCountersGetARate() throws {
        func at(_ seconds: Double, _ value: Double, uuid: String) -> MetricsSample {
            var sample = Self.sample(value, image: "img-a", uuid: uuid)
            sample.timestamp = Self.when.addingTimeInterval(seconds)
            return sample
        }
        var aggregator = MetricsAggregator(grouping: .imageID)
        for sample in [
            at(0, 1_000, uuid: "u1"), at(10, 3_000, uuid: "u1"),  // 200/s
            at(0, 500, uuid: "u2"), at(5, 1_000, uuid: "u2"), at(10, 200, uuid: "u2"),  // 500 then 200 after a restart: 70/s
            at(7, 9_999, uuid: "u2"),  // late: not in the rate
            at(3, 42, uuid: "u3"),  // one reading: no rate of its own
        ] {
            aggregator.add(sample)
        }
        let aggregate = try #require(aggregator.groups["img-a"]?.metrics["cpu.time"])
        #expect(aggregate.rate == 270)
        #expect(aggregate.count == 7)
        let table = MetricsTable.render(aggregator, now: Self.when)
        #expect(table.split(separator: "\n")[2].hasSuffix("  270"))
    }

    @Test(arguments: [
        (3.0, "3"), (2.5, "2.5000"), (1.8e18, "1.8000e+18"), (0.0001, "1.0000e-04"), (-.infinity, "-"),
    ])
    func tableNumbers(value: Double, text: String) {
        #expect(MetricsTable.format(value) == text)
    }
}
