import BerthJSON
import BerthLibvirt
import BerthWire
import Foundation
import Testing

@testable import BerthCompute

/// Bulk stats → samples, and the samples' wire shape (DESIGN §7).
struct MetricsSampleTests {
    static let tags = InstanceTags(instanceUUID: "uuid-1", imageID: "img-1", flavor: "tiny")
    static let when = Date(timeIntervalSince1970: 1_800_000_000.25)

    static func record(_ values: [String: Double]) -> DomainStatsRecord {
        DomainStatsRecord(uuid: "uuid-1", name: "berth-uuid-1", values: values)
    }

    @Test func everyMeterFromAFullRecord() {
        let record = Self.record([
            "state.state": 1, "cpu.time": 5_000_000_000, "balloon.current": 262_144, "balloon.rss": 100_000,
            "block.count": 2, "block.0.rd.bytes": 100, "block.1.rd.bytes": 20, "block.0.wr.bytes": 7,
            "block.1.wr.bytes": 3, "block.0.capacity": 1_073_741_824, "net.count": 1, "net.0.rx.bytes": 1500,
            "net.0.tx.bytes": 900, "net.0.rx.pkts": 12,
        ])
        let samples = Meters.samples(from: record, tags: Self.tags, host: "host-a", at: Self.when)
        #expect(
            samples.map(\.name) == [
                "cpu.time", "memory.used", "disk.read.bytes", "disk.write.bytes", "network.incoming.bytes",
                "network.outgoing.bytes",
            ])
        #expect(samples.map(\.value) == [5_000_000_000, 262_144 * 1024, 120, 10, 1500, 900])
        #expect(samples.map(\.unit) == ["ns", "B", "B", "B", "B", "B"])
        #expect(samples.map(\.type) == [.cumulative, .gauge, .cumulative, .cumulative, .cumulative, .cumulative])
        for sample in samples {
            #expect(sample.imageID == "img-1")
            #expect(sample.instanceUUID == "uuid-1")
            #expect(sample.host == "host-a")
            #expect(sample.flavor == "tiny")
            #expect(sample.timestamp == Self.when)
        }
    }

    /// What libvirt did not report gives no sample, not a zero: the test driver has no disk or NIC figures.
    @Test func missingFiguresGiveNoSamples() {
        let samples = Meters.samples(
            from: Self.record(["state.state": 1, "cpu.time": 1, "balloon.current": 4]), tags: Self.tags, host: "h",
            at: Self.when)
        #expect(samples.map(\.name) == ["cpu.time", "memory.used"])
        #expect(
            Meters.samples(from: Self.record(["state.state": 1]), tags: Self.tags, host: "h", at: Self.when).isEmpty)
    }

    @Test func memoryFallsBackToRSSWithoutABalloon() {
        let samples = Meters.samples(from: Self.record(["balloon.rss": 10]), tags: Self.tags, host: "h", at: Self.when)
        #expect(samples.map(\.name) == ["memory.used"])
        #expect(samples.first?.value == 10_240.0)
    }

    @Test(arguments: [
        (["block.0.rd.bytes": 1.0, "block.10.rd.bytes": 2], 3.0 as Double?),
        (["block.rd.bytes": 1.0, "block.x.rd.bytes": 2, "blockx.0.rd.bytes": 4], nil),
        (["block.0.rd.bytes.extra": 1.0, "block.0.rd.reqs": 5], nil),
    ])
    func deviceSumsOnlyCountNumberedDevices(values: [String: Double], expected: Double?) {
        #expect(Meters.sumOverDevices(values, group: "block", field: "rd.bytes") == expected)
    }

    @Test func wireShapeHasDesignKeysInOrder() throws {
        let sample = Meters.samples(from: Self.record(["cpu.time": 42]), tags: Self.tags, host: "h", at: Self.when)[0]
        let encoded = sample.encode()
        #expect(
            encoded.keys == [
                "name", "unit", "type", "value", "image_id", "instance_uuid", "host", "flavor", "timestamp",
            ])
        #expect(encoded["value"] == .int(42))
        #expect(encoded["type"] == "cumulative")
        #expect(encoded["timestamp"] == "2027-01-15T08:00:00.250000Z")
        #expect(try MetricsSample.decode(encoded) == sample)
    }

    @Test func projectAndUserGoOnTheWireOnlyWhenKnown() throws {
        var tags = Self.tags
        tags.projectID = "p-1"
        tags.userID = "u-1"
        let sample = Meters.bootDurationSample(seconds: 2, tags: tags, host: "h", at: Self.when)
        let encoded = sample.encode()
        #expect(encoded["project_id"] == "p-1")
        #expect(encoded["user_id"] == "u-1")
        #expect(try MetricsSample.decode(encoded) == sample)
        let anonymous = Meters.bootDurationSample(seconds: 2, tags: Self.tags, host: "h", at: Self.when).encode()
        #expect(anonymous["project_id"] == nil && anonymous["user_id"] == nil)
        var wrong = encoded
        wrong["user_id"] = .int(7)
        #expect(throws: WireError.self) { try MetricsSample.decode(wrong) }
    }

    @Test func valuesThatAreNotWholeStayDoubles() {
        #expect(MetricsSample.number(0.5) == .double(0.5))
        #expect(MetricsSample.number(3) == .int(3))
        #expect(MetricsSample.number(1.8e18) == .int(1_800_000_000_000_000_000))
        #expect(MetricsSample.number(1e19) == .double(1e19))
        #expect(MetricsSample.number(.infinity) == .null)
    }

    @Test func timestampsWithoutAFractionKeepAFixedWidth() {
        #expect(ISO8601UTC.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000Z")
        #expect(ISO8601UTC.parse("1970-01-01T00:00:01.5Z") == Date(timeIntervalSince1970: 1.5))
        #expect(ISO8601UTC.parse("1970-01-01T00:00:01+00:00") == Date(timeIntervalSince1970: 1))
        #expect(ISO8601UTC.parse("1970-01-01T00:00:01") == nil)
    }

    @Test(arguments: ["image_id", "value", "type", "timestamp", "host"])
    func decodeRefusesASampleMissing(key: String) {
        var encoded = Meters.bootDurationSample(seconds: 1.5, tags: Self.tags, host: "h", at: Self.when).encode()
        encoded[key] = JSONValue.null
        #expect(throws: WireError.self) { try MetricsSample.decode(encoded) }
    }

    @Test func decodeRefusesAnEmptyImageIDAndUnknownType() {
        var encoded = Meters.bootDurationSample(seconds: 1, tags: Self.tags, host: "h", at: Self.when).encode()
        encoded["image_id"] = ""
        #expect(throws: WireError.self) { try MetricsSample.decode(encoded) }
        encoded["image_id"] = "img"
        encoded["type"] = "rate"
        #expect(throws: WireError.self) { try MetricsSample.decode(encoded) }
    }

    @Test func batchPayloadAndItsRejects() throws {
        let samples = [
            Meters.bootDurationSample(seconds: 2.5, tags: Self.tags, host: "h", at: Self.when),
            Meters.deployThroughputSample(bytesPerSecond: 1e8, tags: Self.tags, host: "h", at: Self.when),
        ]
        let payload = MetricsBatch.payload(samples)
        let text = JSONCodec.serializeString(payload)
        #expect(text.hasPrefix(#"{"samples":[{"name":"boot.duration","unit":"s","type":"gauge","value":2.5,"#))
        #expect(MetricsBatch.samples(from: payload).samples == samples)
        #expect(MetricsBatch.samples(from: payload).rejected == 0)

        guard case .object(var object) = payload, case .array(var entries)? = object["samples"] else {
            Issue.record("payload is not {samples: [...]}")
            return
        }
        entries.append(["name": "x", "image_id": .null])
        entries.append("not an object")
        object["samples"] = .array(entries)
        let read = MetricsBatch.samples(from: .object(object))
        #expect(read.samples.count == 2)
        #expect(read.rejected == 2)
        #expect(MetricsBatch.samples(from: ["other": 1]).rejected == 1)
    }

    @Test func recorderQueuesBootDurationsAndThroughput() {
        let recorder = MetricsRecorder(host: "host-a", capacity: 3)
        recorder.bootFinished(InstanceTags(instanceUUID: "u1", imageID: "img-1", flavor: "tiny"), seconds: 1.25, at: Self.when)
        recorder.deployFinished(InstanceTags(instanceUUID: "u2", imageID: "img-2", flavor: "metal"), bytes: 1000, seconds: 4, at: Self.when)
        recorder.deployFinished(InstanceTags(instanceUUID: "u3", imageID: "img-2", flavor: "metal"), bytes: 1000, seconds: 0, at: Self.when)
        let drained = recorder.drain()
        #expect(drained.map(\.name) == ["boot.duration", "deploy.throughput"])
        #expect(drained.map(\.value) == [1.25, 250])
        #expect(drained.map(\.unit) == ["s", "B/s"])
        #expect(drained.allSatisfy { $0.host == "host-a" && $0.type == .gauge })
        #expect(recorder.drain().isEmpty)

        // Past its capacity the oldest go.
        for index in 0..<5 {
            recorder.bootFinished(InstanceTags(instanceUUID: "u\(index)", imageID: "i", flavor: "f"), seconds: Double(index), at: Self.when)
        }
        #expect(recorder.drain().map(\.value) == [2, 3, 4])
    }
}
