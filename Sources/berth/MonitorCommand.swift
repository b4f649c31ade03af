import ArgumentParser
import BerthAMQP
import BerthJSON
import BerthRPC
import BerthWire
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

struct Monitor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show live aggregates of the workers' berth.metrics samples by image, host or flavor.",
        discussion: """
            Listens on <metering-topic>.sample (its own exclusive queue, so Ceilometer or any other listener of
            the topic still gets every sample) and keeps, per group and metric, the count, sum, mean and max of
            every sample received, and for cumulative counters (cpu.time, disk and network bytes) the rate per
            second over the window. On a terminal the table is redrawn in place every --interval seconds.

            --format json prints the aggregate as one JSON object per line: with --duration only once, at the
            end; without it, one per refresh and a last one ("final": true) on Ctrl-C or SIGTERM. --format yaml
            prints the same objects as YAML documents, each starting with ---. --message-ids
            adds the message_id of every notification aggregated, to reconcile with another listener.

            Exit status: 0, or 3 when the broker cannot be reached (within --duration when it is given).

            Examples:
              berth monitor --by image_id
              berth monitor --by host --metric cpu.time --metric memory.used
              berth monitor --by flavor --format json --duration 60
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json, yaml
    }

    @OptionGroup var bus: BrokerOptions

    @Option(help: "Group by image_id, host or flavor.")
    var by = "image_id"

    @Option(name: [.short, .customLong("format")], help: "Output: table, json or yaml (see above).")
    var format = Format.table

    /// The spelling before --format; kept for scripts.
    @Flag(help: .hidden)
    var json = false

    @Option(help: "Stop after this many seconds (default: until Ctrl-C or SIGTERM); bounds the wait for the broker too.")
    var duration: Double?

    @Option(help: "Seconds between refreshes of the table (or JSON lines).")
    var interval = 2.0

    @Option(name: .customLong("metric"), help: "Only this metric, e.g. cpu.time (repeatable; default: all).")
    var metrics: [String] = []

    @Option(help: "The notification topic the workers publish samples on (their --metering-topic).")
    var meteringTopic = "metering"

    @Flag(name: .customLong("message-ids"), help: "With --format json: list the message_id of every notification aggregated.")
    var messageIDs = false

    func validate() throws {
        guard MetricsGrouping(rawValue: by) != nil else {
            throw ValidationError(
                "--by must be one of \(MetricsGrouping.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard interval > 0, interval <= 3600 else {
            throw ValidationError("--interval must be more than 0 and at most 3600 s")
        }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be more than 0 seconds") }
        guard !meteringTopic.isEmpty else { throw ValidationError("--metering-topic must not be empty") }
    }

    func run() async throws {
        let logger = BrokerOptions.logger("berth.monitor", try bus.settings(), quiet: true)
        let options = try bus.rabbitOptions()
        let queue = MetricsMonitorTopology.queueName()
        let client = AMQPClient(
            configuration: .init(
                urls: try bus.urls(), connectionName: "berth-monitor",
                topology: MetricsMonitorTopology.make(
                    options: options, topic: meteringTopic, queue: queue, consumerTag: queue)),
            logger: logger)
        do {
            // Reconnecting past --duration would outlive the window the caller asked for.
            try await client.start(connectTimeout: .milliseconds(Int(min(duration ?? 30, 30) * 1000)))
        } catch {
            await client.stop()
            throw CommandFailure.brokerUnreachable(error)
        }
        let service = MonitorService(
            client: client,
            aggregator: MetricsAggregator(
                grouping: MetricsGrouping(rawValue: by) ?? .imageID, metricNames: Set(metrics),
                keepsMessageIDs: messageIDs),
            output: json || format != .table
                ? .documents(yaml: !json && format == .yaml, everyRefresh: duration == nil)
                : .table(inPlace: isatty(STDOUT_FILENO) == 1),
            interval: .milliseconds(Int(interval * 1000)),
            duration: duration.map { .milliseconds(Int($0 * 1000)) })
        let group = ServiceGroup(
            configuration: .init(
                // Returning at the end of --duration is the normal way out, not a failure.
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Consumes samples into the aggregate and shows it until the duration ends or a signal asks it to stop.
final class MonitorService: Service, Sendable {
    enum Output {
        case table(inPlace: Bool)
        /// JSON lines, or YAML documents each after a `---`.
        case documents(yaml: Bool, everyRefresh: Bool)
    }

    let client: AMQPClient
    let aggregator: Mutex<MetricsAggregator>
    let output: Output
    let interval: Duration
    let duration: Duration?
    /// Notifications carry up to a few thousand samples (the worker splits larger batches); room to spare.
    let limits = JSONLimits(maxBytes: 16 << 20, maxDepth: 32)

    init(client: AMQPClient, aggregator: MetricsAggregator, output: Output, interval: Duration, duration: Duration?) {
        self.client = client
        self.aggregator = Mutex(aggregator)
        self.output = output
        self.interval = interval
        self.duration = duration
    }

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await delivery in self.client.deliveries {
                    self.aggregator.withLock { $0.add(body: delivery.body, limits: self.limits) }
                    self.client.ack(delivery)
                }
            }
            await cancelWhenGracefulShutdown {
                let clock = ContinuousClock()
                let deadline = self.duration.map { clock.now + $0 }
                while !Task.isCancelled {
                    var wake = clock.now + self.interval
                    if let deadline {
                        if clock.now >= deadline { return }
                        wake = min(wake, deadline)
                    }
                    do {
                        try await Task.sleep(until: wake, clock: clock)
                    } catch {
                        return
                    }
                    if let deadline, clock.now >= deadline { return }
                    self.show(final: false)
                }
            }
            // Deliveries already received are still added (their ids listed) before the stream ends.
            await client.stop()
            await group.waitForAll()
        }
        show(final: true)
    }

    private func show(final: Bool) {
        let snapshot = aggregator.withLock { $0 }
        switch output {
        case .documents(let yaml, let everyRefresh):
            guard final || everyRefresh else { return }
            let document = snapshot.json(final: final)
            write(yaml ? "---\n" + YAMLWriter.document(document) : JSONCodec.serializeString(document) + "\n")
        case .table(let inPlace):
            // Home and clear, then the table: redrawn in place rather than scrolling.
            write((inPlace ? "\u{1B}[H\u{1B}[2J" : "") + MetricsTable.render(snapshot) + (inPlace ? "" : "\n"))
        }
    }

    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
