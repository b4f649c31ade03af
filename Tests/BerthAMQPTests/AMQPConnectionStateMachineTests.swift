import Testing

@testable import BerthAMQP

/// The connection rules without a socket or a broker: connects, back-off, confirms and returns matched to their
/// publishes, acks that outlived their connection, and what a loss or a stop does to the publishes in flight.
/// Callers are plain names here; the I/O thread's are continuations.
@Suite struct AMQPConnectionStateMachineTests {
    typealias Machine = AMQPConnectionStateMachine<String>
    typealias Action = Machine.Action
    typealias Resolution = Machine.Resolution

    static let first = AMQPURL(host: "rabbit-1")
    static let second = AMQPURL(host: "rabbit-2")
    static let lost = AMQPError(.connectionLost, "socket closed")
    static let refused = AMQPError(.connect, "connection refused")

    func machine(urls: [AMQPURL] = [first]) -> Machine {
        Machine(settings: .init(urls: urls, initialReconnectDelay: 0.1, maximumReconnectDelay: 2.0))
    }

    /// A machine with its first connection open.
    func open(urls: [AMQPURL] = [first]) -> Machine {
        var m = machine(urls: urls)
        _ = m.receive(.started)
        _ = m.receive(.connected)
        return m
    }

    func publication(
        _ routingKey: String = "reply_1", mandatory: Bool = false, acknowledging: DeliveryReference? = nil
    ) -> Machine.Publication {
        .init(exchange: "", routingKey: routingKey, mandatory: mandatory, acknowledging: acknowledging)
    }

    func returned(_ routingKey: String) -> AMQPReturnedMessage {
        AMQPReturnedMessage(replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: routingKey)
    }

    func publish(_ m: inout Machine, _ callers: [String], mandatory: Bool = false, from sequence: UInt64 = 1) {
        for (offset, caller) in callers.enumerated() {
            let action = m.receive(
                .published(sequence: sequence + UInt64(offset), publication(caller, mandatory: mandatory), by: caller))
            #expect(action == .nothing)
        }
    }

    // MARK: Connecting

    @Test func theFirstConnectStartsTheConsumersAndIsServed() {
        var m = machine()
        #expect(m.receive(.started) == .connect(.init(url: Self.first, generation: 1, startsConsumers: true)))
        #expect(m.receive(.connected) == .serve(generation: 1))
        #expect(m.state == .open)
    }

    @Test func failedConnectsRotateThroughTheBrokersAndBackOffUpToTheMaximum() {
        var m = machine(urls: [Self.first, Self.second])
        #expect(m.receive(.started) == .connect(.init(url: Self.first, generation: 1, startsConsumers: true)))
        var delays: [Double] = []
        var brokers: [String] = []
        for _ in 0..<7 {
            guard case .waitBackOff(let seconds, let broker, Self.refused) = m.receive(.connectFailed(Self.refused))
            else {
                Issue.record("a transient failure must be retried")
                return
            }
            delays.append(seconds)
            brokers.append(broker.host)
            guard case .connect(let attempt) = m.receive(.backOffElapsed) else {
                Issue.record("the back-off must end in a connect")
                return
            }
            #expect(attempt.url == (brokers.count.isMultiple(of: 2) ? Self.first : Self.second))
        }
        #expect(delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
        #expect(brokers == ["rabbit-1", "rabbit-2", "rabbit-1", "rabbit-2", "rabbit-1", "rabbit-2", "rabbit-1"])
        #expect(m.generation == 8, "every connect is a new generation")
    }

    @Test func aSuccessfulConnectResetsTheBackOffAndTheNextLossStartsAtTheFirstBroker() {
        var m = machine(urls: [Self.first, Self.second])
        _ = m.receive(.started)
        for _ in 0..<3 {
            _ = m.receive(.connectFailed(Self.refused))
            _ = m.receive(.backOffElapsed)
        }
        #expect(m.receive(.connected) == .serve(generation: 4))
        #expect(m.failedConnects == 0)
        // A loss reconnects at once (no back-off), starting over at the first broker.
        #expect(
            m.receive(.connectionLost(Self.lost))
                == .reconnect(
                    failing: [], failure: Self.lostBeforeConfirm,
                    next: .init(url: Self.first, generation: 5, startsConsumers: true)))
        #expect(
            m.receive(.connectFailed(Self.refused))
                == .waitBackOff(seconds: 0.1, broker: Self.first, cause: Self.refused))
    }

    static let lostBeforeConfirm = AMQPError(
        .connectionLost, "the broker connection was lost before the confirm: socket closed")

    @Test(arguments: [
        AMQPError(.login, "ACCESS_REFUSED"), AMQPError(.channelClosed, "PRECONDITION_FAILED", replyCode: 406),
        AMQPError(.tls, "certificate verify failed"), AMQPError(.invalidURL, "no host"),
    ])
    func aFirstConnectThatARetryCannotCureIsFatal(error: AMQPError) {
        var m = machine(urls: [Self.first, Self.second])
        _ = m.receive(.started)
        #expect(m.receive(.connectFailed(error)) == .giveUp(broker: Self.first, cause: error))
        #expect(m.state == .finished)
    }

    @Test func afterTheFirstConnectEveryFailureIsRetried() {
        var m = open()
        _ = m.receive(.connectionLost(Self.lost))
        let refusedLogin = AMQPError(.login, "ACCESS_REFUSED")
        #expect(
            m.receive(.connectFailed(refusedLogin))
                == .waitBackOff(seconds: 0.1, broker: Self.first, cause: refusedLogin))
    }

    // MARK: Confirms and returns

    @Test func aConfirmSettlesItsPublishOnly() {
        var m = open()
        publish(&m, ["a", "b"])
        #expect(
            m.receive(.confirmed(sequence: 2, multiple: false)) == .resolve([.init(caller: "b", outcome: .confirmed)]))
        #expect(m.pending.map(\.caller) == ["a"])
    }

    @Test func aMultipleConfirmSettlesEverythingUpToItInPublishOrder() {
        var m = open()
        publish(&m, ["a", "b", "c", "d"])
        #expect(
            m.receive(.confirmed(sequence: 3, multiple: true))
                == .resolve([
                    .init(caller: "a", outcome: .confirmed), .init(caller: "b", outcome: .confirmed),
                    .init(caller: "c", outcome: .confirmed),
                ]))
        #expect(m.pending.map(\.caller) == ["d"])
        #expect(m.receive(.nacked(sequence: 4, multiple: true)) == .resolve([.init(caller: "d", outcome: .nacked)]))
        #expect(m.pending.isEmpty)
    }

    @Test func aNackIsTheCallersToHandle() {
        var m = open()
        publish(&m, ["a", "b"])
        #expect(m.receive(.nacked(sequence: 1, multiple: false)) == .resolve([.init(caller: "a", outcome: .nacked)]))
        #expect(
            m.receive(.confirmed(sequence: 2, multiple: false)) == .resolve([.init(caller: "b", outcome: .confirmed)]))
    }

    @Test func aReturnBeforeTheConfirmMakesItReturned() {
        var m = open()
        publish(&m, ["reply_a", "reply_b"], mandatory: true)
        #expect(m.receive(.returned(returned("reply_b"))) == .nothing)
        #expect(
            m.receive(.confirmed(sequence: 2, multiple: true))
                == .resolve([
                    .init(caller: "reply_a", outcome: .confirmed),
                    .init(caller: "reply_b", outcome: .returned(returned("reply_b"))),
                ]))
    }

    @Test func aReturnBelongsToTheOldestUnsettledMandatoryPublishOfItsRoute() {
        var m = open()
        _ = m.receive(.published(sequence: 1, publication("reply_a"), by: "not mandatory"))
        publish(&m, ["reply_a", "reply_a"], mandatory: true, from: 2)
        _ = m.receive(.returned(returned("reply_a")))
        _ = m.receive(.returned(returned("reply_a")))
        #expect(m.pending.map { $0.returned != nil } == [false, true, true])
    }

    @Test func aReturnAfterItsConfirmMatchesNothing() {
        var m = open()
        publish(&m, ["reply_a"], mandatory: true)
        #expect(
            m.receive(.confirmed(sequence: 1, multiple: false))
                == .resolve([.init(caller: "reply_a", outcome: .confirmed)]))
        #expect(m.receive(.returned(returned("reply_a"))) == .nothing)
        publish(&m, ["reply_a"], mandatory: true, from: 2)
        #expect(
            m.receive(.confirmed(sequence: 2, multiple: false))
                == .resolve([.init(caller: "reply_a", outcome: .confirmed)]))
    }

    @Test func aConfirmedReplyAcksItsRequestOnlyOnThisConnection() {
        var m = open()
        _ = m.receive(.connectionLost(Self.lost))
        _ = m.receive(.connected)
        #expect(m.generation == 2)
        _ = m.receive(
            .published(sequence: 1, publication(acknowledging: .init(deliveryTag: 7, generation: 2)), by: "now"))
        _ = m.receive(
            .published(sequence: 2, publication(acknowledging: .init(deliveryTag: 7, generation: 1)), by: "old"))
        _ = m.receive(
            .published(sequence: 3, publication(acknowledging: .init(deliveryTag: 8, generation: 2)), by: "nack"))
        #expect(
            m.receive(.confirmed(sequence: 2, multiple: true))
                == .resolve([
                    .init(caller: "now", outcome: .confirmed, ack: 7), .init(caller: "old", outcome: .confirmed),
                ]))
        #expect(m.receive(.nacked(sequence: 3, multiple: false)) == .resolve([.init(caller: "nack", outcome: .nacked)]))
    }

    @Test func aReturnedReplyDoesNotAckItsRequest() {
        var m = open()
        _ = m.receive(
            .published(
                sequence: 1,
                publication("reply_a", mandatory: true, acknowledging: .init(deliveryTag: 3, generation: 1)),
                by: "a"))
        _ = m.receive(.returned(returned("reply_a")))
        #expect(
            m.receive(.confirmed(sequence: 1, multiple: false))
                == .resolve([.init(caller: "a", outcome: .returned(returned("reply_a")))]))
    }

    // MARK: Acks and rejects

    @Test func acksAndRejectsOfAnEarlierConnectionAreDropped() {
        var m = open()
        #expect(m.receive(.ackRequested(.init(deliveryTag: 5, generation: 1))) == .sendAck(deliveryTag: 5))
        _ = m.receive(.connectionLost(Self.lost))
        _ = m.receive(.connected)
        #expect(m.receive(.ackRequested(.init(deliveryTag: 5, generation: 1))) == .drop(deliveryTag: 5))
        #expect(
            m.receive(.rejectRequested(.init(deliveryTag: 6, generation: 1), requeue: true)) == .drop(deliveryTag: 6))
        #expect(
            m.receive(.rejectRequested(.init(deliveryTag: 1, generation: 2), requeue: false))
                == .sendReject(deliveryTag: 1, requeue: false))
    }

    // MARK: Losing the connection

    @Test func aLossFailsEveryPendingPublishInOrder() {
        var m = open()
        publish(&m, ["a", "b", "c"])
        _ = m.receive(.confirmed(sequence: 1, multiple: false))
        guard case .reconnect(let failing, let failure, let next) = m.receive(.connectionLost(Self.lost)) else {
            Issue.record("a loss must reconnect")
            return
        }
        #expect(failing == ["b", "c"])
        #expect(failure == Self.lostBeforeConfirm)
        #expect(next.generation == 2)
        #expect(m.pending.isEmpty, "nothing of the old connection can be confirmed any more")
    }

    @Test func sequenceNumbersOfANewConnectionStartOverWithoutMatchingOldPublishes() {
        var m = open()
        publish(&m, ["old"])
        _ = m.receive(.connectionLost(Self.lost))
        _ = m.receive(.connected)
        publish(&m, ["new"])
        #expect(
            m.receive(.confirmed(sequence: 1, multiple: true)) == .resolve([.init(caller: "new", outcome: .confirmed)]))
    }

    // MARK: Stopping

    @Test func aStopDrainsTheCommandsThenFailsWhatIsUnconfirmed() {
        var m = open()
        publish(&m, ["a"])
        #expect(m.receive(.stopRequested) == .drain)
        // Commands asked before the stop still go out, and are still matched.
        publish(&m, ["b"], from: 2)
        #expect(m.receive(.ackRequested(.init(deliveryTag: 9, generation: 1))) == .sendAck(deliveryTag: 9))
        #expect(
            m.receive(.drained)
                == .finish(failing: ["a", "b"], failure: AMQPError(.shutdown, "the broker client stopped")))
        #expect(m.state == .finished)
    }

    @Test func aLossWhileDrainingFailsThePendingAsLostAndDoesNotReconnect() {
        var m = open()
        _ = m.receive(.stopRequested)
        publish(&m, ["a"])
        #expect(m.receive(.connectionLost(Self.lost)) == .finish(failing: ["a"], failure: Self.lostBeforeConfirm))
    }

    @Test func aStopDuringTheBackOffEndsWithoutAnotherConnect() {
        var m = open()
        _ = m.receive(.connectionLost(Self.lost))
        _ = m.receive(.connectFailed(Self.refused))
        #expect(m.state == .backingOff)
        #expect(
            m.receive(.stopRequested)
                == .finish(failing: [], failure: AMQPError(.shutdown, "the broker client stopped")))
    }

    @Test func aStopBeforeTheReconnectEndsWithoutIt() {
        var m = open()
        _ = m.receive(.connectionLost(Self.lost))
        #expect(m.state == .connecting)
        #expect(
            m.receive(.stopRequested)
                == .finish(failing: [], failure: AMQPError(.shutdown, "the broker client stopped")))
    }

    // MARK: Consumers and flow control

    @Test func cancelledConsumersStayCancelledAcrossReconnects() {
        var m = open()
        #expect(m.receive(.cancelConsumersRequested) == .cancelConsumers)
        guard case .reconnect(_, _, let next) = m.receive(.connectionLost(Self.lost)) else {
            Issue.record("a loss must reconnect")
            return
        }
        #expect(!next.startsConsumers)
        _ = m.receive(.connectFailed(Self.refused))
        #expect(m.receive(.backOffElapsed) == .connect(.init(url: Self.first, generation: 3, startsConsumers: false)))
    }

    @Test func blockedAndUnblockedAreReportedOncePerChange() {
        var m = open()
        #expect(m.receive(.unblocked) == .nothing)
        #expect(m.receive(.blocked(reason: "low on memory")) == .reportBlocked(reason: "low on memory"))
        #expect(m.receive(.blocked(reason: "low on memory")) == .nothing)
        // Publishes still go out while blocked: the broker holds them until its alarm clears.
        publish(&m, ["a"])
        #expect(m.receive(.unblocked) == .reportUnblocked)
        #expect(!m.blocked)
    }

    @Test func aNewConnectionStartsUnblocked() {
        var m = open()
        _ = m.receive(.blocked(reason: "low on disk"))
        _ = m.receive(.connectionLost(Self.lost))
        _ = m.receive(.connected)
        #expect(!m.blocked)
        #expect(m.receive(.blocked(reason: "low on disk")) == .reportBlocked(reason: "low on disk"))
    }
}
