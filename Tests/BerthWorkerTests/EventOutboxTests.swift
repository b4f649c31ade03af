import BerthAMQP
import Logging
import Testing

@testable import BerthWorker

/// The buffer behind "no event emitted while the broker is away is lost, within the buffer" (DESIGN §7):
/// Tests/interop/test_broker_restart.py shows the delivery after a real restart; this pins the bound.
@Suite struct EventOutboxTests {
    private let logger = Logger(label: "test.outbox")

    private func event(_ index: Int) -> EventOutbox.Event {
        EventOutbox.Event(
            exchange: "berth", routingKey: "notifications.info", body: Array("event \(index)".utf8),
            eventType: "instance.create.end")
    }

    @Test(arguments: [1, 5, 64])
    func everyEventWithinTheCapacityWaits(capacity: Int) {
        let outbox = EventOutbox(capacity: capacity)
        for index in 0..<capacity { outbox.enqueue(event(index), logger: logger) }
        #expect(outbox.pending == capacity)
        #expect(outbox.dropped == 0)
    }

    @Test func pastTheCapacityTheOldestAreDroppedAndCounted() {
        let outbox = EventOutbox(capacity: 3)
        for index in 0..<5 { outbox.enqueue(event(index), logger: logger) }
        #expect(outbox.pending == 3)
        #expect(outbox.dropped == 2)
        outbox.enqueue(event(5), logger: logger)
        #expect(outbox.pending == 3)
        #expect(outbox.dropped == 3)
    }

    @Test func theWorkerDefaultHoldsTenThousand() throws {
        let configuration = RPCServerConfiguration(urls: [try AMQPURL.parse("amqp://127.0.0.1/")], host: "h")
        #expect(configuration.eventBufferCapacity == 10_000)
        let outbox = EventOutbox(capacity: configuration.eventBufferCapacity)
        for index in 0..<10_000 { outbox.enqueue(event(index), logger: logger) }
        #expect(outbox.pending == 10_000)
        #expect(outbox.dropped == 0)
    }
}
