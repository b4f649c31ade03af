import BerthCore
import BerthWire
import BerthLibvirt
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization

/// Where the poller reads domain figures and Berth's metadata; `LibvirtHost` in the worker, a fake in tests.
public protocol DomainStatsSource: Sendable {
    func domainStats(prefix: String) async throws -> [DomainStatsRecord]
    /// uuid → the domain's XML definition, which carries Berth's metadata; uuids whose domain is gone are left out.
    func domainXML(uuids: [String]) async throws -> [String: String]
}

extension LibvirtHost: DomainStatsSource {
    public func domainStats(prefix: String) throws -> [DomainStatsRecord] {
        try allDomainStats(prefix: prefix)
    }
}

/// Where the metrics poller sends each interval's samples.
public protocol MetricsPublisher: Sendable {
    /// Connects, when the publisher has a connection of its own; called once before the first `publish`.
    func start() async throws
    /// Sends one batch; throws when it did not reach the broker (the poller then drops it).
    func publish(_ samples: [MetricsSample]) async throws
    func stop() async
}

/// Samples that do not come from polling: boot durations and deploy throughput, reported by the code that
/// measured them and published with the poller's next batch.
public final class MetricsRecorder: Sendable {
    public let host: String
    /// Past this many waiting samples (the broker away for long) the oldest are dropped.
    public let capacity: Int
    private let pending = Mutex<[MetricsSample]>([])
    private let bootTimer = Metrics.Timer(label: MetricsRecorder.bootDurationLabel)
    private let deployThroughput = Recorder(label: MetricsRecorder.deployThroughputLabel)
    private let dropped = Counter(label: "berth_metrics_samples_dropped_total")

    /// The swift-metrics labels of the two figures (`/metrics` gives them buckets; docs/metrics.md lists them).
    public static let bootDurationLabel = "berth_boot_duration_seconds"
    public static let deployThroughputLabel = "berth_deploy_throughput_bytes_per_second"

    public init(host: String, capacity: Int = 10_000) {
        self.host = host
        self.capacity = capacity
    }

    /// A VM boot finished: `seconds` from accepting the request to the domain running.
    public func bootFinished(_ tags: InstanceTags, seconds: Double, at date: Date = Date()) {
        bootTimer.recordSeconds(seconds)
        enqueue([Meters.bootDurationSample(seconds: seconds, tags: tags, host: host, at: date)])
    }

    /// A VM boot that began at `start` (when the request was accepted) has its domain running now.
    public func bootFinished(_ tags: InstanceTags, since start: ContinuousClock.Instant) {
        bootFinished(tags, seconds: (ContinuousClock.now - start).seconds)
    }

    /// A bare-metal deploy finished writing `bytes` in `seconds`.
    public func deployFinished(_ tags: InstanceTags, bytes: UInt64, seconds: Double, at date: Date = Date()) {
        guard seconds > 0 else { return }
        deployThroughput.record(Double(bytes) / seconds)
        enqueue([
            Meters.deployThroughputSample(bytesPerSecond: Double(bytes) / seconds, tags: tags, host: host, at: date)
        ])
    }

    public var pendingCount: Int { pending.withLock { $0.count } }

    /// Takes every waiting sample.
    func drain() -> [MetricsSample] {
        pending.withLock { samples in
            defer { samples.removeAll() }
            return samples
        }
    }

    /// Puts back samples whose batch did not reach the broker, ahead of newer ones.
    func requeue(_ samples: [MetricsSample]) {
        guard !samples.isEmpty else { return }
        pending.withLock { $0.insert(contentsOf: samples, at: 0) }
        trim()
    }

    private func enqueue(_ samples: [MetricsSample]) {
        pending.withLock { $0.append(contentsOf: samples) }
        trim()
    }

    private func trim() {
        let excess = pending.withLock { samples in
            let excess = max(0, samples.count - capacity)
            samples.removeFirst(excess)
            return excess
        }
        if excess > 0 { dropped.increment(by: excess) }
    }
}

/// The poller's memory between intervals: each domain's tags, read from its Berth metadata once rather than
/// every interval. Pure, so the caching rules are tested without libvirt.
struct MetricsCollector {
    enum Known {
        case tagged(InstanceTags)
        /// No Berth metadata (not Berth's, or unreadable): skipped, and asked again from poll `retryAt` on, in
        /// case the metadata was being written when it was first seen.
        case untagged(retryAt: Int)
    }

    var known: [String: Known] = [:]
    var poll = 0
    /// How many polls an untagged domain is skipped before its metadata is read again.
    let untaggedRetryPolls: Int

    init(untaggedRetryPolls: Int = 30) {
        self.untaggedRetryPolls = untaggedRetryPolls
    }

    /// The uuids whose metadata must be read before `samples(from:)`; also forgets domains that are gone.
    mutating func begin(_ records: [DomainStatsRecord]) -> [String] {
        poll += 1
        let present = Set(records.map(\.uuid))
        known = known.filter { present.contains($0.key) }
        return records.map(\.uuid).filter { uuid in
            switch known[uuid] {
            case nil: true
            case .tagged: false
            case .untagged(let retryAt): poll >= retryAt
            }
        }
    }

    /// Records what the Berth metadata in the domain definitions of `uuids` says; returns the uuids (with the
    /// reason) that carry no usable tags.
    mutating func learn(definitions: [String: String], for uuids: [String]) -> [(uuid: String, reason: String)] {
        var untagged: [(String, String)] = []
        for uuid in uuids {
            let reason: String
            if let xml = definitions[uuid] {
                do {
                    if let parsed = try DomainMetadata.parse(xml: xml), !parsed.imageID.isEmpty {
                        known[uuid] = .tagged(InstanceTags(parsed, uuid: uuid))
                        continue
                    }
                    reason = "it has no Berth metadata with an image_id"
                } catch {
                    reason = "its Berth metadata is unreadable: \(error)"
                }
            } else {
                reason = "it was undefined before its definition could be read"
            }
            known[uuid] = .untagged(retryAt: poll + untaggedRetryPolls)
            untagged.append((uuid, reason))
        }
        return untagged
    }

    /// The samples of the tagged domains, and how many domains were skipped for want of tags.
    func samples(from records: [DomainStatsRecord], host: String, at date: Date) -> (
        samples: [MetricsSample], skipped: Int
    ) {
        var samples: [MetricsSample] = []
        var skipped = 0
        for record in records {
            guard case .tagged(let tags)? = known[record.uuid] else {
                skipped += 1
                continue
            }
            samples += Meters.samples(from: record, tags: tags, host: host, at: date)
        }
        return (samples, skipped)
    }
}

public struct MetricsPollerConfiguration: Sendable {
    public var host: String
    /// Time between polls (the default: 10 s).
    public var interval: Duration = .seconds(10)
    /// Only domains whose names start with this are Berth's to sample.
    public var domainPrefix = DomainSpec.namePrefix
    /// A larger batch is split over several notifications, so no message outgrows a listener's size limit
    /// (about 250 bytes a sample: 4000 samples is about 1 MB).
    public var maxSamplesPerNotification = 4000

    public init(host: String) {
        self.host = host
    }
}

/// Every interval: bulk domain stats from libvirt, turned into samples tagged with each instance's image,
/// flavor and host, plus what the `MetricsRecorder` collected, published as one `berth.metrics` notification.
///
/// Neither libvirt nor the broker being away stops it: that interval is skipped (and counted), the next one
/// tries again. Graceful shutdown ends the loop after sending the recorder's waiting samples.
public final class MetricsPoller: Service, Sendable {
    /// What the poller has done, for tests and logs; the same figures go to swift-metrics.
    public struct Statistics: Sendable, Equatable {
        public var polls = 0
        public var pollFailures = 0
        public var batchesPublished = 0
        public var samplesPublished = 0
        public var publishFailures = 0
        /// Domain-polls skipped because the domain had no Berth metadata (a domain counts once per poll).
        public var domainsSkipped = 0
    }

    public let configuration: MetricsPollerConfiguration
    public let recorder: MetricsRecorder
    let source: any DomainStatsSource
    let publisher: any MetricsPublisher
    /// The `/metrics` endpoint's per-instance series, set from every poll; nil without `--metrics-listen`.
    let series: InstanceSeries?
    let logger: Logger
    private let collector = Mutex(MetricsCollector())
    private let stats = Mutex(Statistics())
    private let started = Mutex(false)
    /// One warning per outage, not one per interval.
    private let publishFailing = Mutex(false)
    private let pollsCounter = Counter(label: "berth_metrics_polls_total")
    private let pollFailuresCounter = Counter(label: "berth_metrics_poll_failures_total")
    private let pollTimer = Metrics.Timer(label: "berth_metrics_poll_duration_seconds")
    private let samplesCounter = Counter(label: "berth_metrics_samples_published_total")
    private let publishFailuresCounter = Counter(label: "berth_metrics_publish_failures_total")
    private let skippedCounter = Counter(label: "berth_metrics_domains_skipped_total")
    private let domainsGauge = Gauge(label: "berth_metrics_domains")

    public init(
        configuration: MetricsPollerConfiguration, source: any DomainStatsSource, publisher: any MetricsPublisher,
        recorder: MetricsRecorder? = nil, series: InstanceSeries? = nil, logger: Logger
    ) {
        self.configuration = configuration
        self.source = source
        self.publisher = publisher
        self.series = series
        self.recorder = recorder ?? MetricsRecorder(host: configuration.host)
        var logger = logger
        logger[metadataKey: "component"] = "metrics"
        self.logger = logger
    }

    public var statistics: Statistics { stats.withLock { $0 } }

    /// Connects the publisher; call it at start-up to fail fast (`run` calls it otherwise).
    public func start() async throws {
        guard !started.withLock({ $0 }) else { return }
        try await publisher.start()
        started.withLock { $0 = true }
        logger.info(
            "metrics poller started",
            metadata: ["interval": "\(configuration.interval)", "host": "\(configuration.host)"])
    }

    public func run() async throws {
        try await start()
        // Cancelled by graceful shutdown (or the group): whichever comes first ends the wait between polls.
        await cancelWhenGracefulShutdown {
            let clock = ContinuousClock()
            var next = clock.now
            while !Task.isCancelled {
                await self.pollAndPublish()
                next = next.advanced(by: self.configuration.interval)
                // A poll that overran the interval starts the next one at once, without piling up missed ones.
                if next < clock.now { next = clock.now }
                do {
                    try await Task.sleep(until: next, clock: clock)
                } catch {
                    return
                }
            }
        }
        // Boot durations measured just before the shutdown would otherwise be lost.
        let waiting = recorder.drain()
        if !waiting.isEmpty { await publish(waiting) }
        await publisher.stop()
        logger.info("metrics poller stopped", metadata: ["polls": "\(statistics.polls)"])
    }

    /// One interval: read, build, publish. Returns the samples when all of them got through, else [].
    @discardableResult
    public func pollAndPublish(at date: Date = Date()) async -> [MetricsSample] {
        let samples = await poll(at: date) + recorder.drain()
        guard !samples.isEmpty else { return [] }
        return await publish(samples) ? samples : []
    }

    /// Reads libvirt and builds the samples of the tagged domains; [] when libvirt failed (logged, counted).
    func poll(at date: Date) async -> [MetricsSample] {
        let began = ContinuousClock.now
        pollsCounter.increment()
        stats.withLock { $0.polls += 1 }
        do {
            let records = try await source.domainStats(prefix: configuration.domainPrefix)
            let unknown = collector.withLock { $0.begin(records) }
            if !unknown.isEmpty {
                let definitions = try await source.domainXML(uuids: unknown)
                let untagged = collector.withLock { $0.learn(definitions: definitions, for: unknown) }
                for (uuid, reason) in untagged {
                    logger.warning(
                        "domain not sampled: metrics need an image_id",
                        metadata: ["instance_uuid": "\(uuid)", "reason": "\(reason)"])
                }
            }
            let (samples, skipped) = collector.withLock {
                $0.samples(from: records, host: configuration.host, at: date)
            }
            if skipped > 0 {
                skippedCounter.increment(by: skipped)
                stats.withLock { $0.domainsSkipped += skipped }
            }
            domainsGauge.record(records.count - skipped)
            series?.update(samples, present: Set(records.map(\.uuid)))
            pollTimer.recordNanoseconds(Self.nanoseconds(ContinuousClock.now - began))
            return samples
        } catch {
            pollFailuresCounter.increment()
            stats.withLock { $0.pollFailures += 1 }
            logger.warning("cannot read domain statistics; skipping this interval", metadata: ["error": "\(error)"])
            return []
        }
    }

    /// Publishes in notifications (`notifications(of:)`); false when any did not get through. Polled figures
    /// of a failed batch are dropped (the next poll reads them afresh); recorded ones go back to the recorder
    /// for the next interval.
    @discardableResult
    func publish(_ samples: [MetricsSample]) async -> Bool {
        var allSent = true
        for chunk in notifications(of: samples) {
            do {
                try await publisher.publish(chunk)
                samplesCounter.increment(by: chunk.count)
                stats.withLock {
                    $0.batchesPublished += 1
                    $0.samplesPublished += chunk.count
                }
                if publishFailing.withLock({ state in
                    defer { state = false }; return state
                }) {
                    logger.notice("publishing metrics again")
                }
            } catch {
                allSent = false
                publishFailuresCounter.increment()
                stats.withLock { $0.publishFailures += 1 }
                recorder.requeue(chunk.filter { $0.name == Meters.bootDuration || $0.name == Meters.deployThroughput })
                let first = publishFailing.withLock { state in
                    defer { state = true }; return !state
                }
                if first {
                    logger.warning(
                        "cannot publish metrics; dropping polled samples until the broker is back",
                        metadata: ["error": "\(error)", "samples": "\(chunk.count)"])
                }
            }
        }
        return allSent
    }

    /// One notification per image, flavor and owner (in order of first appearance), of at most
    /// `maxSamplesPerNotification` samples. Ceilometer's meter definitions read per-notification fields such as
    /// `resource_metadata.image_id` from one sample of the batch (deploy/ceilometer/), so every sample of a
    /// notification must share them.
    func notifications(of samples: [MetricsSample]) -> [[MetricsSample]] {
        struct Key: Hashable {
            let imageID: String, flavor: String, projectID: String?, userID: String?
        }
        var order: [Key] = []
        var groups: [Key: [MetricsSample]] = [:]
        for sample in samples {
            let key = Key(
                imageID: sample.imageID, flavor: sample.flavor, projectID: sample.projectID, userID: sample.userID)
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(sample)
        }
        let size = max(1, configuration.maxSamplesPerNotification)
        return order.flatMap { key in
            let group = groups[key]!
            return stride(from: 0, to: group.count, by: size).map { Array(group[$0..<min($0 + size, group.count)]) }
        }
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension Duration {
    /// For figures published in seconds.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
