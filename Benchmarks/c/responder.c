/* The broker ceiling: a minimal oslo RPC responder over librabbitmq that does no work. It declares the control
 * exchange, `<topic>` and `<topic>.<host>` with oslo's default flags (OSLO-WIRE §2), consumes both with manual
 * ack, and answers every call at once with oslo's single final reply
 *   {"oslo.version": "2.0", "oslo.message": "{\"result\": {...}, \"failure\": null, \"ending\": true, \"_msg_id\": ...}"}
 * published to the caller's `_reply_q` through the default exchange (mandatory, oslo's properties), then acks.
 * No publisher confirms, no thread hand-off, one JSON parse: whatever rate it reaches is what the broker and
 * this machine allow an oslo-compatible server, the ceiling the real servers are compared with.
 *
 *   responder --url amqp://guest:guest@127.0.0.1:5672/ --exchange X --topic T --host H [--prefetch N]
 * Prints "consuming" on stdout once it consumes; exits on SIGTERM/SIGINT. */
#include "bench_amqp.h"

#include <getopt.h>
#include <signal.h>

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void declare_queue(amqp_connection_state_t conn, const char *exchange, const char *name) {
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(name), 0, 0, 0, 0, amqp_empty_table);
    check_rpc(amqp_get_rpc_reply(conn), "queue.declare");
    amqp_queue_bind(conn, 1, amqp_cstring_bytes(name), amqp_cstring_bytes(exchange), amqp_cstring_bytes(name),
                    amqp_empty_table);
    check_rpc(amqp_get_rpc_reply(conn), "queue.bind");
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(name), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check_rpc(amqp_get_rpc_reply(conn), "basic.consume");
}

int main(int argc, char **argv) {
    const char *url = "amqp://guest:guest@127.0.0.1:5672/", *exchange = "berth", *topic = "compute", *host = "c";
    int prefetch = 0;
    static struct option options[] = {{"url", required_argument, 0, 'u'},     {"exchange", required_argument, 0, 'e'},
                                      {"topic", required_argument, 0, 't'},   {"host", required_argument, 0, 'h'},
                                      {"prefetch", required_argument, 0, 'p'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 'e': exchange = optarg; break;
        case 't': topic = optarg; break;
        case 'h': host = optarg; break;
        case 'p': prefetch = atoi(optarg); break;
        default: die("unknown option");
        }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    amqp_connection_state_t conn = bench_connect(url, "berth-bench responder");
    amqp_exchange_declare(conn, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 0, 0, 0,
                          amqp_empty_table);
    check_rpc(amqp_get_rpc_reply(conn), "exchange.declare");
    if (prefetch > 0) {
        amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
        check_rpc(amqp_get_rpc_reply(conn), "basic.qos");
    }
    char server_queue[512];
    snprintf(server_queue, sizeof server_queue, "%s.%s", topic, host);
    declare_queue(conn, exchange, topic);
    declare_queue(conn, exchange, server_queue);
    printf("consuming\n");
    fflush(stdout);

    amqp_basic_properties_t props;
    oslo_properties(&props, NULL);
    char *inner = malloc(2048);
    long answered = 0;
    while (!stopping) {
        amqp_envelope_t envelope;
        struct timeval wait = {0, 200000};
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t result = amqp_consume_message(conn, &envelope, &wait, 0);
        if (result.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && result.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (result.reply_type != AMQP_RESPONSE_NORMAL) {
            if (result.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                result.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
                amqp_frame_t frame;
                if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) break;
                if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
                    amqp_message_t message; /* a reply to a queue that is gone: drop it, as oslo does eventually */
                    if (amqp_read_message(conn, frame.channel, &message, 0).reply_type == AMQP_RESPONSE_NORMAL)
                        amqp_destroy_message(&message);
                    continue;
                }
                if (frame.frame_type == AMQP_FRAME_METHOD &&
                    (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                     frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD))
                    die("the broker closed the channel or connection");
                continue;
            }
            check_rpc(result, "consume");
        }
        json_object *request = oslo_open(envelope.message.body.bytes, envelope.message.body.len);
        const char *msg_id = request ? json_string_field(request, "_msg_id") : NULL;
        const char *reply_q = request ? json_string_field(request, "_reply_q") : NULL;
        if (msg_id && reply_q) {
            snprintf(inner, 2048,
                     "{\"result\": {\"host\": \"%s\", \"status\": \"ACTIVE\"}, \"failure\": null, \"ending\": true, "
                     "\"_msg_id\": \"%s\"}",
                     host, msg_id);
            char *body = oslo_envelope(inner);
            int status = amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(reply_q), 1, 0, &props,
                                            amqp_cstring_bytes(body));
            free(body);
            if (status != AMQP_STATUS_OK) die("publish: %s", amqp_error_string2(status));
            answered++;
        }
        if (request) json_object_put(request);
        amqp_basic_ack(conn, 1, envelope.delivery_tag, 0);
        amqp_destroy_envelope(&envelope);
    }
    fprintf(stderr, "responder: answered %ld calls\n", answered);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
