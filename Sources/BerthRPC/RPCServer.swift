import BerthAMQP
import BerthJSON
import BerthWire
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

public enum BerthVersion {
    public static let string = "0.1.0"
    /// The RPC API version this worker serves (DESIGN §3).
    public static let rpcAPI = RPCVersion(major: 1, minor: 0)
}

/// Something that publishes status events (oslo notifications). The worker's RPC server is one.
public protocol EventSink: Sendable {
    func emit(_ eventType: String, payload: JSONObject, error: Bool) async
}

/// What a method sees of its call.
public struct RPCCall: Sendable {
    public let request: RPCRequest
    public let host: String
    public let logger: Logger
    /// Publishes this worker's status events (oslo notifications).
    public let events: any EventSink

    public var args: JSONObject { request.args }
    public var requestID: String? { request.context["request_id"]?.stringValue }
    /// The oslo context's project and user (`project_id`/`user_id`; older contexts say `tenant`/`user`).
    public var projectID: String? { contextText("project_id") ?? contextText("tenant") }
    public var userID: String? { contextText("user_id") ?? contextText("user") }

    private func contextText(_ key: String) -> String? {
        request.context[key]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
    }
}

public typealias RPCMethod = @Sendable (RPCCall) async throws -> JSONValue

/// The methods of one endpoint (namespace + version), as oslo's dispatcher sees them.
public struct RPCEndpointMethods: Sendable {
    public var endpoint: RPCEndpoint
    public var methods: [String: RPCMethod]

    public init(namespace: String? = nil, version: RPCVersion = .oneZero, methods: [String: RPCMethod]) {
        self.endpoint = RPCEndpoint(namespace: namespace, version: version, methods: Set(methods.keys))
        self.methods = methods
    }
}

public struct RPCServerConfiguration: Sendable {
    public var urls: [AMQPURL]
    public var host: String
    public var topic: String = "compute"
    public var options: RabbitOptions = RabbitOptions()
    /// Requests worked on at once; also the `basic.qos` prefetch, so the broker never hands this worker
    /// more than it is working on and the rest stay in the queue for other workers.
    public var concurrency: Int = 8
    public var limits: JSONLimits = JSONLimits(maxBytes: 1 << 20, maxDepth: 32)
    public var gracePeriod: Duration = .seconds(30)
    public var deadLetter = DeadLetterRoute()
    /// How long to retry a reply whose queue is gone (the caller may be reconnecting) before dropping it.
    public var replyRetry: Duration = .seconds(5)
    public var notificationTopics = ["notifications"]
    /// Events held while the broker is away; past this the oldest are dropped (and counted in the log).
    public var eventBufferCapacity = 10_000
    /// Starts a request gets (crashes, handler time-outs) before it is dead-lettered and its caller answered
    /// with `RetryLimitExceeded`.
    public var maxAttempts = 3
    /// How long a handler may run before it is abandoned and the request retried; nil: no limit.
    public var handlerTimeout: Duration?
    /// Where start counts survive a crash (`AttemptLedger`); nil: in memory only.
    public var attemptsDirectory: String?
    /// How often a topic-addressed boot this host cannot run is passed on to the pool before the caller
    /// gets `HostIncompatible` (`HostHandOff`); 0: answer at once.
    public var maxHandOffs = 16
    /// How often the worker publishes its service report (`ServiceReporter`); nil: never.
    public var reportInterval: Duration? = .seconds(10)
    /// The host's size and what is left of it for the service reports; nil when it cannot be read right now.
    public var hostCapacity: @Sendable () async -> ReportedCapacity? = { nil }

    public init(urls: [AMQPURL], host: String) {
        self.urls = urls
        self.host = host
    }
}

/// What `/healthz` says: 200 only while the worker takes requests, so a load balancer or an orchestrator
/// stops counting on a worker that drains or has lost the broker.
public enum WorkerHealth: String, Sendable {
    case consuming, draining, disconnected
}

/// The RPC server: consumes `<topic>`, `<topic>.<host>` and the fanout queue, runs each request, answers
/// calls, and acks a request only once its reply is confirmed by the broker — so a crash at any point
/// before that leaves the request in the queue for this or another worker.
public final class RPCServer: Service, EventSink, Sendable {
    public let configuration: RPCServerConfiguration
    let endpoints: [RPCEndpointMethods]
    let client: AMQPClient
    let topology: RPCServerTopology
    let logger: Logger
    let intake: MessageIntake
    /// Requests taken from the queues and not yet done with; a drain waits for it to reach 0.
    let inFlight = Watched(0)
    public var inFlightCount: Int { inFlight.value }
    /// Set once, by the graceful shutdown (SIGTERM): the drain in `run()` begins.
    let drainRequested = Watched(false)
    public var isDraining: Bool { drainRequested.value }
    /// For `/healthz`: consuming only while connected and not draining.
    public var health: WorkerHealth {
        if isDraining { return .draining }
        if case .connected = client.status { return .consuming }
        return .disconnected
    }

    /// Sets the gauges that are read rather than pushed; called when `/metrics` is scraped.
    public func recordGauges() {
        WorkerMetrics.record(inFlight: inFlightCount, outboxDepth: outbox.pending)
    }
    let outbox: EventOutbox
    let attempts: AttemptLedger
    let admission = RequestAdmission()
    let reporter: ServiceReporter
    /// The periodic reports while the worker is up; `drain` ends them and reports the drain itself.
    /// Set when the `up` reports have ended (or there are none): a drain's reports follow only then.
    let upReportsEnded: Watched<Bool>

    public init(configuration: RPCServerConfiguration, endpoints: [RPCEndpointMethods], logger: Logger) throws {
        try configuration.options.validate()
        self.configuration = configuration
        self.endpoints = endpoints
        self.logger = logger
        self.outbox = EventOutbox(capacity: configuration.eventBufferCapacity)
        self.attempts = AttemptLedger(directory: configuration.attemptsDirectory)
        let topology = RPCServerTopology(
            options: configuration.options, topic: configuration.topic, server: configuration.host)
        self.topology = topology
        var amqp = AMQPTopology()
        amqp.exchanges = topology.exchanges + [configuration.deadLetter.exchangeDeclaration]
        amqp.queues = topology.queues + [configuration.deadLetter.queueDeclaration(quorum: configuration.options.rabbitQuorumQueue)]
        amqp.bindings = topology.bindings + [configuration.deadLetter.binding]
        // Declared as oslo's notifier declares them, so events wait for a listener that starts later.
        let notifications = Notifier.topology(options: configuration.options, topics: configuration.notificationTopics)
        amqp.queues += notifications.queues
        amqp.bindings += notifications.bindings
        if configuration.reportInterval != nil { ServiceReportTopology.add(to: &amqp) }
        amqp.prefetchCount = UInt16(clamping: configuration.concurrency)
        amqp.consumers = [
            (topology.topicQueue.name, "berth-\(configuration.host)-topic", []),
            (topology.serverQueue.name, "berth-\(configuration.host)-server", []),
            (topology.fanoutQueue.name, "berth-\(configuration.host)-fanout", topology.fanoutConsumerArguments),
        ]
        var clientConfiguration = AMQPClient.Configuration(
            urls: configuration.urls, connectionName: "berth-worker \(configuration.host)", topology: amqp)
        clientConfiguration.bodyLimit = AMQPBodyLimit(maxBytes: configuration.limits.maxBytes) { OsloEnvelopeScanner() }
        client = AMQPClient(configuration: clientConfiguration, logger: logger)
        reporter = ServiceReporter(client: client, configuration: configuration, logger: logger)
        upReportsEnded = Watched(configuration.reportInterval == nil)
        intake = MessageIntake(
            dispatcher: RPCDispatcher(endpoints: endpoints.map(\.endpoint)), limits: configuration.limits)
    }

    /// Connects and declares; throws with advice when the broker refuses a declaration (406).
    public func start() async throws {
        do {
            try await client.start()
        } catch let error as AMQPError where error.replyCode == 406 {
            throw AMQPError(
                .channelClosed, PreconditionFailedAdvice.explain(error.message, options: configuration.options),
                replyCode: 406)
        }
        logger.info(
            "RPC server consuming",
            metadata: [
                "topic": "\(configuration.topic)", "host": "\(configuration.host)",
                "exchange": "\(configuration.options.controlExchange)", "concurrency": "\(configuration.concurrency)",
            ])
    }

    public func run() async throws {
        if case .connecting = client.status { try await start() }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.outbox.run(client: self.client, logger: self.logger) }
            group.addTask {
                // Cancelled (nil) when the deliveries end without a drain: the client stopped on its own.
                guard await self.drainRequested.wait(until: { $0 }) != nil else { return }
                await self.drain()
            }
            if let interval = configuration.reportInterval {
                group.addTask { await self.reportWhileUp(every: interval) }
            }
            await withGracefulShutdownHandler {
                for await delivery in client.deliveries {
                    inFlight.update { $0 += 1 }
                    group.addTask {
                        await self.process(delivery)
                        self.inFlight.update { $0 -= 1 }
                    }
                }
            } onGracefulShutdown: {
                self.drainRequested.update { $0 = true }
            }
            // The stream ended: the client stopped. Work still running past the grace period is cancelled;
            // its requests were not acked and go back to the queue.
            group.cancelAll()
        }
        logger.info("RPC server stopped")
    }

    /// Stops taking requests, lets the ones in hand finish within the grace period, then closes the
    /// connection, which hands anything unfinished back to the broker. Part of `run()`, started by the
    /// graceful shutdown.
    private func drain() async {
        logger.info("draining", metadata: ["in_flight": "\(inFlight.value)"])
        await client.cancelConsumers()
        let deadline = ContinuousClock.now + configuration.gracePeriod
        // The `up` reports end before the first draining report, so none can follow it. (A report in progress is
        // waited for: it may be asking a busy libvirt; the grace period runs meanwhile.)
        _ = await upReportsEnded.wait { $0 }
        var idle: Int?
        repeat {
            if configuration.reportInterval != nil { _ = await reporter.report(.draining, inFlight: inFlightCount) }
            let wait = min(configuration.reportInterval ?? configuration.gracePeriod, deadline - .now)
            idle = await withTimeLimit(wait) { [inFlight] in await inFlight.wait { $0 == 0 } }
        } while idle == nil && ContinuousClock.now < deadline
        if idle == nil {
            logger.warning(
                "grace period over; handing unfinished requests back to the broker",
                metadata: ["left": "\(inFlight.value)"])
        }
        // Events of the finished work go out before the connection closes (bounded: the broker may be away).
        outbox.close()
        // nil: the time limit ran out before the outbox had everything confirmed.
        let flushed: Void? = await withTimeLimit(.seconds(5)) { [outbox] in await outbox.flushed() }
        if flushed == nil, outbox.pending > 0 {
            logger.warning("events not published before exit", metadata: ["count": "\(outbox.pending)"])
        }
        if configuration.reportInterval != nil { await reportStopped() }
        if topology.deletesFanoutQueueOnShutdown {
            do { try await client.deleteQueue(topology.fanoutQueue.name) } catch {
                logger.debug("could not delete the fanout queue", metadata: ["error": "\(error)"])
            }
        }
        await client.stop()
    }

    // MARK: Service reports

    /// `up` reports every `interval` until a drain is requested (or the server stops), then marks them ended
    /// for the drain, whose `draining` reports take over.
    private func reportWhileUp(every interval: Duration) async {
        defer { upReportsEnded.update { $0 = true } }
        while !drainRequested.value, !Task.isCancelled {
            _ = await reporter.report(.up, inFlight: inFlightCount)
            _ = await withTimeLimit(interval) { [drainRequested] in await drainRequested.wait { $0 } }
        }
    }

    /// The last report: the worker is gone, not down. Waits a little for the broker's confirm, never longer:
    /// a broker that is away must not hold up the exit.
    private func reportStopped() async {
        // A publish cannot be cancelled (a blocked broker holds it), so it runs in a task of its own that the
        // drain stops waiting for after 2 s.
        let sent = Watched(false)
        let inFlight = inFlightCount
        let publisher = Task { [reporter] in
            _ = await reporter.report(.stopped, inFlight: inFlight)
            sent.update { $0 = true }
        }
        if await withTimeLimit(.seconds(2), { await sent.wait { $0 } }) == nil {
            publisher.cancel()
            logger.warning(
                "the final service report was not confirmed; berth hosts shows this worker down until it is forgotten")
        }
    }

    // MARK: One delivery

    func process(_ delivery: AMQPDelivery) async {
        let disposition: MessageDisposition
        if let oversized = delivery.oversized {
            let address = (oversized.scanner as? OsloEnvelopeScanner)?.replyAddress
            disposition = intake.refuseOversized(size: oversized.size, reply: address.map(ReplyAddress.init))
        } else {
            // A handed-on boot, or a dead letter replayed, carries the _unique_id this worker may have seen: not
            // a duplicate.
            disposition = intake.classify(
                contentType: delivery.properties.contentType, body: delivery.body,
                redelivered: delivery.redelivered || HostHandOff(headers: delivery.properties.headers).isHandedOn
                    || delivery.properties.header(DeadLetter.Header.replayedReason) != nil)
        }
        switch disposition {
        case .duplicate(let uniqueID):
            logger.info("dropping duplicate message", metadata: ["unique_id": "\(uniqueID)"])
            client.ack(delivery)
        case .deadLetter(let reason, let reply):
            await deadLetter(delivery, reason: reason, reply: reply)
        case .refuse(let request, let failure):
            var log = requestLogger(request)
            log[metadataKey: "error"] = "\(failure.className): \(failure.message)"
            log.warning("refusing request")
            _ = await answer(delivery, to: request.replyAddress, logger: log) { RPCReply.failure(failure, msgID: $0) }
        case .dispatch(let request, let method):
            let key = request.uniqueID ?? request.msgID
            if delivery.redelivered, let key, attempts.isSettled(key) {
                // Answered, events out, and then the worker died before the broker took the ack.
                requestLogger(request).info("already answered before a restart; acking the redelivered copy")
                client.ack(delivery)
                return
            }
            // A request that may have crashed the worker runs alone, so a crash counts against it only.
            let suspect = delivery.redelivered || (key.map(attempts.count) ?? 0) > 0
            _ = await admission.run(alone: suspect) { await dispatch(delivery, request, method: method) }
        }
    }

    /// Carries out what `RequestDelivery` decides for one request, reporting back what happened, until it is
    /// done.
    private func dispatch(_ delivery: AMQPDelivery, _ request: RPCRequest, method: String) async {
        let log = requestLogger(request)
        guard let function = endpoints.first(where: { $0.endpoint == dispatcherEndpoint(for: request) })?
            .methods[method]
        else {
            // The intake routed it, so the method exists; this cannot happen short of a programming error.
            client.reject(delivery, requeue: false)
            return
        }
        // Count this start (a crash inside the handler leaves the count behind for the redelivery).
        let key = request.uniqueID ?? request.msgID
        var attempt = key.map(attempts.begin) ?? 1
        if case .int(let count)? = delivery.properties.header("x-delivery-count") {
            attempt = max(attempt, Int(clamping: count) + 1)
        }
        log.debug("dispatching", metadata: ["redelivered": "\(delivery.redelivered)", "attempt": "\(attempt)"])
        var machine = RequestDelivery(
            rules: .init(
                method: request.method, host: configuration.host, maxAttempts: configuration.maxAttempts,
                maxHandOffs: configuration.maxHandOffs, canHandOn: canHandOn(delivery, request),
                isCall: request.replyAddress != nil),
            handOff: HostHandOff(headers: delivery.properties.headers))
        var action = machine.receive(.counted(attempt: attempt))
        while true {
            switch action {
            case .run:
                action = machine.receive(await run(function, request, events: RequestEvents(server: self, request: key), logger: log))
            case .pause(let pause):
                try? await Task.sleep(for: pause)
                action = machine.receive(.paused)
            case .handOn(let handOff):
                action = machine.receive(.handedOn(await handOn(delivery, handOff, logger: log)))
            case .reply(let outcome, let ackOnConfirm):
                guard let address = request.replyAddress else { preconditionFailure("only a call is answered") }
                let message: JSONObject
                switch outcome {
                case .success(let value): message = RPCReply.result(value, msgID: address.msgID)
                case .failure(let failure): message = RPCReply.failure(failure, msgID: address.msgID)
                }
                let replied = await reply(
                    message, to: address.replyQueue, logger: log, acknowledging: ackOnConfirm ? delivery : nil)
                action = machine.receive(.replied(replied))
            case .awaitEvents(let events):
                let confirmed = await outbox.confirmed(events)
                if !confirmed { log.warning("the request's events were not confirmed; handing it back to the broker") }
                action = machine.receive(.eventsConfirmed(confirmed))
            case .deadLetter(let reason, let failureClass):
                let sent = await deadLetter(
                    delivery, reason: reason, reply: request.replyAddress, failureClass: failureClass)
                action = machine.receive(.deadLettered(sent))
            case .settleAndAck:
                if let key { attempts.finish(key) }
                client.ack(delivery)
                return
            case .settle:
                if let key { attempts.finish(key) }
                return
            case .forgetAndAck:
                if let key { attempts.forget(key) }
                client.ack(delivery)
                return
            case .requeue:
                client.reject(delivery, requeue: true)
                return
            case .handBack:
                if let key { attempts.handBack(key) }
                return
            case .leave:
                return
            }
        }
    }

    /// Runs the handler (with call-monitor heartbeats when asked for) and says how it ended.
    private func run(
        _ function: @escaping RPCMethod, _ request: RPCRequest, events: RequestEvents, logger: Logger
    ) async -> RequestDelivery.Event {
        let call = RPCCall(request: request, host: configuration.host, logger: logger, events: events)
        let timeout = configuration.handlerTimeout
        let began = ContinuousClock.now
        let outcome: Result<JSONValue, RPCFailure>? = await withCallMonitor(request, logger: logger) {
            await Self.run(function, call, timeout: timeout)
        }
        let label: String =
            switch outcome {
            case _ where Task.isCancelled: "cancelled"
            case nil: "timeout"
            case .success?: "success"
            case .failure(let failure)?: failure.className
            }
        WorkerMetrics.requestFinished(method: request.method, outcome: label, duration: ContinuousClock.now - began)
        // Shutdown overtook the work: leave the request unacked so the broker hands it to another worker.
        if Task.isCancelled { return .cancelled }
        guard let outcome else {
            // The handler outlived --handler-timeout: abandon it; the machine decides between retry and dead letter.
            logger.warning("handler timed out", metadata: ["limit": "\(configuration.maxAttempts)"])
            return .timedOut
        }
        switch outcome {
        case .success:
            logger.info("request done")
        case .failure(let failure) where failure.className == "HostIncompatible":
            logger.info("this host cannot run the request", metadata: ["error": "\(failure.message)"])
        case .failure(let failure):
            logger.warning("request failed", metadata: ["error": "\(failure.className): \(failure.message)"])
        }
        return .finished(outcome, events: events.emitted)
    }

    /// A boot sent to the whole pool (the shared topic queue), which another host may be able to run.
    private func canHandOn(_ delivery: AMQPDelivery, _ request: RPCRequest) -> Bool {
        configuration.maxHandOffs > 0 && request.method == "boot_instance" && request.namespace == nil
            && delivery.routingKey == configuration.topic
    }

    /// Republishes the request to the topic with this host's refusal on it; true when the broker took the
    /// copy (then this one is acked), false when it did not (then this one goes back to the queue).
    private func handOn(_ delivery: AMQPDelivery, _ handOff: HostHandOff, logger: Logger) async -> Bool {
        logger.info(
            "this host cannot run the boot; handing it to the pool",
            metadata: ["handoffs": "\(handOff.count)", "refused_by": "\(handOff.refusedBy.joined(separator: ","))"])
        var properties = delivery.properties
        properties.headers = handOff.headers(replacing: delivery.properties.headers)
        do {
            return try await client.publish(
                exchange: delivery.exchange, routingKey: delivery.routingKey, body: delivery.body,
                properties: properties) == .confirmed
        } catch {
            logger.warning("could not hand the boot on; it goes back to the queue", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Runs a handler; nil when it outlived `timeout` (it is cancelled then).
    private static func run(
        _ function: @escaping RPCMethod, _ call: RPCCall, timeout: Duration?
    ) async -> Result<JSONValue, RPCFailure>? {
        let work: @Sendable () async -> Result<JSONValue, RPCFailure> = {
            do {
                return .success(try await function(call))
            } catch let failure as RPCFailure {
                return .failure(failure)
            } catch is CancellationError {
                return .failure(.berth("BuildFailed", "the worker stopped before the request finished; retry it"))
            } catch {
                return .failure(.berth("InternalError", "\(error)"))
            }
        }
        guard let timeout else { return await work() }
        // Not a task group: a group waits for its children, and a handler stuck in a blocking call would hold
        // the request past its timeout. The abandoned handler is cancelled and left to end on its own.
        return await withCheckedContinuation { (continuation: CheckedContinuation<HandlerRace.Outcome, Never>) in
            let race = HandlerRace(continuation)
            let handler = Task {
                let result = await work()
                race.finish(result)
            }
            race.startTimer(after: timeout) { handler.cancel() }
        }
    }

    private func dispatcherEndpoint(for request: RPCRequest) -> RPCEndpoint? {
        RPCDispatcher(endpoints: endpoints.map(\.endpoint)).endpoint(for: request)
    }

    /// Runs the work, sending call-monitor heartbeats alongside when the caller asked for them.
    private func withCallMonitor<T: Sendable>(
        _ request: RPCRequest, logger: Logger, _ work: @Sendable () async -> T
    ) async -> T {
        guard let msgID = request.msgID, let replyQueue = request.replyQueue,
            let interval = CallMonitor.heartbeatInterval(callMonitorTimeout: request.callMonitorTimeout)
        else { return await work() }
        return await withTaskGroup(of: T?.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { break }
                    _ = await self.reply(RPCReply.heartbeat(msgID: msgID), to: replyQueue, logger: logger, retry: false)
                }
                return nil
            }
            let result = await work()
            group.cancelAll()
            return result
        }
    }

    /// Publishes a reply and waits for the broker's confirm. Returns false when the connection was lost
    /// (the request will be redelivered, so it must not be acked); a reply whose queue is gone is retried
    /// for a while, then logged and dropped (returns true: the work is done, nobody is listening).
    /// Answers the caller, when it waits for an answer (`message` gets the call's msg_id), and acks the request
    /// once the answer is confirmed; a cast is acked at once. For requests refused before they ran (nothing else
    /// to wait for); what ran goes through `RequestDelivery`. False when the broker is away: then neither happened.
    private func answer(
        _ delivery: AMQPDelivery, to address: ReplyAddress?, logger: Logger, _ message: (String) -> JSONObject
    ) async -> Bool {
        guard let address else {
            client.ack(delivery)
            return true
        }
        return await reply(message(address.msgID), to: address.replyQueue, logger: logger, acknowledging: delivery)
    }

    /// Publishes a reply until the broker confirms it (or its queue stays gone). With `acknowledging`, the
    /// request is acked once the reply is confirmed (or dropped); false when the broker is away, and then the
    /// request is neither answered nor acked.
    private func reply(
        _ message: JSONObject, to replyQueue: String, logger: Logger, retry: Bool = true,
        acknowledging delivery: AMQPDelivery? = nil
    ) async -> Bool {
        let body = OsloEnvelope.wrap(message)
        let deadline = ContinuousClock.now + configuration.replyRetry
        while true {
            do {
                let outcome = try await client.publish(
                    exchange: "", routingKey: replyQueue, body: body, properties: .oslo(), mandatory: true,
                    acknowledging: delivery)
                switch outcome {
                case .confirmed:
                    return true  // The I/O thread acked `delivery` with the confirm.
                case .nacked:
                    logger.warning("broker refused the reply (nack); retrying")
                case .returned(let returned):
                    guard retry, ContinuousClock.now < deadline else {
                        logger.warning(
                            "reply queue is gone; dropping the reply",
                            metadata: ["reply_queue": "\(replyQueue)", "broker": "\(returned.replyText)"])
                        if let delivery { client.ack(delivery) }
                        return true
                    }
                }
                try await Task.sleep(for: .milliseconds(250))
            } catch {
                logger.warning("could not publish the reply", metadata: ["error": "\(error)"])
                return false
            }
        }
    }

    /// Republishes an unusable message to the dead-letter exchange with the reason, answers the caller when
    /// possible, then acks the original, so it is neither lost nor redelivered for ever.
    /// True when the message was dead-lettered (or dropped after a nack) and acked; false when the broker went
    /// away first.
    @discardableResult
    private func deadLetter(
        _ delivery: AMQPDelivery, reason: String, reply address: ReplyAddress?, failureClass: String = "InvalidRequest"
    ) async -> Bool {
        let size = delivery.oversized?.size ?? UInt64(delivery.body.count)
        logger.warning(
            "dead-lettering message",
            metadata: ["reason": "\(reason)", "routing_key": "\(delivery.routingKey)", "bytes": "\(size)"])
        if let address {
            let failure = RPCFailure.berth(failureClass, reason)
            guard await reply(RPCReply.failure(failure, msgID: address.msgID), to: address.replyQueue, logger: logger)
            else { return false }
        }
        var properties = delivery.properties
        var headers = properties.headers ?? []
        headers.append((key: DeadLetter.Header.reason, value: .string(String(reason.prefix(1024)))))
        headers.append((key: DeadLetter.Header.originalExchange, value: .string(delivery.exchange)))
        headers.append((key: DeadLetter.Header.originalRoutingKey, value: .string(delivery.routingKey)))
        headers.append((key: DeadLetter.Header.host, value: .string(configuration.host)))
        // For `berth dead-letters --older-than`: the copy is a new message, without the broker's own times.
        headers.append((key: DeadLetter.Header.deadLetteredAt, value: .int(Int64(Date().timeIntervalSince1970))))
        // A body over the limit was never kept: its dead letter carries the first bytes and the full size.
        if let oversized = delivery.oversized {
            headers.append((key: DeadLetter.Header.originalBytes, value: .int(Int64(clamping: oversized.size))))
        }
        properties.headers = headers
        properties.expiration = nil
        do {
            let outcome = try await client.publish(
                exchange: configuration.deadLetter.exchange, routingKey: delivery.routingKey,
                body: delivery.oversized?.excerpt ?? delivery.body, properties: properties)
            guard outcome == .confirmed else {
                logger.error("dead-letter exchange refused the message (nack); dropping it", metadata: ["reason": "\(reason)"])
                client.reject(delivery, requeue: false)
                return true
            }
            client.ack(delivery)
            WorkerMetrics.deadLettered()
            return true
        } catch {
            logger.warning("could not dead-letter the message", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Queues an event from `compute.<host>` for publishing; returns at once. Events wait in the outbox
    /// while the broker is away and go out, in order and confirmed, after the reconnect.
    public func emit(_ eventType: String, payload: JSONObject, error: Bool) async {
        _ = enqueue(eventType, payload: payload, error: error)
    }

    /// Queues the event's messages (one per notification topic); returns their sequence numbers.
    func enqueue(
        _ eventType: String, payload: JSONObject, error: Bool, identity: EventIdentity? = nil
    ) -> ClosedRange<EventOutbox.Sequence>? {
        let notifier = Notifier(
            client: client, options: configuration.options, host: configuration.host,
            topics: configuration.notificationTopics)
        var sequences: ClosedRange<EventOutbox.Sequence>?
        for message in notifier.messages(
            eventType: eventType, payload: .object(payload), priority: error ? .error : .info, identity: identity)
        {
            let sequence = outbox.enqueue(
                EventOutbox.Event(
                    exchange: configuration.options.controlExchange, routingKey: message.routingKey, body: message.body,
                    eventType: eventType),
                logger: logger)
            sequences = (sequences?.lowerBound ?? sequence)...sequence
        }
        return sequences
    }

    private func requestLogger(_ request: RPCRequest) -> Logger {
        var log = logger
        log[metadataKey: "method"] = "\(request.method)"
        if let id = request.context["request_id"]?.stringValue { log[metadataKey: "request_id"] = "\(id)" }
        if let id = request.msgID { log[metadataKey: "msg_id"] = "\(id)" }
        // Every line of a request that names an instance says which, so one grep follows it.
        if let uuid = request.args["instance_uuid"]?.stringValue ?? request.args["instance"]?["uuid"]?.stringValue {
            log[metadataKey: "instance_uuid"] = "\(uuid.prefix(64))"
        }
        return log
    }
}

/// The events one request emits: they go to the server's outbox, and the request's ack waits for their
/// confirms (`RPCServer.answer`).
final class RequestEvents: EventSink {
    private struct State {
        var sequences: ClosedRange<EventOutbox.Sequence>?
        var occurrences: [String: Int] = [:]
    }

    private let server: RPCServer
    /// The request's oslo `_unique_id` (or `_msg_id`), which its events' ids derive from; nil: random ids.
    private let request: String?
    private let state = Mutex(State())

    init(server: RPCServer, request: String?) {
        self.server = server
        self.request = request
    }

    /// The first and last of the request's events in the outbox's order; nil when it emitted none.
    var emitted: ClosedRange<EventOutbox.Sequence>? { state.withLock { $0.sequences } }

    func emit(_ eventType: String, payload: JSONObject, error: Bool) async {
        let identity = request.map { request in
            let occurrence = state.withLock { state in
                defer { state.occurrences[eventType, default: 0] += 1 }
                return state.occurrences[eventType, default: 0]
            }
            return EventIdentity(request: request, eventType: eventType, occurrence: occurrence)
        }
        guard let added = server.enqueue(eventType, payload: payload, error: error, identity: identity) else { return }
        state.withLock { $0.sequences = ($0.sequences?.lowerBound ?? added.lowerBound)...added.upperBound }
    }
}

/// Whichever ends first, the handler or its timer, resumes the caller; the other finds nothing to resume.
private final class HandlerRace: Sendable {
    typealias Outcome = Result<JSONValue, RPCFailure>?
    private let pending: Mutex<CheckedContinuation<Outcome, Never>?>
    private let timer = Mutex<Task<Void, Never>?>(nil)

    init(_ continuation: CheckedContinuation<Outcome, Never>) {
        pending = Mutex(continuation)
    }

    func finish(_ outcome: Outcome) {
        timer.withLock { $0?.cancel() }
        pending.withLock { $0.take() }?.resume(returning: outcome)
    }

    func startTimer(after timeout: Duration, onExpiry: @escaping @Sendable () -> Void) {
        let task = Task {
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled, let continuation = self.pending.withLock({ $0.take() }) else { return }
            onExpiry()
            continuation.resume(returning: nil)
        }
        timer.withLock { $0 = task }
        // The handler may have finished before the timer existed.
        if pending.withLock({ $0 == nil }) { task.cancel() }
    }
}

extension RPCRequest {
    /// Where a call's answer goes; nil for a cast.
    var replyAddress: ReplyAddress? {
        guard let msgID, let replyQueue else { return nil }
        return ReplyAddress(msgID: msgID, replyQueue: replyQueue)
    }
}
