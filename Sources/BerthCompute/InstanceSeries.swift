import BerthWire
import Prometheus
import Synchronization

/// The per-instance Prometheus series of `/metrics`, set from each poll's samples: the same readings the poller
/// publishes on the bus, labelled `image_id`, `instance_uuid`, `flavor` and `host`, so `sum by (image_id)` in
/// Prometheus equals what a listener of `metering.sample` adds up.
///
/// Named by Prometheus's rules (base units, `_total` on counters): libvirt's cumulative readings become
/// counters, the memory reading a gauge. The series of a domain the poll no longer sees are unregistered, so a
/// deleted instance is gone from the next scrape instead of lingering at its last value.
public final class InstanceSeries: Sendable {
    /// How one bus meter becomes a series.
    struct Mapping: Sendable {
        /// The name without its unit suffix.
        let series: String
        let unit: String
        let help: String
        let isCounter: Bool
        /// Bus unit → the series' base unit (ns → s).
        let scale: Double

        var descriptor: MetricNameDescriptor {
            MetricNameDescriptor(metricName: series, unitName: unit, helpText: help)
        }
    }

    static let mappings: [String: Mapping] = [
        Meters.cpuTime: Mapping(
            series: "berth_instance_cpu_seconds", unit: "total", help: "CPU time the instance used (libvirt cpu.time).",
            isCounter: true, scale: 1e-9),
        Meters.memoryUsed: Mapping(
            series: "berth_instance_memory", unit: "bytes", help: "Memory the guest holds (balloon current, else RSS).",
            isCounter: false, scale: 1),
        Meters.diskReadBytes: Mapping(
            series: "berth_instance_disk_read_bytes", unit: "total", help: "Bytes read from the instance's disks.",
            isCounter: true, scale: 1),
        Meters.diskWriteBytes: Mapping(
            series: "berth_instance_disk_write_bytes", unit: "total", help: "Bytes written to the instance's disks.",
            isCounter: true, scale: 1),
        Meters.networkIncomingBytes: Mapping(
            series: "berth_instance_network_receive_bytes", unit: "total", help: "Bytes the instance's NICs received.",
            isCounter: true, scale: 1),
        Meters.networkOutgoingBytes: Mapping(
            series: "berth_instance_network_transmit_bytes", unit: "total", help: "Bytes the instance's NICs sent.",
            isCounter: true, scale: 1),
    ]

    /// One instance's registered series, keyed by bus meter name.
    struct Instance {
        var counters: [String: (counter: Counter, reading: Double)] = [:]
        var gauges: [String: Gauge] = [:]
    }

    let registry: PrometheusCollectorRegistry
    private let instances = Mutex<[String: Instance]>([:])

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Applies one poll: `samples` are its readings, `present` the uuids of every domain it saw (sampled or
    /// not). Instances not present lose their series; samples of other meters (boot duration) are ignored.
    public func update(_ samples: [MetricsSample], present: Set<String>) {
        instances.withLock { instances in
            for (uuid, gone) in instances where !present.contains(uuid) {
                for entry in gone.counters.values { registry.unregisterCounter(entry.counter) }
                for gauge in gone.gauges.values { registry.unregisterGauge(gauge) }
                instances[uuid] = nil
            }
            for sample in samples {
                guard let mapping = Self.mappings[sample.name], sample.value.isFinite, sample.value >= 0 else {
                    continue
                }
                let value = sample.value * mapping.scale
                let labels = [
                    ("image_id", sample.imageID), ("instance_uuid", sample.instanceUUID), ("flavor", sample.flavor),
                    ("host", sample.host),
                ]
                var instance = instances[sample.instanceUUID] ?? Instance()
                if mapping.isCounter {
                    if let (counter, reading) = instance.counters[sample.name] {
                        // A domain restarted from scratch reads lower: that is a counter reset to Prometheus.
                        if value < reading { counter.reset() }
                        counter.increment(by: value < reading ? value : value - reading)
                        instance.counters[sample.name] = (counter, value)
                    } else {
                        let counter = registry.makeCounter(descriptor: mapping.descriptor, labels: labels)
                        counter.increment(by: value)
                        instance.counters[sample.name] = (counter, value)
                    }
                } else {
                    let gauge =
                        instance.gauges[sample.name]
                        ?? registry.makeGauge(descriptor: mapping.descriptor, labels: labels)
                    gauge.set(value)
                    instance.gauges[sample.name] = gauge
                }
                instances[sample.instanceUUID] = instance
            }
        }
    }

    /// Instances that have series now, for tests and logs.
    public var instanceCount: Int { instances.withLock { $0.count } }
}
