import BerthAMQP
import BerthWire
import Foundation
import Logging
import Testing

@testable import BerthRPC

/// The librabbitmq client against the real broker.
@Suite(.enabled(if: Services.runBrokerTests, Services.brokerSkipReason))
struct AMQPClientTests {
    let logger = Logger(label: "test.amqp")

    func consumingClient(queue: String, exchange: String? = nil, name: String = "test") -> AMQPClient {
        var topology = AMQPTopology()
        if let exchange {
            topology.exchanges = [ExchangeDeclaration(name: exchange, type: .topic, durable: false, autoDelete: true)]
            topology.bindings = [Binding(exchange: exchange, queue: queue, routingKey: "#")]
        }
        topology.queues = [QueueDeclaration(name: queue, durable: false, autoDelete: true)]
        topology.consumers = [(queue, "c-\(queue)", [])]
        topology.prefetchCount = 4
        return AMQPClient(
            configuration: .init(urls: [Services.amqpURL], connectionName: name, topology: topology), logger: logger)
    }

    // Generous: it returns as soon as a delivery arrives, and a loaded 2-core machine can starve the pool.
    func firstDelivery(_ client: AMQPClient, within seconds: Double = 30) async -> AMQPDelivery? {
        await withTaskGroup(of: AMQPDelivery?.self) { group in
            group.addTask {
                for await delivery in client.deliveries { return delivery }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    @Test func publishIsConfirmedAndConsumedWithItsProperties() async throws {
        let queue = Services.unique("berth-test-q")
        let client = consumingClient(queue: queue)
        try await client.start()
        let headers: AMQPTable = [(key: "x-reason", value: .string("because")), (key: "count", value: .int(3))]
        var properties = AMQPProperties.oslo(expiration: "60000")
        properties.headers = headers
        let outcome = try await client.publish(
            exchange: "", routingKey: queue, body: Array("héllo".utf8), properties: properties, mandatory: true)
        #expect(outcome == .confirmed)
        let delivery = try #require(await firstDelivery(client))
        #expect(delivery.body == Array("héllo".utf8))
        #expect(delivery.properties.contentType == "application/json")
        #expect(delivery.properties.contentEncoding == "utf-8")
        #expect(delivery.properties.deliveryMode == 2)
        #expect(delivery.properties.expiration == "60000")
        #expect(delivery.properties.header("x-reason") == .string("because"))
        #expect(delivery.properties.header("count") == .int(3))
        #expect(!delivery.redelivered)
        client.ack(delivery)
        await client.stop()
    }

    @Test func mandatoryPublishWithoutAQueueComesBack() async throws {
        let queue = Services.unique("berth-test-q")
        let client = consumingClient(queue: queue)
        try await client.start()
        let outcome = try await client.publish(
            exchange: "", routingKey: Services.unique("no-such-queue"), body: [1, 2, 3], mandatory: true)
        guard case .returned(let returned) = outcome else {
            Issue.record("expected the broker to return the message, got \(outcome)")
            return
        }
        #expect(returned.replyCode == 312)
        #expect(returned.replyText == "NO_ROUTE")
        // The connection is still usable afterwards.
        #expect(try await client.publish(exchange: "", routingKey: queue, body: [4], mandatory: true) == .confirmed)
        await client.stop()
    }

    @Test func unackedDeliveryComesBackAfterRejectWithRequeue() async throws {
        let queue = Services.unique("berth-test-q")
        let client = consumingClient(queue: queue)
        try await client.start()
        _ = try await client.publish(exchange: "", routingKey: queue, body: Array("again".utf8))
        let first = try #require(await firstDelivery(client))
        client.reject(first, requeue: true)
        let second = try #require(await firstDelivery(client))
        #expect(second.body == Array("again".utf8))
        #expect(second.redelivered)
        client.ack(second)
        await client.stop()
    }

    @Test func conflictingDeclarationFailsStartWithTheBrokersReason() async throws {
        let queue = Services.unique("berth-test-q")
        let first = consumingClient(queue: queue)
        try await first.start()
        var topology = AMQPTopology()
        topology.queues = [QueueDeclaration(name: queue, durable: true, autoDelete: false)]
        let second = AMQPClient(
            configuration: .init(urls: [Services.amqpURL], connectionName: "conflict", topology: topology), logger: logger)
        do {
            try await second.start(connectTimeout: .seconds(10))
            Issue.record("declaring an existing queue with other flags must fail")
        } catch let error as AMQPError {
            #expect(error.replyCode == 406)
            #expect(error.message.contains("PRECONDITION_FAILED"))
            #expect(error.message.contains("durable"))
        }
        await second.stop()
        await first.stop()
    }

    @Test func workerStartNamesTheOptionToChangeOn406() async throws {
        // An oslo deployment with classic queues exists; a worker configured for quorum queues must say so.
        let exchange = Services.unique("berth-test-ex")
        let host = Services.unique("h")
        let topic = Services.unique("berth-test-topic")
        var classic = RPCServerConfiguration(urls: [Services.amqpURL], host: host)
        classic.topic = topic
        classic.options.controlExchange = exchange
        let existing = try RPCServer(configuration: classic, endpoints: [], logger: logger)
        try await existing.start()

        var quorum = classic
        quorum.options.rabbitQuorumQueue = true
        quorum.options.controlExchange = exchange + "-q"
        let conflicting = try RPCServer(configuration: quorum, endpoints: [], logger: logger)
        do {
            try await conflicting.start()
            Issue.record("a quorum declaration of an existing classic queue must fail")
        } catch let error as AMQPError {
            #expect(error.replyCode == 406)
            #expect(error.message.contains("rabbit_quorum_queue"), "message was: \(error.message)")
        }
        await conflicting.client.stop()
        await existing.client.stop()
        try Services.rabbitmqctl("delete_queue", topic)
        try Services.rabbitmqctl("delete_queue", "\(topic).\(host)")
    }

    @Test func reconnectsAndRedeclaresAfterTheBrokerClosesTheConnection() async throws {
        let queue = Services.unique("berth-test-q")
        let name = Services.unique("berth-reconnect")
        // The queue is auto-delete: it only exists again after the reconnect if the client redeclared it.
        let client = consumingClient(queue: queue, name: name)
        try await client.start()
        guard case .connected(let before) = client.status else {
            Issue.record("not connected")
            return
        }
        let listing = try Services.rabbitmqctl("list_connections", "pid", "client_properties")
        let line = try #require(listing.split(separator: "\n").first { $0.contains(name) })
        let pid = String(line.split(separator: "\t")[0])
        try Services.rabbitmqctl("close_connection", pid, "test closes the connection")

        let deadline = ContinuousClock.now + .seconds(10)
        var after: UInt64 = before
        while ContinuousClock.now < deadline {
            if case .connected(let generation) = client.status, generation != before {
                after = generation
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(after > before, "the client did not reconnect within 10 s")
        #expect(try await client.publish(exchange: "", routingKey: queue, body: [7], mandatory: true) == .confirmed)
        let delivery = try #require(await firstDelivery(client))
        #expect(delivery.body == [7])
        #expect(delivery.connectionGeneration == after)
        client.ack(delivery)
        await client.stop()
    }

    @Test func idleConnectionIsKeptAliveByHeartbeats() async throws {
        // With a 2 s heartbeat the broker drops a silent peer after about 4 s; our I/O thread must send them.
        var url = Services.amqpURL
        url.heartbeat = 2
        let queue = Services.unique("berth-test-q")
        var topology = AMQPTopology()
        topology.queues = [QueueDeclaration(name: queue, durable: false, autoDelete: true)]
        topology.consumers = [(queue, "c-\(queue)", [])]
        let client = AMQPClient(
            configuration: .init(urls: [url], connectionName: "heartbeat", topology: topology), logger: logger)
        try await client.start()
        let before = client.status
        try await Task.sleep(for: .seconds(9))
        #expect(client.status == before, "the connection was lost while idle: heartbeats were not sent")
        #expect(try await client.publish(exchange: "", routingKey: queue, body: [1], mandatory: true) == .confirmed)
        await client.stop()
    }

    @Test func refusedLoginSaysWhatToCheck() async throws {
        var url = Services.amqpURL
        url.password = "definitely-wrong"
        let client = AMQPClient(
            configuration: .init(urls: [url], connectionName: "bad-login", topology: AMQPTopology()), logger: logger)
        do {
            try await client.start(connectTimeout: .seconds(10))
            Issue.record("a wrong password must fail")
        } catch let error as AMQPError {
            #expect(error.kind == .login)
            #expect(error.message.contains("check the user, password and vhost"))
            #expect(!error.message.contains("definitely-wrong"))
        }
        await client.stop()
    }
}
