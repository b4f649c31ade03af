import BerthJSON
import BerthLibvirt
import BerthWire
import Foundation
import Logging
import Synchronization
import Testing

@testable import BerthCompute

/// libvirt as the poller sees it: records to report, metadata per uuid, and how often each was asked for.
final class FakeStatsSource: DomainStatsSource {
    struct State {
        var records: [DomainStatsRecord] = []
        var metadata: [String: String] = [:]
        var metadataAsks: [[String]] = []
        var failing = false
    }

    let state = Mutex(State())

    func domainStats(prefix: String) async throws -> [DomainStatsRecord] {
        try state.withLock { state in
            if state.failing { throw LibvirtError(code: 1, domain: 0, message: "libvirt is away", libvirtMessage: "") }
            return state.records.filter { $0.name.hasPrefix(prefix) }
        }
    }

    func domainXML(uuids: [String]) async throws -> [String: String] {
        state.withLock { state in
            state.metadataAsks.append(uuids)
            return state.metadata.filter { uuids.contains($0.key) }
        }
    }
}

final class FakePublisher: MetricsPublisher {
    /// What a publish that did not reach the broker throws.
    struct BrokerAway: Error {}

    struct State {
        var batches: [[MetricsSample]] = []
        var failing = false
        var started = 0
        var stopped = 0
    }

    let state = Mutex(State())

    func start() async throws { state.withLock { $0.started += 1 } }
    func stop() async { state.withLock { $0.stopped += 1 } }

    func publish(_ samples: [MetricsSample]) async throws {
        try state.withLock { state in
            if state.failing { throw BrokerAway() }
            state.batches.append(samples)
        }
    }

    var batches: [[MetricsSample]] { state.withLock { $0.batches } }
}

/// A domain definition with Berth's metadata, as `virDomainGetXMLDesc` returns it.
func berthMetadata(image: String, flavor: String = "tiny", owner: String = "") -> String {
    """
    <domain type="test"><name>berth-x</name><metadata>\
    <berth:instance xmlns:berth="https://berth.example/xmlns/instance/1.0">\
    <berth:name>vm</berth:name><berth:image_id>\(image)</berth:image_id>\
    <berth:flavor name="\(flavor)" vcpus="1" memory_mb="256" root_gb="1"/>\(owner)</berth:instance>\
    </metadata></domain>
    """
}

let foreignDefinition = #"<domain type="test"><name>berth-y</name><metadata><x:a xmlns:x="urn:x"/></metadata></domain>"#

struct MetricsPollerTests {
    static func record(_ uuid: String, cpu: Double = 100) -> DomainStatsRecord {
        DomainStatsRecord(uuid: uuid, name: "berth-\(uuid)", values: ["cpu.time": cpu, "balloon.current": 1024])
    }

    func poller(
        _ source: FakeStatsSource, _ publisher: FakePublisher, maxSamples: Int = 4000,
        interval: Duration = .seconds(10)
    ) -> MetricsPoller {
        var configuration = MetricsPollerConfiguration(host: "host-a")
        configuration.maxSamplesPerNotification = maxSamples
        configuration.interval = interval
        return MetricsPoller(
            configuration: configuration, source: source, publisher: publisher, logger: Logger(label: "test"))
    }

    @Test func oneBatchPerIntervalTaggedFromMetadataReadOnce() async throws {
        let source = FakeStatsSource()
        source.state.withLock {
            $0.records = [Self.record("u1"), Self.record("u2"), Self.record("u3")]
            $0.metadata = [
                "u1": berthMetadata(image: "img-1"), "u2": berthMetadata(image: "img-2", flavor: "big"),
                "u3": foreignDefinition,
            ]
            $0.records.append(DomainStatsRecord(uuid: "x", name: "other-x", values: ["cpu.time": 1]))
        }
        let publisher = FakePublisher()
        let poller = poller(source, publisher)
        let first = await poller.pollAndPublish()
        #expect(first.count == 4)
        #expect(Set(first.map(\.imageID)) == ["img-1", "img-2"])
        #expect(first.filter { $0.instanceUUID == "u2" }.allSatisfy { $0.flavor == "big" && $0.host == "host-a" })
        // One notification per image (and flavor and owner) per interval.
        #expect(publisher.batches.map { Set($0.map(\.imageID)) } == [["img-1"], ["img-2"]])

        await poller.pollAndPublish()
        #expect(publisher.batches.count == 4)
        // The untagged u3 is not asked about again on the next interval; the other domain was never Berth's.
        #expect(source.state.withLock { $0.metadataAsks } == [["u1", "u2", "u3"]])
        #expect(poller.statistics.domainsSkipped == 2)
        #expect(poller.statistics.samplesPublished == 8)
        #expect(poller.statistics.batchesPublished == 4)
        #expect(poller.statistics.polls == 2)

        // A new domain is read; a gone one is forgotten.
        source.state.withLock {
            $0.records = [Self.record("u1"), Self.record("u4")]
            $0.metadata["u4"] = berthMetadata(image: "img-4")
        }
        let third = await poller.pollAndPublish()
        #expect(Set(third.map(\.imageID)) == ["img-1", "img-4"])
        #expect(source.state.withLock { $0.metadataAsks.last } == ["u4"])
    }

    @Test func samplesCarryTheProjectAndUserTheDomainRecords() async {
        let source = FakeStatsSource()
        source.state.withLock {
            $0.records = [Self.record("u1"), Self.record("u2")]
            $0.metadata = [
                "u1": berthMetadata(
                    image: "img-1", owner: "<berth:project_id>p-1</berth:project_id><berth:user_id>u-9</berth:user_id>"),
                "u2": berthMetadata(image: "img-2"),
            ]
        }
        let samples = await poller(source, FakePublisher()).pollAndPublish()
        #expect(samples.filter { $0.instanceUUID == "u1" }.allSatisfy { $0.projectID == "p-1" && $0.userID == "u-9" })
        #expect(samples.filter { $0.instanceUUID == "u2" }.allSatisfy { $0.projectID == nil && $0.userID == nil })
    }

    @Test func bootDurationsGoWithTheNextBatchAndSurviveAFailedPublish() async {
        let source = FakeStatsSource()
        let publisher = FakePublisher()
        let poller = poller(source, publisher)
        // Nothing polled and nothing recorded: nothing published.
        #expect(await poller.pollAndPublish().isEmpty)
        #expect(publisher.batches.isEmpty)

        poller.recorder.bootFinished(InstanceTags(instanceUUID: "u1", imageID: "img-1", flavor: "tiny"), seconds: 3)
        publisher.state.withLock { $0.failing = true }
        source.state.withLock {
            $0.records = [Self.record("u1")]
            $0.metadata = ["u1": berthMetadata(image: "img-1")]
        }
        #expect(await poller.pollAndPublish().isEmpty)
        #expect(poller.statistics.publishFailures == 1)
        // The polled samples are dropped (the next poll reads them afresh), the boot duration waits.
        #expect(poller.recorder.pendingCount == 1)

        publisher.state.withLock { $0.failing = false }
        let sent = await poller.pollAndPublish()
        #expect(sent.map(\.name).sorted() == ["boot.duration", "cpu.time", "memory.used"])
        #expect(poller.recorder.pendingCount == 0)
    }

    @Test func libvirtFailureSkipsTheIntervalButStillSendsRecordedSamples() async {
        let source = FakeStatsSource()
        source.state.withLock { $0.failing = true }
        let publisher = FakePublisher()
        let poller = poller(source, publisher)
        poller.recorder.bootFinished(InstanceTags(instanceUUID: "u1", imageID: "img-1", flavor: "tiny"), seconds: 3)
        let sent = await poller.pollAndPublish()
        #expect(sent.map(\.name) == ["boot.duration"])
        #expect(poller.statistics.pollFailures == 1)
    }

    @Test func largeBatchesAreSplit() async {
        let source = FakeStatsSource()
        source.state.withLock { state in
            for index in 0..<5 {
                state.records.append(Self.record("u\(index)"))
                state.metadata["u\(index)"] = berthMetadata(image: "img")
            }
        }
        let publisher = FakePublisher()
        let poller = poller(source, publisher, maxSamples: 4)
        #expect(await poller.pollAndPublish().count == 10)
        #expect(publisher.batches.map(\.count) == [4, 4, 2])
    }

    /// Ceilometer reads an image id or a project per notification (deploy/ceilometer/): every sample of a
    /// notification shares image, flavor, project and user, and the order of first appearance is kept.
    @Test func notificationsShareImageFlavorAndOwner() {
        func sample(_ uuid: String, _ image: String, flavor: String = "tiny", project: String? = nil) -> MetricsSample {
            MetricsSample(
                name: "cpu.time", unit: "ns", type: .cumulative, value: 1, imageID: image, instanceUUID: uuid,
                host: "h", flavor: flavor, timestamp: Date(), projectID: project)
        }
        let samples = [
            sample("u1", "img-b"), sample("u2", "img-a"), sample("u3", "img-b"), sample("u4", "img-b", flavor: "big"),
            sample("u5", "img-a", project: "p"), sample("u6", "img-b"), sample("u7", "img-b"),
        ]
        let chunks = poller(FakeStatsSource(), FakePublisher(), maxSamples: 2).notifications(of: samples)
        #expect(chunks.map { $0.map(\.instanceUUID) } == [["u1", "u3"], ["u6", "u7"], ["u2"], ["u4"], ["u5"]])
    }

    @Test func runPollsEveryIntervalAndStopsThePublisherWhenCancelled() async throws {
        let source = FakeStatsSource()
        source.state.withLock {
            $0.records = [Self.record("u1")]
            $0.metadata = ["u1": berthMetadata(image: "img-1")]
        }
        let publisher = FakePublisher()
        let poller = poller(source, publisher, interval: .milliseconds(50))
        let task = Task { try await poller.run() }
        // Generous: Swift Testing runs synchronous suites on the cooperative pool too, and on 2 cores the disk
        // image sweeps (HostileFieldSweepTests, ImageWriterTests) can hold both of its threads for a minute or more
        // on a loaded machine; the poller's timers only fire once they let go.
        let deadline = ContinuousClock.now + .seconds(300)
        while publisher.batches.count < 3, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        poller.recorder.bootFinished(InstanceTags(instanceUUID: "u1", imageID: "img-1", flavor: "tiny"), seconds: 1)
        task.cancel()
        try await task.value
        #expect(publisher.batches.count >= 3)
        #expect(publisher.state.withLock { ($0.started, $0.stopped) } == (1, 1))
        // The boot duration recorded just before the stop still went out.
        #expect(publisher.batches.flatMap { $0 }.contains { $0.name == "boot.duration" })
    }

    @Test func collectorRetriesUntaggedDomainsAfterAWhile() {
        var collector = MetricsCollector(untaggedRetryPolls: 2)
        let records = [Self.record("u1")]
        #expect(collector.begin(records) == ["u1"])
        #expect(
            collector.learn(definitions: ["u1": foreignDefinition], for: ["u1"]).map(\.reason) == [
                "it has no Berth metadata with an image_id"
            ])
        #expect(collector.begin(records) == [])
        #expect(collector.begin(records) == ["u1"])
        // Malformed metadata counts as none, with the reason.
        let untagged = collector.learn(definitions: ["u1": "<domain><metadata>"], for: ["u1"])
        #expect(untagged.first?.reason.contains("unreadable") == true)
        #expect(collector.samples(from: records, host: "h", at: Date()).skipped == 1)
    }
}
