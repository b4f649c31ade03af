import BerthAMQP
import BerthJSON
import BerthWire
import Testing

@testable import BerthRPC

/// The delivery rules without a socket or a broker: every sequence of what can happen to one request, and
/// what the server must do next. The rule under all of them: acked only after everything the request sent
/// is confirmed, and settled in the ledger first.
@Suite struct RequestDeliveryTests {
    typealias Event = RequestDelivery.Event
    typealias Action = RequestDelivery.Action

    static let done: Result<JSONValue, RPCFailure> = .success(["ok": true])
    static let incompatible: Result<JSONValue, RPCFailure> = .failure(.berth("HostIncompatible", "needs 64 vCPUs"))

    func machine(
        call: Bool = true, canHandOn: Bool = false, maxAttempts: Int = 3, maxHandOffs: Int = 16,
        handOff: HostHandOff = HostHandOff()
    ) -> RequestDelivery {
        RequestDelivery(
            rules: .init(
                method: "boot_instance", host: "h1", maxAttempts: maxAttempts, maxHandOffs: maxHandOffs,
                canHandOn: canHandOn, isCall: call),
            handOff: handOff)
    }

    /// Feeds the events in order and returns every action, the last one included.
    func drive(_ machine: inout RequestDelivery, _ events: [Event]) -> [Action] {
        events.map { machine.receive($0) }
    }

    @Test func aCallWithoutEventsIsAckedByTheReplysConfirm() {
        var m = machine()
        let actions = drive(&m, [.counted(attempt: 1), .finished(Self.done, events: nil), .replied(true)])
        #expect(actions == [.run, .reply(Self.done, ackOnConfirm: true), .settle])
        #expect(m.state == .done)
    }

    @Test func aCallWithEventsWaitsForThemAfterItsReply() {
        var m = machine()
        let actions = drive(
            &m, [.counted(attempt: 1), .finished(Self.done, events: 4...7), .replied(true), .eventsConfirmed(true)])
        #expect(actions == [.run, .reply(Self.done, ackOnConfirm: false), .awaitEvents(4...7), .settleAndAck])
    }

    @Test func aCastIsAckedOnlyAfterItsEvents() {
        var m = machine(call: false)
        let actions = drive(&m, [.counted(attempt: 1), .finished(Self.done, events: 9...10), .eventsConfirmed(true)])
        #expect(actions == [.run, .awaitEvents(9...10), .settleAndAck])
    }

    @Test func aCastWithoutEventsIsAckedWhenItFinishes() {
        var m = machine(call: false)
        #expect(drive(&m, [.counted(attempt: 1), .finished(Self.done, events: nil)]) == [.run, .settleAndAck])
    }

    @Test func eventsThatDidNotGetThroughSendTheRequestBack() {
        var call = machine()
        #expect(
            drive(&call, [.counted(attempt: 1), .finished(Self.done, events: 1...1), .replied(true), .eventsConfirmed(false)])
                .last == .requeue)
        var cast = machine(call: false)
        #expect(drive(&cast, [.counted(attempt: 1), .finished(Self.done, events: 1...1), .eventsConfirmed(false)]).last == .requeue)
    }

    @Test func aConnectionLostBeforeTheReplysConfirmAcksNothing() {
        var m = machine()
        #expect(drive(&m, [.counted(attempt: 1), .finished(Self.done, events: 2...3), .replied(false)]).last == .leave)
        var plain = machine()
        #expect(drive(&plain, [.counted(attempt: 1), .finished(Self.done, events: nil), .replied(false)]).last == .leave)
    }

    @Test func failuresAreAnsweredLikeResults() {
        let failure: Result<JSONValue, RPCFailure> = .failure(.berth("ImageNotFound", "no image"))
        var m = machine()
        let actions = drive(&m, [.counted(attempt: 1), .finished(failure, events: 1...2)])
        #expect(actions.last == .reply(failure, ackOnConfirm: false))
    }

    @Test func pastTheAttemptLimitTheRequestIsDeadLetteredWithoutRunning() {
        var m = machine(maxAttempts: 3)
        let action = m.receive(.counted(attempt: 4))
        guard case .deadLetter(let reason, let failureClass) = action else {
            Issue.record("expected a dead letter, got \(action)")
            return
        }
        #expect(failureClass == "RetryLimitExceeded")
        #expect(reason.contains("boot_instance was started 3 times without finishing"))
        #expect(m.receive(.deadLettered(true)) == .settle)
    }

    @Test func aDeadLetterThatDidNotGoOutLeavesTheRequest() {
        var m = machine(maxAttempts: 1)
        _ = m.receive(.counted(attempt: 2))
        #expect(m.receive(.deadLettered(false)) == .leave)
    }

    @Test func aTimeoutIsRetriedUntilTheLastAttempt() {
        var early = machine(maxAttempts: 2)
        #expect(drive(&early, [.counted(attempt: 1), .timedOut]) == [.run, .requeue])
        var last = machine(maxAttempts: 2)
        let actions = drive(&last, [.counted(attempt: 2), .timedOut])
        guard case .deadLetter(let reason, "RetryLimitExceeded") = actions.last else {
            Issue.record("expected a dead letter, got \(actions)")
            return
        }
        #expect(reason.contains("timed out 2 times"))
    }

    @Test func shutdownHandsTheAttemptBack() {
        var m = machine()
        #expect(drive(&m, [.counted(attempt: 1), .cancelled]) == [.run, .handBack])
    }

    @Test func aBootThisHostCannotRunGoesToThePool() {
        var m = machine(canHandOn: true)
        let actions = drive(&m, [.counted(attempt: 1), .finished(Self.incompatible, events: 1...1)])
        guard case .handOn(let handOff) = actions.last else {
            Issue.record("expected a hand-off, got \(actions)")
            return
        }
        #expect(handOff.refusedBy == ["h1"] && handOff.count == 1)
        #expect(m.receive(.handedOn(true)) == .forgetAndAck)
    }

    @Test func aHandOffTheBrokerDidNotTakeGoesBackToTheQueue() {
        var m = machine(canHandOn: true)
        _ = drive(&m, [.counted(attempt: 1), .finished(Self.incompatible, events: nil)])
        #expect(m.receive(.handedOn(false)) == .requeue)
    }

    @Test func aBootThisHostRefusedBeforeIsPassedOnAfterAPauseWithoutRunning() {
        var refused = HostHandOff()
        refused.record(host: "h1", reason: "too small")
        var m = machine(canHandOn: true, handOff: refused)
        #expect(m.receive(.counted(attempt: 1)) == .pause(refused.pause))
        guard case .handOn(let handOff) = m.receive(.paused) else {
            Issue.record("expected a hand-off")
            return
        }
        #expect(handOff.count == 2)
    }

    @Test func whenThePoolIsOutOfPassesTheCallerHearsEveryRefusal() {
        var seen = HostHandOff()
        seen.record(host: "h2", reason: "needs kvm")
        var m = machine(canHandOn: true, maxHandOffs: 1, handOff: seen)
        let actions = drive(&m, [.counted(attempt: 1), .finished(Self.incompatible, events: 3...4)])
        guard case .reply(.failure(let failure), ackOnConfirm: false) = actions.last else {
            Issue.record("expected the final answer, got \(actions)")
            return
        }
        #expect(failure.className == "HostIncompatible")
        #expect(failure.message.contains("h2: needs kvm") && failure.message.contains("h1: needs 64 vCPUs"))
        #expect(drive(&m, [.replied(true), .eventsConfirmed(true)]) == [.awaitEvents(3...4), .settleAndAck])
    }

    @Test func aCallAddressedToOneHostIsAnsweredNotHandedOn() {
        var m = machine(canHandOn: false)
        #expect(
            drive(&m, [.counted(attempt: 1), .finished(Self.incompatible, events: nil)]).last
                == .reply(Self.incompatible, ackOnConfirm: true))
    }
}
