import BerthWire
import Foundation
import Prometheus
import Testing

@testable import BerthCompute

struct InstanceSeriesTests {
    static func sample(
        _ name: String, _ value: Double, uuid: String = "u1", image: String = "img-1",
        type: MetricsSample.Kind = .cumulative
    ) -> MetricsSample {
        MetricsSample(
            name: name, unit: "x", type: type, value: value, imageID: image, instanceUUID: uuid, host: "host-a",
            flavor: "tiny", timestamp: Date())
    }

    /// name{labels} → value, from the exposition text.
    static func series(_ registry: PrometheusCollectorRegistry) -> [String: Double] {
        var result: [String: Double] = [:]
        for line in registry.emitToString().split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            result[String(line[..<space])] = value
        }
        return result
    }

    static let labels = #"{image_id="img-1",instance_uuid="u1",flavor="tiny",host="host-a"}"#

    @Test func readingsBecomeCountersAndGaugesInBaseUnitsLabelledByImage() {
        let registry = PrometheusCollectorRegistry()
        let series = InstanceSeries(registry: registry)
        series.update(
            [
                Self.sample(Meters.cpuTime, 2_500_000_000), Self.sample(Meters.memoryUsed, 268_435_456, type: .gauge),
                Self.sample(Meters.diskReadBytes, 10), Self.sample(Meters.diskWriteBytes, 20),
                Self.sample(Meters.networkIncomingBytes, 30), Self.sample(Meters.networkOutgoingBytes, 40),
                Self.sample(Meters.bootDuration, 3, type: .gauge),
            ], present: ["u1"])
        let text = registry.emitToString()
        #expect(text.contains("# TYPE berth_instance_cpu_seconds_total counter"))
        #expect(text.contains("# TYPE berth_instance_memory_bytes gauge"))
        #expect(
            Self.series(registry) == [
                "berth_instance_cpu_seconds_total" + Self.labels: 2.5,
                "berth_instance_memory_bytes" + Self.labels: 268_435_456,
                "berth_instance_disk_read_bytes_total" + Self.labels: 10,
                "berth_instance_disk_write_bytes_total" + Self.labels: 20,
                "berth_instance_network_receive_bytes_total" + Self.labels: 30,
                "berth_instance_network_transmit_bytes_total" + Self.labels: 40,
            ])
    }

    @Test func countersFollowTheReadingAndResetWhenItFalls() {
        let registry = PrometheusCollectorRegistry()
        let series = InstanceSeries(registry: registry)
        let key = "berth_instance_disk_read_bytes_total" + Self.labels
        series.update([Self.sample(Meters.diskReadBytes, 100)], present: ["u1"])
        series.update([Self.sample(Meters.diskReadBytes, 250)], present: ["u1"])
        #expect(Self.series(registry)[key] == 250)
        // The domain was restarted: its counters begin again, which Prometheus reads as a reset.
        series.update([Self.sample(Meters.diskReadBytes, 7)], present: ["u1"])
        #expect(Self.series(registry)[key] == 7)
    }

    @Test func seriesOfAGoneDomainDisappearOthersStay() {
        let registry = PrometheusCollectorRegistry()
        let series = InstanceSeries(registry: registry)
        series.update(
            [
                Self.sample(Meters.cpuTime, 1e9), Self.sample(Meters.memoryUsed, 1, type: .gauge),
                Self.sample(Meters.cpuTime, 2e9, uuid: "u2", image: "img-2"),
            ], present: ["u1", "u2"])
        // A domain busy in a job gives no sample but is still there: its series stay.
        series.update([Self.sample(Meters.cpuTime, 3e9, uuid: "u2", image: "img-2")], present: ["u1", "u2"])
        #expect(registry.emitToString().contains(#"instance_uuid="u1""#))
        series.update([Self.sample(Meters.cpuTime, 3e9, uuid: "u2", image: "img-2")], present: ["u2"])
        let text = registry.emitToString()
        #expect(!text.contains(#"instance_uuid="u1""#))
        #expect(!text.contains("berth_instance_memory_bytes"))
        #expect(text.contains(#"instance_uuid="u2""#))
        #expect(series.instanceCount == 1)
        // It may come back (a restore under the same uuid) and starts afresh.
        series.update([Self.sample(Meters.cpuTime, 5e8)], present: ["u1", "u2"])
        #expect(Self.series(registry)["berth_instance_cpu_seconds_total" + Self.labels] == 0.5)
    }

    @Test func labelValuesAreEscaped() {
        let registry = PrometheusCollectorRegistry()
        InstanceSeries(registry: registry).update(
            [Self.sample(Meters.cpuTime, 1e9, image: "a\"b\\c\nd")], present: ["u1"])
        #expect(registry.emitToString().contains(#"image_id="a\"b\\c\nd""#))
    }
}
