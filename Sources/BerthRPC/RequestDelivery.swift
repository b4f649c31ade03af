import BerthJSON
import BerthWire

/// The delivery rules of one admitted request (DESIGN §2, §9), from its counted start to its ack, as a state
/// machine in the style of async-http-client's connection state machines: `RPCServer` reports what happened
/// (`receive(_:)`) and carries out the action it gets back; nothing else decides whether a request is run,
/// answered, handed on, dead-lettered, handed back or acked.
///
/// The rule it keeps: a request, call or cast, is acked only after everything it sent is confirmed by the
/// broker (its reply, then its events) and it was marked settled; on a lost connection nothing is acked, and
/// the redelivered request finishes idempotently.
struct RequestDelivery {
    struct Rules {
        var method: String
        var host: String
        var maxAttempts: Int
        var maxHandOffs: Int
        /// A boot sent to the whole pool, which another host may be able to run.
        var canHandOn: Bool
        /// A call (it has a reply queue); a cast otherwise.
        var isCall: Bool
    }

    enum Event {
        /// The ledger counted this start: `attempt` starts so far, this one included.
        case counted(attempt: Int)
        /// The handler returned; `events` are the outbox positions of the events it emitted.
        case finished(Result<JSONValue, RPCFailure>, events: ClosedRange<EventOutbox.Sequence>?)
        /// The handler outlived `--handler-timeout` and was abandoned.
        case timedOut
        /// Shutdown overtook the handler.
        case cancelled
        /// The pause before passing on a boot this host refused before is over.
        case paused
        /// The reply was confirmed by the broker (or dropped because its queue stayed gone): true; the broker
        /// went away first: false.
        case replied(Bool)
        /// The request's events were all confirmed: true; one was dropped or the outbox stopped: false.
        case eventsConfirmed(Bool)
        /// The copy for the pool was confirmed: true; refused or the broker went away: false.
        case handedOn(Bool)
        /// The dead letter (and the caller's failure reply) went out: true; the broker went away: false.
        case deadLettered(Bool)
    }

    enum Action: Equatable {
        case run
        /// Wait, then report `.paused`.
        case pause(Duration)
        /// Republish with this host's refusal on it; report `.handedOn`.
        case handOn(HostHandOff)
        /// Answer the caller; `ackOnConfirm`: no events to wait for, so the AMQP thread acks on the reply's
        /// confirm. Report `.replied`.
        case reply(Result<JSONValue, RPCFailure>, ackOnConfirm: Bool)
        /// Report `.eventsConfirmed` when the outbox has confirmed these.
        case awaitEvents(ClosedRange<EventOutbox.Sequence>)
        /// Answer the caller (calls) with `failureClass` and republish to the dead-letter exchange; report
        /// `.deadLettered`.
        case deadLetter(reason: String, failureClass: String)
        /// Mark the request settled in the ledger, then ack it. Done.
        case settleAndAck
        /// Mark it settled; the AMQP thread acked it already with the reply's confirm. Done.
        case settle
        /// Forget its count (its copy runs elsewhere), then ack. Done.
        case forgetAndAck
        /// Reject it back to the queue; it runs again. Done.
        case requeue
        /// Give back the attempt (no fault of the request's) and leave it unacked. Done.
        case handBack
        /// Leave it unacked: the connection is gone and the broker redelivers it. Done.
        case leave
    }

    enum State: Equatable {
        case arrived
        case running(attempt: Int)
        case pausing
        case handingOn
        case replying(events: ClosedRange<EventOutbox.Sequence>?)
        case awaitingEvents
        case deadLettering
        case done
    }

    let rules: Rules
    private(set) var state = State.arrived
    private(set) var handOff: HostHandOff

    init(rules: Rules, handOff: HostHandOff) {
        self.rules = rules
        self.handOff = handOff
    }

    mutating func receive(_ event: Event) -> Action {
        switch (state, event) {
        case (.arrived, .counted(let attempt)):
            if attempt > rules.maxAttempts {
                state = .deadLettering
                return .deadLetter(
                    reason: "\(rules.method) was started \(attempt - 1) times without finishing (the worker crashed or the handler "
                        + "timed out each time); the limit is \(rules.maxAttempts) (berth worker --max-attempts)",
                    failureClass: "RetryLimitExceeded")
            }
            if rules.canHandOn, handOff.wasRefused(by: rules.host) {
                // This host said no before; running it again would say no again.
                state = .pausing
                return .pause(handOff.pause)
            }
            state = .running(attempt: attempt)
            return .run

        case (.pausing, .paused):
            handOff.record(host: rules.host, reason: "")
            return passOnOrAnswer(.failure(.berth("HostIncompatible", handOff.finalMessage)), events: nil)

        case (.running, .finished(let outcome, let events)):
            if rules.canHandOn, case .failure(let failure) = outcome, failure.className == "HostIncompatible" {
                handOff.record(host: rules.host, reason: failure.message)
                return passOnOrAnswer(.failure(.berth("HostIncompatible", handOff.finalMessage)), events: events)
            }
            return answer(outcome, events: events)

        case (.running(let attempt), .timedOut):
            guard attempt >= rules.maxAttempts else {
                state = .done
                return .requeue
            }
            state = .deadLettering
            return .deadLetter(
                reason: "\(rules.method) timed out \(attempt) times (berth worker --handler-timeout); the limit is "
                    + "\(rules.maxAttempts) (berth worker --max-attempts)",
                failureClass: "RetryLimitExceeded")

        case (.running, .cancelled):
            state = .done
            return .handBack

        case (.handingOn, .handedOn(let confirmed)):
            state = .done
            return confirmed ? .forgetAndAck : .requeue

        case (.replying(let events), .replied(let confirmed)):
            guard confirmed else {
                state = .done
                return .leave
            }
            guard let events else {
                state = .done
                return .settle
            }
            state = .awaitingEvents
            return .awaitEvents(events)

        case (.awaitingEvents, .eventsConfirmed(let confirmed)):
            state = .done
            return confirmed ? .settleAndAck : .requeue

        case (.deadLettering, .deadLettered(let sent)):
            state = .done
            return sent ? .settle : .leave

        default:
            preconditionFailure("RequestDelivery: \(event) cannot happen in state \(state)")
        }
    }

    /// A boot this host cannot run goes back to the pool while it has passes left; then its caller is answered.
    private mutating func passOnOrAnswer(
        _ final: Result<JSONValue, RPCFailure>, events: ClosedRange<EventOutbox.Sequence>?
    ) -> Action {
        if handOff.count <= rules.maxHandOffs {
            state = .handingOn
            return .handOn(handOff)
        }
        return answer(final, events: events)
    }

    private mutating func answer(
        _ outcome: Result<JSONValue, RPCFailure>, events: ClosedRange<EventOutbox.Sequence>?
    ) -> Action {
        guard rules.isCall else {
            // A cast has no reply: its events are its outcome.
            guard let events else {
                state = .done
                return .settleAndAck
            }
            state = .awaitingEvents
            return .awaitEvents(events)
        }
        state = .replying(events: events)
        return .reply(outcome, ackOnConfirm: events == nil)
    }
}
