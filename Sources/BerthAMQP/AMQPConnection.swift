import CRabbitMQShims
import CRabbitMQ
import Glibc

/// Something the broker sent that the connection's owner must act on.
enum AMQPInbound {
    case delivery(AMQPDelivery)
    case confirm(deliveryTag: UInt64, multiple: Bool, ack: Bool)
    case returned(AMQPReturnedMessage)
    case consumerCancelled(String)
    case blocked(String)
    case unblocked
}

/// What the I/O loop's commands need of a connection; a protocol so that the rules around them (each caller
/// resumed exactly once, whatever fails) are tested without a broker.
protocol AMQPCommandChannel: AnyObject {
    var generation: UInt64 { get }
    func publish(
        exchange: String, routingKey: String, mandatory: Bool, properties: AMQPProperties, body: [UInt8]
    ) throws(AMQPError) -> UInt64
    func ack(deliveryTag: UInt64) throws(AMQPError)
    func reject(deliveryTag: UInt64, requeue: Bool) throws(AMQPError)
    func cancel(consumerTag: String) throws(AMQPError)
    func deleteQueue(_ name: String) throws(AMQPError)
}

/// One AMQP connection with one channel in confirm mode: the single owner of an
/// `amqp_connection_state_t`, destroyed in `deinit`.
///
/// librabbitmq is not thread-safe, so an `AMQPConnection` lives on its client's I/O thread and is
/// never touched from anywhere else.
final class AMQPConnection: AMQPCommandChannel {
    private let state: amqp_connection_state_t
    private let channel: amqp_channel_t = 1
    let generation: UInt64
    let url: AMQPURL
    private let bodyLimit: AMQPBodyLimit?
    private var socketOpen = false
    private var usable = false
    /// Sequence number of the last publish on the channel; confirms refer to it.
    private(set) var publishSequence: UInt64 = 0
    /// Methods that arrived between the frames of a message body, handed out by the next `poll()`.
    private var deferred: [AMQPInbound] = []

    init(url: AMQPURL, connectionName: String, generation: UInt64, bodyLimit: AMQPBodyLimit? = nil) throws(AMQPError) {
        guard let state = amqp_new_connection() else {
            throw AMQPError(.library, "librabbitmq could not allocate a connection (out of memory)")
        }
        self.state = state
        self.url = url
        self.generation = generation
        self.bodyLimit = bodyLimit
        try open(connectionName: connectionName)
    }

    deinit {
        if usable {
            // A clean close lets the broker requeue our unacked deliveries at once rather than on socket EOF.
            _ = amqp_connection_close(state, Int32(AMQP_REPLY_SUCCESS))
        }
        amqp_destroy_connection(state)
    }

    private func open(connectionName: String) throws(AMQPError) {
        let arena = CArena()
        let socket: OpaquePointer?
        if url.tls {
            socket = amqp_ssl_socket_new(state)
            guard let socket else { throw AMQPError(.connect, "librabbitmq could not create a TLS socket") }
            amqp_ssl_socket_set_verify_peer(socket, 1)
            amqp_ssl_socket_set_verify_hostname(socket, 1)
            if let ca = url.caCertificatePath {
                let status = amqp_ssl_socket_set_cacert(socket, arena.cString(ca))
                guard status == AMQP_STATUS_OK.rawValue else { throw AMQPError.tls(.unreadableCABundle, url: url) }
            }
            if let certificate = url.clientCertificatePath, let key = url.clientKeyPath {
                let status = amqp_ssl_socket_set_key(socket, arena.cString(certificate), arena.cString(key))
                guard status == AMQP_STATUS_OK.rawValue else {
                    throw AMQPError.tls(.unreadableClientCertificate, url: url)
                }
            }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else { throw AMQPError(.connect, "librabbitmq could not create a socket") }

        var timeout = Self.makeTimeval(seconds: url.connectTimeout)
        let status = amqp_socket_open_noblock(socket, arena.cString(url.host), Int32(url.port), &timeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            if let failure = Self.tlsFailure(status) { throw AMQPError.tls(failure, url: url) }
            throw AMQPError(
                .connect,
                "cannot connect to the broker at \(url.host):\(url.port): \(Self.statusText(status)); is RabbitMQ running and listening there?"
            )
        }
        socketOpen = true
        // Synchronous methods (declare, consume, close) must not hang forever on a broker that stops answering.
        var rpcTimeout = Self.makeTimeval(seconds: 30)
        amqp_set_rpc_timeout(state, &rpcTimeout)

        var properties = arena.table([
            (key: "connection_name", value: .string(connectionName)),
            (key: "product", value: .string("berth")),
            (key: "capabilities", value: .table([
                (key: "publisher_confirms", value: .bool(true)),
                (key: "consumer_cancel_notify", value: .bool(true)),
                (key: "connection.blocked", value: .bool(true)),
                (key: "basic.nack", value: .bool(true)),
            ])),
        ])
        let login = berth_amqp_login_plain(
            state, arena.cString(url.vhost), 0, 131_072, Int32(url.heartbeat), &properties, arena.cString(url.user),
            arena.cString(url.password))
        if login.reply_type != AMQP_RESPONSE_NORMAL {
            let reason = describe(login)
            throw AMQPError(
                .login,
                "the broker at \(url.host):\(url.port) refused login as '\(url.user)' to vhost '\(url.vhost)': \(reason.message); check the user, password and vhost in the transport URL",
                replyCode: reason.code)
        }
        usable = true
        _ = amqp_channel_open(state, channel)
        try check("open channel")
        _ = amqp_confirm_select(state, channel)
        try check("turn on publisher confirms")
    }

    // MARK: Declarations

    func declare(_ exchange: ExchangeDeclaration) throws(AMQPError) {
        let arena = CArena()
        _ = amqp_exchange_declare(
            state, channel, arena.bytes(exchange.name), arena.bytes(exchange.type.rawValue), 0, exchange.durable ? 1 : 0,
            exchange.autoDelete ? 1 : 0, 0, amqp_empty_table)
        try check("declare exchange '\(exchange.name)'")
    }

    /// Returns the number of messages ready in the queue, as the broker's declare-ok counts them.
    @discardableResult
    func declare(_ queue: QueueDeclaration) throws(AMQPError) -> UInt32 {
        let arena = CArena()
        let declared = amqp_queue_declare(
            state, channel, arena.bytes(queue.name), queue.passive ? 1 : 0, queue.durable ? 1 : 0,
            queue.exclusive ? 1 : 0, queue.autoDelete ? 1 : 0, arena.table(queue.arguments))
        try check("declare queue '\(queue.name)'")
        return declared?.pointee.message_count ?? 0
    }

    func bind(_ binding: Binding) throws(AMQPError) {
        let arena = CArena()
        _ = amqp_queue_bind(
            state, channel, arena.bytes(binding.queue), arena.bytes(binding.exchange), arena.bytes(binding.routingKey),
            amqp_empty_table)
        try check("bind queue '\(binding.queue)' to exchange '\(binding.exchange)'")
    }

    func deleteQueue(_ name: String) throws(AMQPError) {
        let arena = CArena()
        _ = amqp_queue_delete(state, channel, arena.bytes(name), 0, 0)
        try check("delete queue '\(name)'")
    }

    func qos(prefetchCount: UInt16) throws(AMQPError) {
        _ = amqp_basic_qos(state, channel, 0, prefetchCount, 0)
        try check("set basic.qos prefetch \(prefetchCount)")
    }

    func consume(queue: String, consumerTag: String, arguments: AMQPTable) throws(AMQPError) {
        let arena = CArena()
        _ = amqp_basic_consume(
            state, channel, arena.bytes(queue), arena.bytes(consumerTag), 0, 0, 0, arena.table(arguments))
        try check("consume queue '\(queue)'")
    }

    func cancel(consumerTag: String) throws(AMQPError) {
        let arena = CArena()
        _ = amqp_basic_cancel(state, channel, arena.bytes(consumerTag))
        try check("cancel consumer '\(consumerTag)'")
    }

    /// Declares and starts consuming; returns the ready messages of each queue declared, before any consumer.
    @discardableResult
    func apply(_ topology: AMQPTopology) throws(AMQPError) -> [String: UInt32] {
        var readyMessages: [String: UInt32] = [:]
        for exchange in topology.exchanges { try declare(exchange) }
        for queue in topology.queues { readyMessages[queue.name] = try declare(queue) }
        for binding in topology.bindings { try bind(binding) }
        if topology.prefetchCount > 0 { try qos(prefetchCount: topology.prefetchCount) }
        for consumer in topology.consumers {
            try consume(queue: consumer.queue, consumerTag: consumer.consumerTag, arguments: consumer.arguments)
        }
        return readyMessages
    }

    // MARK: Messages

    /// Publishes and returns the sequence number the broker's confirm will carry.
    func publish(
        exchange: String, routingKey: String, mandatory: Bool, properties: AMQPProperties, body: [UInt8]
    ) throws(AMQPError) -> UInt64 {
        let arena = CArena()
        var props = amqp_basic_properties_t()
        var flags: UInt32 = 0
        if let value = properties.contentType {
            props.content_type = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_CONTENT_TYPE_FLAG)
        }
        if let value = properties.contentEncoding {
            props.content_encoding = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_CONTENT_ENCODING_FLAG)
        }
        if let value = properties.headers {
            props.headers = arena.table(value)
            flags |= UInt32(AMQP_BASIC_HEADERS_FLAG)
        }
        if let value = properties.deliveryMode {
            props.delivery_mode = value
            flags |= UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG)
        }
        if let value = properties.priority {
            props.priority = value
            flags |= UInt32(AMQP_BASIC_PRIORITY_FLAG)
        }
        if let value = properties.correlationID {
            props.correlation_id = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_CORRELATION_ID_FLAG)
        }
        if let value = properties.replyTo {
            props.reply_to = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_REPLY_TO_FLAG)
        }
        if let value = properties.expiration {
            props.expiration = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_EXPIRATION_FLAG)
        }
        if let value = properties.messageID {
            props.message_id = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_MESSAGE_ID_FLAG)
        }
        if let value = properties.timestamp {
            props.timestamp = value
            flags |= UInt32(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        if let value = properties.type {
            props.type = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_TYPE_FLAG)
        }
        if let value = properties.appID {
            props.app_id = arena.bytes(value)
            flags |= UInt32(AMQP_BASIC_APP_ID_FLAG)
        }
        props._flags = flags
        let status = amqp_basic_publish(
            state, channel, arena.bytes(exchange), arena.bytes(routingKey), mandatory ? 1 : 0, 0, &props,
            arena.bytes(body))
        guard status == AMQP_STATUS_OK.rawValue else {
            usable = false
            throw AMQPError(.connectionLost, "publish to '\(exchange)' failed: \(Self.statusText(status))")
        }
        publishSequence += 1
        return publishSequence
    }

    func ack(deliveryTag: UInt64) throws(AMQPError) {
        let status = amqp_basic_ack(state, channel, deliveryTag, 0)
        guard status == AMQP_STATUS_OK.rawValue else {
            usable = false
            throw AMQPError(.connectionLost, "ack failed: \(Self.statusText(status))")
        }
    }

    func reject(deliveryTag: UInt64, requeue: Bool) throws(AMQPError) {
        let status = amqp_basic_reject(state, channel, deliveryTag, requeue ? 1 : 0)
        guard status == AMQP_STATUS_OK.rawValue else {
            usable = false
            throw AMQPError(.connectionLost, "reject failed: \(Self.statusText(status))")
        }
    }

    // MARK: Reading

    var socketDescriptor: Int32 { amqp_get_sockfd(state) }

    /// Whether frames are already buffered, so waiting on the socket would stall them.
    var hasBufferedInput: Bool {
        !deferred.isEmpty || amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0
    }

    /// Reads one thing the broker sent, without waiting; nil when nothing is there yet.
    /// Calling this regularly is also what sends our heartbeats and notices missing ones.
    func poll() throws(AMQPError) -> AMQPInbound? {
        if !deferred.isEmpty { return deferred.removeFirst() }
        while true {
            var frame = amqp_frame_t()
            var zero = Glibc.timeval(tv_sec: 0, tv_usec: 0)
            let status = amqp_simple_wait_frame_noblock(state, &frame, &zero)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return nil }
            guard status == AMQP_STATUS_OK.rawValue else {
                usable = false
                throw AMQPError(.connectionLost, "lost the broker connection: \(Self.statusText(status))")
            }
            guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { continue }
            let method = frame.payload.method
            switch method.id {
            case berth_amqp_basic_deliver:
                let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
                let consumerTag = deliver.consumer_tag.string
                let exchange = deliver.exchange.string
                let routingKey = deliver.routing_key.string
                let content = try readContent(channel: frame.channel, limit: bodyLimit)
                return .delivery(
                    AMQPDelivery(
                        consumerTag: consumerTag, deliveryTag: deliver.delivery_tag,
                        redelivered: deliver.redelivered != 0,
                        exchange: exchange, routingKey: routingKey, properties: content.properties, body: content.body,
                        oversized: content.oversized, connectionGeneration: generation))
            case berth_amqp_basic_return:
                let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
                let message = AMQPReturnedMessage(
                    replyCode: Int(returned.reply_code), replyText: returned.reply_text.string,
                    exchange: returned.exchange.string, routingKey: returned.routing_key.string)
                // Only the route matters; the body (our own message) is read and dropped.
                _ = try readContent(channel: frame.channel, limit: Self.droppingEveryBody)
                return .returned(message)
            default:
                if let inbound = try inbound(method) { return inbound }
            }
        }
    }

    /// Decodes a method that carries no content: confirms, cancels, closes, flow control.
    private func inbound(_ method: amqp_method_t) throws(AMQPError) -> AMQPInbound? {
        switch method.id {
        case berth_amqp_basic_ack:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            return .confirm(deliveryTag: ack.delivery_tag, multiple: ack.multiple != 0, ack: true)
        case berth_amqp_basic_nack:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            return .confirm(deliveryTag: nack.delivery_tag, multiple: nack.multiple != 0, ack: false)
        case berth_amqp_basic_cancel:
            let cancel = method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            return .consumerCancelled(cancel.consumer_tag.string)
        case berth_amqp_channel_close:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            usable = false
            throw AMQPError(
                .channelClosed, "the broker closed the channel: \(close.reply_code) \(close.reply_text.string)",
                replyCode: Int(close.reply_code))
        case berth_amqp_connection_close:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var closeOK = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, berth_amqp_connection_close_ok, &closeOK)
            usable = false
            throw AMQPError(
                .connectionClosed,
                "the broker closed the connection: \(close.reply_code) \(close.reply_text.string)",
                replyCode: Int(close.reply_code))
        case berth_amqp_connection_blocked:
            let blocked = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            return .blocked(blocked.reason.string)
        case berth_amqp_connection_unblocked:
            return .unblocked
        default:
            return nil
        }
    }

    /// For a returned message, whose body is our own and of no use.
    private static let droppingEveryBody = AMQPBodyLimit.dropping(over: 0)

    /// Lets librabbitmq reuse its frame memory once everything read has been copied out.
    func releaseBuffers() {
        amqp_maybe_release_buffers(state)
    }

    /// Reads a message's content header and body frames. A body over `limit` is never held: each frame is
    /// shown to the limit's scanner and dropped, and librabbitmq's frame memory is recycled as it goes.
    private func readContent(
        channel: amqp_channel_t, limit: AMQPBodyLimit?
    ) throws(AMQPError) -> (properties: AMQPProperties, body: [UInt8], oversized: AMQPOversizedBody?) {
        var frame = amqp_frame_t()
        try waitFrame(&frame, channel: channel)
        guard frame.frame_type == UInt8(AMQP_FRAME_HEADER) else {
            usable = false
            throw AMQPError(
                .connectionLost, "the broker sent frame type \(frame.frame_type) where a content header belongs")
        }
        let size = frame.payload.properties.body_size
        // Copied out before any frame memory is recycled.
        let properties = Self.properties(
            frame.payload.properties.decoded.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee)
        let oversized = limit.map { size > UInt64(max(0, $0.maxBytes)) } ?? false
        var body: [UInt8] = []
        var excerpt: [UInt8] = []
        var scanner = oversized ? limit?.makeScanner() : nil
        if limit != nil, !oversized { body.reserveCapacity(Int(size)) }  // size <= maxBytes here
        var received: UInt64 = 0
        while received < size {
            try waitFrame(&frame, channel: channel)
            guard frame.frame_type == UInt8(AMQP_FRAME_BODY) else {
                usable = false
                throw AMQPError(.connectionLost, "the broker sent frame type \(frame.frame_type) inside a message body")
            }
            let fragment = frame.payload.body_fragment
            let bytes = UnsafeRawBufferPointer(start: fragment.bytes, count: fragment.len)
            guard UInt64(bytes.count) <= size - received else {
                usable = false
                throw AMQPError(
                    .connectionLost, "the message body is longer than the \(size) bytes its header announced")
            }
            received += UInt64(bytes.count)
            if let limit, oversized {
                excerpt += bytes.prefix(max(0, limit.excerptBytes - excerpt.count))
                if scanner?.isFinished == false { scanner?.scan(bytes) }
                amqp_maybe_release_buffers_on_channel(state, channel)
            } else {
                body += bytes
            }
        }
        guard let scanner else { return (properties, body, nil) }
        return (properties, [], AMQPOversizedBody(size: size, excerpt: excerpt, scanner: scanner))
    }

    /// Waits for the next frame of the content on `channel`. Methods that arrive in between (confirms, flow
    /// control on channel 0) are decoded now, while their memory is valid, and handed out by `poll()` later.
    private func waitFrame(_ frame: inout amqp_frame_t, channel: amqp_channel_t) throws(AMQPError) {
        while true {
            let status = amqp_simple_wait_frame(state, &frame)
            guard status == AMQP_STATUS_OK.rawValue else {
                usable = false
                throw AMQPError(.connectionLost, "could not read a message body: \(Self.statusText(status))")
            }
            if frame.frame_type == UInt8(AMQP_FRAME_METHOD) {
                if let inbound = try inbound(frame.payload.method) { deferred.append(inbound) }
            } else if frame.channel == channel {
                return
            }
        }
    }

    private static func properties(_ props: amqp_basic_properties_t) -> AMQPProperties {
        let flags = props._flags
        func has(_ flag: Int32) -> Bool { flags & UInt32(flag) != 0 }
        var result = AMQPProperties()
        if has(AMQP_BASIC_CONTENT_TYPE_FLAG) { result.contentType = props.content_type.string }
        if has(AMQP_BASIC_CONTENT_ENCODING_FLAG) { result.contentEncoding = props.content_encoding.string }
        if has(AMQP_BASIC_HEADERS_FLAG) { result.headers = CTable.decode(props.headers) }
        if has(AMQP_BASIC_DELIVERY_MODE_FLAG) { result.deliveryMode = props.delivery_mode }
        if has(AMQP_BASIC_PRIORITY_FLAG) { result.priority = props.priority }
        if has(AMQP_BASIC_CORRELATION_ID_FLAG) { result.correlationID = props.correlation_id.string }
        if has(AMQP_BASIC_REPLY_TO_FLAG) { result.replyTo = props.reply_to.string }
        if has(AMQP_BASIC_EXPIRATION_FLAG) { result.expiration = props.expiration.string }
        if has(AMQP_BASIC_MESSAGE_ID_FLAG) { result.messageID = props.message_id.string }
        if has(AMQP_BASIC_TIMESTAMP_FLAG) { result.timestamp = props.timestamp }
        if has(AMQP_BASIC_TYPE_FLAG) { result.type = props.type.string }
        if has(AMQP_BASIC_APP_ID_FLAG) { result.appID = props.app_id.string }
        return result
    }

    // MARK: Errors

    /// Turns the reply of the last synchronous method into an error, answering a broker's channel or
    /// connection close so the connection is left in a known state.
    private func check(_ what: String) throws(AMQPError) {
        let reply = amqp_get_rpc_reply(state)
        guard reply.reply_type != AMQP_RESPONSE_NORMAL else { return }
        let reason = describe(reply)
        usable = false
        if reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION, reply.reply.id == berth_amqp_channel_close {
            var closeOK = amqp_channel_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, channel, berth_amqp_channel_close_ok, &closeOK)
            // The connection stays up but this channel is gone; closing the connection keeps ownership simple.
            usable = true
            throw AMQPError(.channelClosed, "cannot \(what): \(reason.message)", replyCode: reason.code)
        }
        if reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION {
            var closeOK = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, berth_amqp_connection_close_ok, &closeOK)
            throw AMQPError(.connectionClosed, "cannot \(what): \(reason.message)", replyCode: reason.code)
        }
        throw AMQPError(.connectionLost, "cannot \(what): \(reason.message)")
    }

    private func describe(_ reply: amqp_rpc_reply_t) -> (code: Int, message: String) {
        switch reply.reply_type {
        case AMQP_RESPONSE_NONE:
            return (0, "no reply from the broker")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return (0, Self.statusText(reply.library_error))
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == berth_amqp_connection_close {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                return (Int(close.reply_code), "\(close.reply_code) \(close.reply_text.string)")
            }
            if reply.reply.id == berth_amqp_channel_close {
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                return (Int(close.reply_code), "\(close.reply_code) \(close.reply_text.string)")
            }
            return (0, "unexpected broker method 0x\(String(reply.reply.id, radix: 16))")
        default:
            return (0, "unknown librabbitmq reply type")
        }
    }

    /// The librabbitmq statuses that mean the broker's certificate was checked and refused.
    static func tlsFailure(_ status: Int32) -> TLSFailure? {
        switch status {
        case AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue: .untrustedCertificate
        case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED.rawValue: .hostNameMismatch
        default: nil
        }
    }

    static func statusText(_ status: Int32) -> String {
        String(cString: amqp_error_string2(status))
    }

    static func makeTimeval(seconds: Double) -> Glibc.timeval {
        Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1_000_000))
    }
}
