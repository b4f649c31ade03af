/// Turns RabbitMQ's 406 PRECONDITION_FAILED text for a declaration into advice that names the Berth option to
/// change. The broker says which argument differs; only the operator knows whether the existing object or
/// Berth's configuration is the one to fix, so both ways out are given.
public enum PreconditionFailedAdvice {
    /// A parsed "inequivalent arg" complaint.
    struct Mismatch: Equatable {
        var argument: String
        var kind: String  // "queue" or "exchange"
        var name: String
        var vhost: String
        /// What Berth sent and what the broker has; nil means the argument is absent ("none").
        var received: String?
        var current: String?
    }

    public static func explain(_ brokerText: String, options: RabbitOptions) -> String {
        if let mismatch = parseInequivalent(brokerText) {
            return explain(mismatch, options: options)
        }
        if let (name, vhost) = parseInvalidAutoDelete(brokerText) {
            return "RabbitMQ refuses queue '\(name)' as an auto-delete quorum queue: quorum queues cannot be "
                + "auto-delete. Set amqp_auto_delete=false (or rabbit_quorum_queue=false)"
                + (vhost == "/" ? "." : " for vhost '\(vhost)'.") + " Broker said: \(brokerText)"
        }
        return "RabbitMQ refused a declaration (406 PRECONDITION_FAILED): \(brokerText). Berth's "
            + "[oslo_messaging_rabbit] options (amqp_durable_queues, rabbit_quorum_queue, "
            + "rabbit_transient_quorum_queue, rabbit_ha_queues, rabbit_transient_queues_ttl, amqp_auto_delete) "
            + "must match those of the services already using this broker, or the existing object must be deleted."
    }

    private enum ObjectRole {
        case topicQueue, replyQueue, fanoutQueue, controlExchange, fanoutExchange

        init(kind: String, name: String) {
            if kind == "exchange" {
                self = name.hasSuffix("_fanout") ? .fanoutExchange : .controlExchange
            } else if name.hasPrefix("reply_") {
                self = .replyQueue
            } else if name.contains("_fanout") {
                self = .fanoutQueue
            } else {
                self = .topicQueue
            }
        }

        var isTransient: Bool { self == .replyQueue || self == .fanoutQueue || self == .fanoutExchange }
    }

    private static func explain(_ m: Mismatch, options: RabbitOptions) -> String {
        let role = ObjectRole(kind: m.kind, name: m.name)
        let what = "\(m.kind) '\(m.name)'" + (m.vhost == "/" ? "" : " (vhost '\(m.vhost)')")
        let fix: String
        switch m.argument {
        case "x-queue-type":
            let existing = m.current ?? "classic"
            let wanted = m.received ?? "classic"
            let option =
                existing == "stream" || wanted == "stream"
                ? "rabbit_stream_fanout"
                : (role.isTransient ? "rabbit_transient_quorum_queue" : "rabbit_quorum_queue")
            let value = existing == "classic" ? "false" : "true"
            return "\(what) already exists as a \(existing) queue but Berth declares it as a \(wanted) queue; "
                + "set \(option)=\(value) to match it, or delete the queue so it is re-created as a \(wanted) "
                + "queue (\(deleteCommand(m)); its messages are lost)."
        case "durable":
            let value = m.current ?? "false"
            switch role {
            case .topicQueue, .controlExchange:
                fix =
                    value == "true"
                    // Both options make the exchange and topic queues durable; which one the deployment uses
                    // shows only on the queues (x-queue-type), so name both.
                    ? "set amqp_durable_queues=true (classic durable queues) or rabbit_quorum_queue=true "
                        + "(quorum queues), whichever the deployment uses"
                    : (options.rabbitQuorumQueue
                        ? "set rabbit_quorum_queue=false and amqp_durable_queues=false (quorum forces durable)"
                        : "set amqp_durable_queues=false")
            case .replyQueue, .fanoutQueue, .fanoutExchange:
                fix = "set rabbit_transient_quorum_queue=\(value)"
            }
        case "auto_delete":
            let value = m.current ?? "false"
            switch role {
            case .topicQueue, .controlExchange:
                fix = "set amqp_auto_delete=\(value)"
            case .replyQueue, .fanoutQueue, .fanoutExchange:
                fix =
                    "no Berth option changes this flag (oslo always uses auto_delete=\(m.received ?? "false")), so "
                    + "the existing object was made by another tool"
            }
        case "x-expires":
            let seconds = m.current.flatMap { Int64($0) }.map { String($0 / 1000) } ?? "0"
            fix = "set rabbit_transient_queues_ttl=\(seconds)"
        case "x-max-age":
            let seconds = m.current.map { $0.hasSuffix("s") ? String($0.dropLast()) : $0 } ?? "0"
            fix = "set rabbit_transient_queues_ttl=\(seconds)"
        case "x-ha-policy":
            fix = "set rabbit_ha_queues=\(m.current == nil ? "false" : "true")"
        case "x-delivery-limit":
            fix = "set rabbit_quorum_delivery_limit=\(m.current ?? "0")"
        case "x-max-in-memory-length":
            fix = "set rabbit_quorum_max_memory_length=\(m.current ?? "0")"
        case "x-max-in-memory-bytes":
            fix = "set rabbit_quorum_max_memory_bytes=\(m.current ?? "0")"
        case "type":
            fix =
                "the exchange type is fixed by oslo (\(m.received ?? "?")), so the existing object was made by "
                + "another tool"
        default:
            fix = "no Berth option sets '\(m.argument)', so the existing object was made by another tool or policy"
        }
        return "\(what) already exists with \(m.argument)=\(m.current ?? "none") but Berth declares "
            + "\(m.argument)=\(m.received ?? "none"); \(fix) to match it, or delete the \(m.kind) so it is "
            + "re-created (\(deleteCommand(m))\(m.kind == "queue" ? "; its messages are lost" : ""))."
    }

    private static func deleteCommand(_ m: Mismatch) -> String {
        if m.kind == "exchange" {
            let vhost = m.vhost == "/" ? "" : " --vhost=\(m.vhost)"
            return "rabbitmqadmin\(vhost) delete exchange name=\(m.name)"
        }
        let vhost = m.vhost == "/" ? "" : " -p \(m.vhost)"
        return "rabbitmqctl\(vhost) delete_queue \(m.name)"
    }

    /// "inequivalent arg 'A' for queue 'Q' in vhost 'V': received X but current is Y", where X and Y are
    /// `none`, `'v'`, or `the value 'v' of type 't'`.
    static func parseInequivalent(_ text: String) -> Mismatch? {
        guard let argStart = text.range(of: "inequivalent arg '") else { return nil }
        var rest = text[argStart.upperBound...]
        guard let argument = take(until: "' for ", from: &rest) else { return nil }
        let kind: String
        if rest.hasPrefix("queue '") {
            kind = "queue"
        } else if rest.hasPrefix("exchange '") {
            kind = "exchange"
        } else {
            return nil
        }
        rest = rest.dropFirst(kind.count + 2)
        guard let name = take(until: "' in vhost '", from: &rest),
            let vhost = take(until: "': received ", from: &rest),
            let receivedText = take(until: " but current is ", from: &rest)
        else { return nil }
        return Mismatch(
            argument: argument, kind: kind, name: name, vhost: vhost, received: value(receivedText),
            current: value(String(rest)))
    }

    static func parseInvalidAutoDelete(_ text: String) -> (name: String, vhost: String)? {
        guard let start = text.range(of: "invalid property 'auto-delete' for queue '") else { return nil }
        var rest = text[start.upperBound...]
        guard let name = take(until: "' in vhost '", from: &rest) else { return nil }
        let vhost = rest.firstIndex(of: "'").map { String(rest[..<$0]) } ?? String(rest)
        return (name, vhost)
    }

    private static func take(until marker: String, from rest: inout Substring) -> String? {
        guard let range = rest.range(of: marker) else { return nil }
        let value = String(rest[..<range.lowerBound])
        rest = rest[range.upperBound...]
        return value
    }

    /// Reads `none`, `'v'` or `the value 'v' of type 't'`, ignoring whatever a client library appended after
    /// it (kombu and py-amqp wrap the broker text in their own repr).
    private static func value(_ text: String) -> String? {
        if text.hasPrefix("none") { return nil }
        var rest = Substring(text)
        if rest.hasPrefix("the value '") {
            rest = rest.dropFirst("the value '".count)
            if let end = rest.range(of: "' of type '") { return String(rest[..<end.lowerBound]) }
        } else if rest.hasPrefix("'") {
            rest = rest.dropFirst()
        }
        return String(rest.prefix { $0 != "'" && $0 != "\"" && $0 != ")" && $0 != "\n" })
    }
}
