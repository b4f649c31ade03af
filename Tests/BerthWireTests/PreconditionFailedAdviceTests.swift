import Testing

@testable import BerthWire

@Suite("406 PRECONDITION_FAILED advice")
struct PreconditionFailedAdviceTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        var broker: String
        var options: RabbitOptions
        var mentions: [String]
        var testDescription: String { label }
    }

    static func options(_ change: (inout RabbitOptions) -> Void = { _ in }) -> RabbitOptions {
        var options = RabbitOptions()
        change(&options)
        return options
    }

    static let rows: [Row] = [
        Row(
            label: "classic queue, Berth wants quorum (captured)",
            broker: "Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                + "'compute' in vhost '/': received the value 'quorum' of type 'longstr' but current is none",
            options: options { $0.rabbitQuorumQueue = true },
            mentions: [
                "queue 'compute' already exists as a classic queue", "rabbit_quorum_queue=false",
                "rabbitmqctl delete_queue compute",
            ]),
        Row(
            label: "quorum queue, Berth wants classic",
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'compute.host-a' in vhost "
                + "'/': received none but current is the value 'quorum' of type 'longstr'",
            options: options(),
            mentions: ["already exists as a quorum queue", "rabbit_quorum_queue=true", "delete_queue compute.host-a"]),
        Row(
            label: "reply queue type names the transient option",
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'reply_abc' in vhost "
                + "'prod': received none but current is the value 'quorum' of type 'longstr'",
            options: options(),
            mentions: ["rabbit_transient_quorum_queue=true", "rabbitmqctl -p prod delete_queue reply_abc"]),
        Row(
            label: "durable queue",
            broker: "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'compute' in vhost '/': "
                + "received 'false' but current is 'true'",
            options: options(),
            mentions: ["durable=true", "amqp_durable_queues=true", "delete_queue compute"]),
        Row(
            label: "durable exchange",
            broker: "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'berth' in vhost '/': "
                + "received 'true' but current is 'false'",
            options: options { $0.amqpDurableQueues = true },
            mentions: ["exchange 'berth'", "amqp_durable_queues=false", "rabbitmqadmin delete exchange name=berth"]),
        Row(
            label: "durable exchange with quorum on",
            broker: "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'berth' in vhost '/': "
                + "received 'true' but current is 'false'",
            options: options { $0.rabbitQuorumQueue = true },
            mentions: ["rabbit_quorum_queue=false"]),
        Row(
            label: "fanout exchange durability",
            broker: "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'compute_fanout' in vhost '/': "
                + "received 'false' but current is 'true'",
            options: options(),
            mentions: ["rabbit_transient_quorum_queue=true"]),
        Row(
            label: "auto_delete",
            broker: "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'compute' in vhost '/': "
                + "received 'false' but current is 'true'",
            options: options(),
            mentions: ["amqp_auto_delete=true"]),
        Row(
            label: "x-expires",
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-expires' for queue 'reply_abc' in vhost '/': "
                + "received the value '1800000' of type 'signedint' but current is the value '600000' of type 'long'",
            options: options(),
            mentions: ["rabbit_transient_queues_ttl=600"]),
        Row(
            label: "x-expires absent on the broker",
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-expires' for queue 'compute_fanout_1' in vhost '/': "
                + "received the value '1800000' of type 'signedint' but current is none",
            options: options(),
            mentions: ["rabbit_transient_queues_ttl=0"]),
        Row(
            label: "x-delivery-limit",
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'compute' in vhost '/': "
                + "received none but current is the value '5' of type 'long'",
            options: options { $0.rabbitQuorumQueue = true },
            mentions: ["rabbit_quorum_delivery_limit=5"]),
        Row(
            label: "x-ha-policy",
            broker: "PRECONDITION_FAILED - inequivalent arg 'x-ha-policy' for queue 'compute' in vhost '/': "
                + "received none but current is the value 'all' of type 'longstr'",
            options: options(),
            mentions: ["rabbit_ha_queues=true"]),
        Row(
            label: "quorum + auto-delete (captured)",
            broker: "Queue.declare: (406) PRECONDITION_FAILED - invalid property 'auto-delete' for queue "
                + "'v-quorum-auto-delete-rpc' in vhost '/'",
            options: options {
                $0.rabbitQuorumQueue = true; $0.amqpAutoDelete = true
            },
            mentions: ["v-quorum-auto-delete-rpc", "amqp_auto_delete=false"]),
        Row(
            label: "py-amqp repr around the broker text",
            broker: #"PreconditionFailed(406, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "#
                + #"'compute' in vhost '/': received the value 'quorum' of type 'longstr' but current is none", "#
                + #"(50, 10), 'Queue.declare')"#,
            options: options { $0.rabbitQuorumQueue = true },
            mentions: ["exists as a classic queue", "rabbit_quorum_queue=false", "delete_queue compute"]),
        Row(
            label: "py-amqp repr, quoted current value",
            broker: #"PreconditionFailed(406, "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue "#
                + #"'compute' in vhost '/': received 'false' but current is 'true'", (50, 10), 'Queue.declare')"#,
            options: options(),
            mentions: ["auto_delete=true but Berth declares auto_delete=false", "amqp_auto_delete=true"]),
        Row(
            label: "unknown text",
            broker: "PRECONDITION_FAILED - something new",
            options: options(),
            mentions: ["something new", "rabbit_quorum_queue", "amqp_durable_queues"]),
    ]

    @Test("broker text becomes advice naming the option", arguments: rows)
    func advice(_ row: Row) {
        let text = PreconditionFailedAdvice.explain(row.broker, options: row.options)
        for mention in row.mentions {
            #expect(text.contains(mention), "\(mention) missing from: \(text)")
        }
    }

    @Test("the captured classic→quorum conflict")
    func capturedConflict() throws {
        let conflict = try #require(
            try TopologyTests.variants().first { $0["name"]?.stringValue == "conflict-classic-then-quorum" })
        let step = try #require(conflict["steps"]?.arrayValue?.last)
        let text = try #require(step["server_start"]?.stringValue)
        var options = RabbitOptions()
        options.rabbitQuorumQueue = true
        let advice = PreconditionFailedAdvice.explain(text, options: options)
        #expect(advice.contains("queue 'v-conflict-rpc' already exists as a classic queue"))
        #expect(advice.contains("set rabbit_quorum_queue=false"))
        #expect(advice.contains("rabbitmqctl delete_queue v-conflict-rpc"))
    }
}
