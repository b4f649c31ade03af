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

    // MARK: Confirms: a request's ack waits for its events

    @Test func aWaitEndsWhenItsLastEventIsConfirmed() async {
        let outbox = EventOutbox(capacity: 16)
        let first = outbox.enqueue(event(0), logger: logger)
        let last = outbox.enqueue(event(1), logger: logger)
        let gate = PublishGate()
        let publisher = Task {
            await outbox.run(logger: logger, stopped: { false }) { _ in await gate.next() }
        }
        let waiter = Task { await outbox.confirmed(first...last) }
        await gate.confirm()  // event 0 confirmed: the wait goes on
        await gate.confirm()  // event 1: done
        #expect(await waiter.value)
        #expect(await outbox.confirmed(first...first))
        outbox.close()
        await publisher.value
    }

    @Test func aWaitFailsWhenThePublisherStopsWithTheEventsUnconfirmed() async {
        let outbox = EventOutbox(capacity: 16)
        let sequence = outbox.enqueue(event(0), logger: logger)
        let waiter = Task { await outbox.confirmed(sequence...sequence) }
        // The broker is away and the client stopped: the event is never confirmed.
        await outbox.run(logger: logger, stopped: { true }) { _ in throw CancellationError() }
        #expect(await waiter.value == false)
        #expect(await outbox.confirmed(sequence...sequence) == false)
    }

    @Test func aWaitFailsWhenOneOfItsEventsWasDropped() async {
        let outbox = EventOutbox(capacity: 2)
        let mine = outbox.enqueue(event(0), logger: logger)
        let waiter = Task { await outbox.confirmed(mine...mine) }
        outbox.enqueue(event(1), logger: logger)
        outbox.enqueue(event(2), logger: logger)  // full: event 0 is dropped
        #expect(await waiter.value == false)
        #expect(outbox.dropped == 1)
    }

    @Test func aCancelledWaitEnds() async {
        let outbox = EventOutbox(capacity: 2)
        let sequence = outbox.enqueue(event(0), logger: logger)
        let waiter = Task { await outbox.confirmed(sequence...sequence) }
        waiter.cancel()
        #expect(await waiter.value == false)
    }
}

/// A publisher whose confirms the test hands out one at a time.
private actor PublishGate {
    private var waiting: [CheckedContinuation<PublishOutcome, Never>] = []
    private var credits = 0

    func next() async -> PublishOutcome {
        if credits > 0 {
            credits -= 1
            return .confirmed
        }
        return await withCheckedContinuation { waiting.append($0) }
    }

    func confirm() {
        if waiting.isEmpty { credits += 1 } else { waiting.removeFirst().resume(returning: .confirmed) }
    }
}

/// A redelivered request's events carry the ids of the first run's, so a copy is recognisable.
@Suite struct EventIdentityTests {
    @Test func theSameRequestAndPlaceGiveTheSameIDs() {
        let first = EventIdentity(request: "4f6c", eventType: "instance.create.end", occurrence: 0)
        #expect(first == EventIdentity(request: "4f6c", eventType: "instance.create.end", occurrence: 0))
        #expect(first != EventIdentity(request: "4f6c", eventType: "instance.create.end", occurrence: 1))
        #expect(first != EventIdentity(request: "4f6d", eventType: "instance.create.end", occurrence: 0))
        #expect(first != EventIdentity(request: "4f6c", eventType: "instance.create.start", occurrence: 0))
    }

    @Test func theIDsLookLikeOslos() throws {
        let identity = EventIdentity(request: "r", eventType: "instance.create.end", occurrence: 0)
        let parts = identity.messageID.split(separator: "-").map(\.count)
        #expect(parts == [8, 4, 4, 4, 12])
        let uuid = Array(identity.messageID.replacingOccurrences(of: "-", with: ""))
        #expect(uuid[12] == "8")
        #expect("89ab".contains(uuid[16]))
        #expect(identity.uniqueID.count == 32)
        #expect(identity.uniqueID.allSatisfy { $0.isHexDigit && !$0.isUppercase })
    }
}
