import BerthAMQP
import Logging
import Synchronization

/// Status events on their way to the broker. Events are queued and published in order by one task, in
/// pipelined batches with publisher confirms; while the broker is away they wait (up to `capacity`, then the oldest are
/// dropped and counted) and go out after the reconnect. So an operation never fails because of its own
/// notification; the request that emitted them waits for their confirms (`confirmed(_:)`) before it is
/// acked, so a crash cannot lose an event behind an ack.
final class EventOutbox: Sendable {
    struct Event: Sendable {
        var exchange: String
        var routingKey: String
        var body: [UInt8]
        var eventType: String
    }

    /// The place of an event in the outbox's order: 1 for the first event ever enqueued.
    typealias Sequence = UInt64

    struct State {
        var queue: [Event] = []
        /// `queue[head]` is the oldest event not yet settled; its sequence number is `settled + 1`.
        var head = 0
        var dropped = 0
        var closed = false
        /// The publishing task has ended: nothing queued will be confirmed any more.
        var stopped = false
        /// The sequence number of the last event enqueued.
        var enqueued: Sequence = 0
        /// Every event up to this one is confirmed by the broker, or was dropped (`lost`).
        var settled: Sequence = 0
        /// The newest event dropped from a full buffer.
        var lost: Sequence = 0
        /// Events the broker confirmed while an older one still waits to be sent again (after a nack).
        var confirmedAhead: Set<Sequence> = []
        var waiters: [Waiter] = []
        var nextWaiter = 0
    }

    struct Waiter {
        var id: Int
        var events: ClosedRange<Sequence>
        var continuation: CheckedContinuation<Bool, Never>
    }

    let capacity: Int
    private let state = Mutex(State())
    private let doorbell: AsyncStream<Void>.Continuation
    private let rings: AsyncStream<Void>

    init(capacity: Int) {
        self.capacity = capacity
        (rings, doorbell) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    var pending: Int { state.withLock { $0.queue.count - $0.head } }
    var dropped: Int { state.withLock { $0.dropped } }

    /// Queues an event and returns its sequence number, for `confirmed(_:)`.
    @discardableResult
    func enqueue(_ event: Event, logger: Logger) -> Sequence {
        let (sequence, droppedType, settledNow): (Sequence, String?, [(Waiter, Bool)]) = state.withLock { state in
            var lost: String?
            var settledNow: [(Waiter, Bool)] = []
            if state.queue.count - state.head >= capacity {
                lost = state.queue[state.head].eventType
                state.dropped += 1
                state.lost = state.settled + 1
                settledNow = Self.advance(&state) + Self.settleConfirmed(&state)
            }
            state.queue.append(event)
            state.enqueued += 1
            return (state.enqueued, lost, settledNow)
        }
        for (waiter, confirmed) in settledNow { waiter.continuation.resume(returning: confirmed) }
        if let droppedType {
            logger.error(
                "event buffer full; dropped the oldest event",
                metadata: ["event_type": "\(droppedType)", "dropped_total": "\(dropped)", "capacity": "\(capacity)"])
        }
        doorbell.yield()
        return sequence
    }

    /// Waits until the broker has confirmed every event in `events` (one request's, in order): true. False when
    /// one of them was dropped from a full buffer, the outbox stopped with them unpublished, or the waiting
    /// task was cancelled: the request that emitted them must not be acked then.
    func confirmed(_ events: ClosedRange<Sequence>) async -> Bool {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let answer: Bool? = state.withLock { state in
                    // Settled before anyone waited: only the newest drop is known, so any drop since the first
                    // event counts against them (a rare, safe answer: the request is retried, not lost).
                    if state.settled >= events.upperBound { return state.lost < events.lowerBound }
                    if state.stopped || Task.isCancelled { return false }
                    state.waiters.append(Waiter(id: id, events: events, continuation: continuation))
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(returning: false)
        }
    }

    /// Waits until every event enqueued so far is settled (confirmed, or dropped), or the publisher stopped;
    /// nil when the task is cancelled first. For a drain, after `close()`.
    func flushed() async -> Void? {
        let last = state.withLock { $0.enqueued }
        guard last > 0 else { return () }
        _ = await confirmed(1...last)
        return Task.isCancelled ? nil : ()
    }

    /// Publishes queued events until `close()` and the queue is empty, or the task is cancelled.
    func run(client: AMQPClient, logger: Logger) async {
        await run(logger: logger, stopped: { if case .stopped = client.status { true } else { false } }) { events in
            await client.publish(
                events.map { OutgoingMessage(exchange: $0.exchange, routingKey: $0.routingKey, body: $0.body) }
            ).map { result in result.mapError { $0 as any Error } }
        }
    }

    /// `run` over any publisher, so the order and confirm rules are tested without a broker. `publish` sends
    /// its events in order without waiting between them and answers with each one's outcome, in order.
    ///
    /// Every event queued while a batch is in flight goes out in the next batch, so under load a request's
    /// events wait about one confirm round trip, not one per event ahead of them.
    func run(
        logger: Logger, stopped: @Sendable () -> Bool,
        publish: @Sendable ([Event]) async -> [Result<PublishOutcome, any Error>]
    ) async {
        defer { stop() }
        var iterator = rings.makeAsyncIterator()
        while true {
            let batch = unconfirmed(limit: Self.batchLimit)
            guard !batch.isEmpty else {
                if state.withLock({ $0.closed }) { return }
                // nil: the surrounding task was cancelled (the server stopped), nothing more will ring.
                guard await iterator.next() != nil else { return }
                continue
            }
            let outcomes = await publish(batch.map(\.event))
            var nacked: String?
            var failed = false
            for (entry, outcome) in zip(batch, outcomes) {
                switch outcome {
                case .success(.nacked): nacked = nacked ?? entry.event.eventType
                case .success: confirm(entry.sequence)
                case .failure: failed = true
                }
            }
            if failed {
                // Broker away: keep the events and try again once the client has reconnected.
                if stopped() || Task.isCancelled { return }
                try? await Task.sleep(for: .milliseconds(200))
            } else if let nacked {
                logger.warning("broker refused an event (nack); retrying", metadata: ["event_type": "\(nacked)"])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Events per pipelined batch: enough to cover a burst of boots, few enough that one lost connection
    /// does not send a flood of them again.
    static let batchLimit = 256

    func close() {
        state.withLock { $0.closed = true }
        doorbell.yield()
    }

    /// The publishing task ended: nothing still queued will be confirmed, so nobody waits for it.
    private func stop() {
        let waiting = state.withLock { state -> [Waiter] in
            state.closed = true
            state.stopped = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiting { waiter.continuation.resume(returning: false) }
    }

    /// The oldest events not yet settled nor confirmed out of order, with their sequence numbers.
    private func unconfirmed(limit: Int) -> [(sequence: Sequence, event: Event)] {
        state.withLock { state in
            var batch: [(sequence: Sequence, event: Event)] = []
            var index = state.head
            var sequence = state.settled + 1
            while index < state.queue.count, batch.count < limit {
                if !state.confirmedAhead.contains(sequence) { batch.append((sequence, state.queue[index])) }
                index += 1
                sequence += 1
            }
            return batch
        }
    }

    /// The broker confirmed event `sequence`. It may have been dropped from a full buffer while it was being
    /// published (then it is settled already), or confirmed before an older event that must be sent again
    /// (then it waits in `confirmedAhead` until the events before it settle).
    private func confirm(_ sequence: Sequence) {
        let settledNow = state.withLock { state -> [(Waiter, Bool)] in
            guard sequence > state.settled else { return [] }
            state.confirmedAhead.insert(sequence)
            return Self.settleConfirmed(&state)
        }
        for (waiter, confirmed) in settledNow { waiter.continuation.resume(returning: confirmed) }
    }

    /// Settles the confirmed events at the head, in order.
    private static func settleConfirmed(_ state: inout State) -> [(Waiter, Bool)] {
        var ready: [(Waiter, Bool)] = []
        while state.confirmedAhead.remove(state.settled + 1) != nil {
            ready += advance(&state)
        }
        return ready
    }

    /// Settles the event at the head and hands back the waiters whose last event it was, each with whether all
    /// its events got through.
    private static func advance(_ state: inout State) -> [(Waiter, Bool)] {
        state.head += 1
        state.settled += 1
        // Compact now and then so a long-running worker does not keep every event it ever sent.
        if state.head > 1024, state.head * 2 > state.queue.count {
            state.queue.removeFirst(state.head)
            state.head = 0
        }
        let settled = state.settled
        let lost = state.lost
        var ready: [(Waiter, Bool)] = []
        state.waiters.removeAll { waiter in
            guard waiter.events.upperBound <= settled else { return false }
            // Drops go in order and each settles at once, so a drop among this waiter's events is the newest
            // drop when its last event settles.
            ready.append((waiter, !waiter.events.contains(lost)))
            return true
        }
        return ready
    }
}
