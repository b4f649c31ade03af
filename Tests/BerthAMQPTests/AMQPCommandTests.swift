import Logging
import Testing

@testable import BerthAMQP

/// The I/O loop's commands on a connection that dies under them (issue 16: a worker SIGTERMed while its broker
/// connection went away crashed with "cancelConsumers() tried to resume its continuation more than once").
@Suite struct AMQPCommandTests {
    /// A connection that is already gone: every synchronous method fails as librabbitmq's would.
    final class LostConnection: AMQPCommandChannel {
        let generation: UInt64 = 1
        var cancelled: [String] = []

        private func lost() -> AMQPError { AMQPError(.connectionLost, "lost the broker connection: socket closed") }
        func publish(
            exchange: String, routingKey: String, mandatory: Bool, properties: AMQPProperties, body: [UInt8]
        ) throws(AMQPError) -> UInt64 { throw lost() }
        func ack(deliveryTag: UInt64) throws(AMQPError) { throw lost() }
        func reject(deliveryTag: UInt64, requeue: Bool) throws(AMQPError) { throw lost() }
        func cancel(consumerTag: String) throws(AMQPError) {
            cancelled.append(consumerTag)
            throw lost()
        }
        func deleteQueue(_ name: String) throws(AMQPError) { throw lost() }
    }

    /// The loop holds its client unowned, as the client's thread does: keep the client alive beside it.
    let client: AMQPClient = {
        var topology = AMQPTopology()
        topology.consumers = [("compute", "berth-h-topic", []), ("compute.h", "berth-h-server", [])]
        return AMQPClient(
            configuration: .init(urls: [AMQPURL()], connectionName: "test", topology: topology),
            logger: Logger(label: "test"))
    }()

    /// A loop whose machine holds an open connection of generation 1, like `LostConnection`.
    func loop() -> IOLoop {
        let loop = IOLoop(client: client)
        _ = loop.machine.receive(.started)
        _ = loop.machine.receive(.connected)
        return loop
    }

    @Test func aDrainWhoseCancelMeetsALostConnectionResumesOnce() async {
        let loop = loop()
        let connection = LostConnection()
        // A second resume is a fatal error ("SWIFT TASK CONTINUATION MISUSE"): this test would crash.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            #expect(throws: AMQPError.self) { try loop.execute([.cancelConsumers(continuation)], on: connection) }
        }
        #expect(connection.cancelled == ["berth-h-topic"])
        #expect(loop.machine.consumersCancelled, "a reconnect must not start the consumers again")
    }

    @Test func aQueueDeleteOnALostConnectionFailsItsCallerOnce() async {
        let loop = loop()
        await #expect(throws: AMQPError.self) {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                #expect(throws: AMQPError.self) {
                    try loop.execute([.deleteQueue("compute_fanout_1", continuation)], on: LostConnection())
                }
            }
        }
    }

    @Test func commandsBehindAFailedOneAreAbandonedOnce() async {
        let loop = loop()
        await withCheckedContinuation { (cancelled: CheckedContinuation<Void, Never>) in
            Task {
                await #expect(throws: AMQPError.self) {
                    try await withCheckedThrowingContinuation { (deleted: CheckedContinuation<Void, any Error>) in
                        #expect(throws: AMQPError.self) {
                            try loop.execute(
                                [
                                    .ack(DeliveryReference(deliveryTag: 7, generation: 1)), .cancelConsumers(cancelled),
                                    .deleteQueue("q", deleted),
                                ],
                                on: LostConnection())
                        }
                    }
                }
            }
        }
    }
}
