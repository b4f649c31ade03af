import BerthAMQP
import Logging
import Testing

@testable import BerthRPC

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
            await outbox.run(logger: logger, stopped: { false }) { events in
                var outcomes: [Result<PublishOutcome, any Error>] = []
                for _ in events { outcomes.append(.success(await gate.next())) }
                return outcomes
            }
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
        await outbox.run(logger: logger, stopped: { true }) { events in events.map { _ in .failure(CancellationError()) } }
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

    // MARK: Pipelining: events go out in batches, in order, without a confirm round trip each

    @Test func everyQueuedEventGoesOutInOneBatch() async {
        let outbox = EventOutbox(capacity: 1000)
        let sequences = (0..<300).map { outbox.enqueue(event($0), logger: logger) }
        let recorder = BatchRecorder()
        let publisher = Task {
            await outbox.run(logger: logger, stopped: { false }) { events in
                await recorder.record(events)
                return events.map { _ in .success(.confirmed) }
            }
        }
        #expect(await outbox.confirmed(sequences.first!...sequences.last!))
        outbox.close()
        await publisher.value
        // 256 at once (the batch limit), then the rest: two confirm round trips for 300 events.
        #expect(await recorder.sizes == [EventOutbox.batchLimit, 300 - EventOutbox.batchLimit])
        #expect(await recorder.bodies == (0..<300).map { "event \($0)" })
    }

    @Test func aNackedEventIsSentAgainAloneAndTheOnesAfterItWaitForIt() async {
        let outbox = EventOutbox(capacity: 16)
        let sequences = (0..<3).map { outbox.enqueue(event($0), logger: logger) }
        let recorder = BatchRecorder()
        let publisher = Task {
            await outbox.run(logger: logger, stopped: { false }) { events in
                let round = await recorder.record(events)
                // First round: the middle event is refused, its neighbours confirmed.
                return events.indices.map { index in round == 0 && index == 1 ? .success(.nacked) : .success(.confirmed) }
            }
        }
        let first = Task { await outbox.confirmed(sequences[0]...sequences[0]) }
        let all = Task { await outbox.confirmed(sequences[0]...sequences[2]) }
        #expect(await first.value)
        #expect(await all.value)
        outbox.close()
        await publisher.value
        // Event 2 was confirmed in the first round: it is not sent twice.
        #expect(await recorder.bodies == ["event 0", "event 1", "event 2", "event 1"])
    }

    @Test func eventsOfALostConnectionAreSentAgainInOrder() async {
        let outbox = EventOutbox(capacity: 16)
        let sequences = (0..<3).map { outbox.enqueue(event($0), logger: logger) }
        let recorder = BatchRecorder()
        let publisher = Task {
            await outbox.run(logger: logger, stopped: { false }) { events in
                let round = await recorder.record(events)
                // First round: the connection is lost after event 0's confirm.
                return events.indices.map { index in
                    round == 0 && index > 0 ? .failure(CancellationError()) : .success(.confirmed)
                }
            }
        }
        #expect(await outbox.confirmed(sequences[0]...sequences[2]))
        outbox.close()
        await publisher.value
        #expect(await recorder.sizes == [3, 2])
        #expect(await recorder.bodies == ["event 0", "event 1", "event 2", "event 1", "event 2"])
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

/// Records the batches a publisher was handed.
private actor BatchRecorder {
    private(set) var sizes: [Int] = []
    private(set) var bodies: [String] = []

    /// Records a batch and returns its round: 0 for the first.
    @discardableResult
    func record(_ events: [EventOutbox.Event]) -> Int {
        sizes.append(events.count)
        bodies += events.map { String(decoding: $0.body, as: UTF8.self) }
        return sizes.count - 1
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

    /// The ids are a function of the request across versions too: a request redelivered to an upgraded worker
    /// must emit its events with the ids the old one gave them. (Python: sha256 of the same text.)
    @Test func theIDsAreStableAcrossVersions() {
        let identity = EventIdentity(request: "r", eventType: "instance.create.end", occurrence: 0)
        #expect(identity.messageID == "0d552436-023a-81c1-8fb9-511d2b0721e6")
        #expect(identity.uniqueID == "f36b9c6f745ec5e3a4cb65ed2a8b0194")
    }
}
