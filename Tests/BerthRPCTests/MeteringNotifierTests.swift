import BerthAMQP
import BerthJSON
import BerthWire
import Foundation
import Logging
import Testing

@testable import BerthRPC

struct MeteringNotifierTests {
    @Test func notificationsAreOsloSamplesFromComputeHost() {
        let options = RabbitOptions()
        let topology = MeteringNotifier.topology(options: options, topics: ["metering"])
        #expect(topology.queues.map(\.name) == ["metering.sample"])
        #expect(
            topology.bindings == [
                Binding(exchange: options.controlExchange, queue: "metering.sample", routingKey: "metering.sample")
            ])

        let client = AMQPClient(
            configuration: .init(
                urls: [try! AMQPURL.parse("amqp://guest:guest@127.0.0.1:5672/")], connectionName: "t",
                topology: AMQPTopology()),
            logger: Logger(label: "test"))
        let notifier = Notifier(client: client, options: options, host: "host-a", topics: ["metering"])
        let sample = Meters.bootDurationSample(
            seconds: 1, tags: InstanceTags(instanceUUID: "u", imageID: "i", flavor: "f"), host: "host-a",
            at: Date(timeIntervalSince1970: 1_800_000_000.5))
        let messages = notifier.messages(
            eventType: MetricsBatch.eventType, payload: MetricsBatch.payload([sample]), priority: .sample)
        #expect(messages.map(\.routingKey) == ["metering.sample"])
        let decoded = try? OsloNotification.decode(OsloEnvelope.unwrap(messages[0].body))
        #expect(decoded?.publisherID == "compute.host-a")
        #expect(decoded?.priority == .sample)
        #expect(decoded?.eventType == "berth.metrics")
        #expect(decoded.map { MetricsBatch.samples(from: $0.payload).samples } == [sample])
    }

    @Test func monitorQueueIsItsOwnAndBoundToTheSampleKey() {
        var options = RabbitOptions()
        options.controlExchange = "ex"
        let topology = MetricsMonitorTopology.make(options: options, topic: "meter", queue: "q", consumerTag: "c")
        #expect(topology.queues.count == 1)
        #expect(topology.queues[0].exclusive && topology.queues[0].autoDelete && !topology.queues[0].durable)
        #expect(topology.bindings == [Binding(exchange: "ex", queue: "q", routingKey: "meter.sample")])
        #expect(topology.consumers.map(\.queue) == ["q"])
        #expect(MetricsMonitorTopology.queueName().hasPrefix("berth-monitor-"))
    }
}
