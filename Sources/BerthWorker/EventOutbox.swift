import BerthAMQP
import Logging
import Synchronization

/// Status events on their way to the broker. Events are queued and published in order by one task, each
/// with a publisher confirm; while the broker is away they wait (up to `capacity`, then the oldest are
/// dropped and counted) and go out after the reconnect. So an operation never waits on, or fails because
/// of, its own notification.
final class EventOutbox: Sendable {
    struct Event: Sendable {
        var exchange: String
        var routingKey: String
        var body: [UInt8]
        var eventType: String
    }

    struct State {
        var queue: [Event] = []
        var head = 0
        var dropped = 0
        var closed = false
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

    func enqueue(_ event: Event, logger: Logger) {
        let droppedType: String? = state.withLock { state in
            var lost: String?
            if state.queue.count - state.head >= capacity {
                lost = state.queue[state.head].eventType
                state.head += 1
                state.dropped += 1
            }
            state.queue.append(event)
            return lost
        }
        if let droppedType {
            logger.error(
                "event buffer full; dropped the oldest event",
                metadata: ["event_type": "\(droppedType)", "dropped_total": "\(dropped)", "capacity": "\(capacity)"])
        }
        doorbell.yield()
    }

    /// Publishes queued events until `close()` and the queue is empty, or the task is cancelled.
    func run(client: AMQPClient, logger: Logger) async {
        var iterator = rings.makeAsyncIterator()
        while true {
            guard let event = peek() else {
                if state.withLock({ $0.closed }) { return }
                // nil: the surrounding task was cancelled (the server stopped), nothing more will ring.
                guard await iterator.next() != nil else { return }
                continue
            }
            do {
                let outcome = try await client.publish(
                    exchange: event.exchange, routingKey: event.routingKey, body: event.body)
                if outcome == .nacked {
                    logger.warning("broker refused an event (nack); retrying", metadata: ["event_type": "\(event.eventType)"])
                    try? await Task.sleep(for: .milliseconds(200))
                    continue
                }
                pop()
            } catch {
                // Broker away: keep the event and try again once the client has reconnected.
                if case .stopped = client.status { return }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func close() {
        state.withLock { $0.closed = true }
        doorbell.yield()
    }

    private func peek() -> Event? {
        state.withLock { state in state.head < state.queue.count ? state.queue[state.head] : nil }
    }

    private func pop() {
        state.withLock { state in
            state.head += 1
            // Compact now and then so a long-running worker does not keep every event it ever sent.
            if state.head > 1024, state.head * 2 > state.queue.count {
                state.queue.removeFirst(state.head)
                state.head = 0
            }
        }
    }
}
