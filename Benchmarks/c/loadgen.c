/* The benchmark's load generator: K oslo RPC calls outstanding at all times (a closed loop of K callers) on one
 * connection and one reply queue, until N calls are answered. Requests are byte-for-byte what an oslo 18.3.1
 * RPCClient publishes for call() to a topic (envelope 2.0, _msg_id, _reply_q, _timeout null, _unique_id,
 * _context_*), with its AMQP properties; replies are matched by _msg_id. It is C on purpose: Python clients
 * (GIL-bound) would become the bottleneck before the servers under test do. It reports its own CPU time so
 * the runner can show it is not the bottleneck.
 *
 *   loadgen --url amqp://guest:guest@127.0.0.1:5672/ --exchange X --topic T --method ping|boot_instance|delete_instance
 *           --calls N --concurrency K [--image ID] [--uuid-out FILE] [--uuid-in FILE] [--timeout S]
 *
 * Prints one JSON object: calls, failures, seconds, calls_per_s, latency percentiles (ms), cpu seconds. */
#include "bench_amqp.h"

#include <getopt.h>
#include <sys/resource.h>

struct slot {
    char msg_id[33];
    char uuid[37];
    double sent;
    int busy;
};

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, size_t n, double p) {
    if (n == 0) return 0;
    size_t index = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[index < n ? index : n - 1];
}

int main(int argc, char **argv) {
    const char *url = "amqp://guest:guest@127.0.0.1:5672/", *exchange = "berth", *topic = "compute";
    const char *method = "ping", *image = NULL, *uuid_out = NULL, *uuid_in = NULL, *server = NULL;
    long calls = 1000, concurrency = 1;
    double timeout = 120;
    static struct option options[] = {
        {"url", required_argument, 0, 'u'},      {"exchange", required_argument, 0, 'e'},
        {"topic", required_argument, 0, 't'},    {"method", required_argument, 0, 'm'},
        {"calls", required_argument, 0, 'n'},    {"concurrency", required_argument, 0, 'k'},
        {"image", required_argument, 0, 'i'},    {"uuid-out", required_argument, 0, 'o'},
        {"uuid-in", required_argument, 0, 'I'},  {"timeout", required_argument, 0, 'T'},
        {"server", required_argument, 0, 's'},   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 'e': exchange = optarg; break;
        case 't': topic = optarg; break;
        case 'm': method = optarg; break;
        case 'n': calls = atol(optarg); break;
        case 'k': concurrency = atol(optarg); break;
        case 'i': image = optarg; break;
        case 'o': uuid_out = optarg; break;
        case 'I': uuid_in = optarg; break;
        case 'T': timeout = atof(optarg); break;
        case 's': server = optarg; break;
        default: die("unknown option");
        }
    }
    int boot = strcmp(method, "boot_instance") == 0, delete = strcmp(method, "delete_instance") == 0;
    if (boot && !image) die("--image is required for boot_instance");
    if (calls <= 0 || concurrency <= 0) die("--calls and --concurrency must be positive");
    if (concurrency > calls) concurrency = calls;

    char **uuids = NULL;
    if (delete) {
        if (!uuid_in) die("--uuid-in is required for delete_instance");
        FILE *in = fopen(uuid_in, "r");
        if (!in) die("cannot read %s", uuid_in);
        uuids = calloc((size_t)calls, sizeof *uuids);
        char line[64];
        long count = 0;
        while (count < calls && fgets(line, sizeof line, in)) {
            line[strcspn(line, "\r\n")] = 0;
            if (*line) uuids[count++] = strdup(line);
        }
        fclose(in);
        calls = count;
        if (calls == 0) {
            printf("{\"method\": \"%s\", \"calls\": 0}\n", method);
            return 0;
        }
        if (concurrency > calls) concurrency = calls;
    }
    FILE *out = NULL;
    if (uuid_out && !(out = fopen(uuid_out, "w"))) die("cannot write %s", uuid_out);

    rng_seed();
    char routing_key[512];
    if (server) snprintf(routing_key, sizeof routing_key, "%s.%s", topic, server);
    else snprintf(routing_key, sizeof routing_key, "%s", topic);

    amqp_connection_state_t conn = bench_connect(url, "berth-bench loadgen");
    char reply_q[40] = "reply_";
    hex32(reply_q + 6);
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(reply_q), 0, 0, 1, 1, amqp_empty_table);
    check_rpc(amqp_get_rpc_reply(conn), "queue.declare (reply)");
    /* Replies are consumed without acks: the generator must cost the broker as little as possible. */
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(reply_q), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    check_rpc(amqp_get_rpc_reply(conn), "basic.consume (reply)");

    char expiration[32];
    snprintf(expiration, sizeof expiration, "%ld", (long)(timeout * 1000));
    amqp_basic_properties_t props;
    oslo_properties(&props, expiration);

    struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
    double *latency = calloc((size_t)calls, sizeof *latency);
    long sent = 0, answered = 0, failures = 0;
    char first_failure[512] = "";
    char *inner = malloc(4096);

    /* Sends the next call in slot s. */
#define SEND(s)                                                                                                    \
    do {                                                                                                           \
        struct slot *sl = &slots[s];                                                                               \
        char unique[33], request_id[37];                                                                           \
        hex32(sl->msg_id);                                                                                         \
        hex32(unique);                                                                                             \
        uuid4(request_id);                                                                                         \
        char args[1024];                                                                                           \
        if (boot) {                                                                                                \
            uuid4(sl->uuid);                                                                                       \
            snprintf(args, sizeof args,                                                                            \
                     "{\"instance\": {\"uuid\": \"%s\", \"name\": \"bench\", \"image_id\": \"%s\", \"flavor\": "    \
                     "{\"name\": \"tiny\", \"vcpus\": 1, \"memory_mb\": 128, \"root_gb\": 0}, \"metadata\": {}}}",    \
                     sl->uuid, image);                                                                             \
        } else if (delete) {                                                                                       \
            snprintf(sl->uuid, sizeof sl->uuid, "%s", uuids[sent]);                                                \
            snprintf(args, sizeof args, "{\"instance_uuid\": \"%s\"}", sl->uuid);                                  \
        } else {                                                                                                   \
            snprintf(args, sizeof args, "{}");                                                                     \
        }                                                                                                          \
        snprintf(inner, 4096,                                                                                      \
                 "{\"method\": \"%s\", \"args\": %s, \"version\": \"1.0\", \"_msg_id\": \"%s\", \"_reply_q\": "     \
                 "\"%s\", \"_timeout\": null, \"_unique_id\": \"%s\", \"_context_request_id\": \"req-%s\", "        \
                 "\"_context_user\": \"u-bench\", \"_context_project_id\": \"p-bench\", \"_context_roles\": "        \
                 "[\"member\"], \"_context_auth_token\": null}",                                                    \
                 method, args, sl->msg_id, reply_q, unique, request_id);                                           \
        char *body = oslo_envelope(inner);                                                                         \
        sl->busy = 1;                                                                                              \
        sl->sent = now_seconds();                                                                                  \
        int status = amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(routing_key),   \
                                        0, 0, &props, amqp_cstring_bytes(body));                                   \
        free(body);                                                                                                \
        if (status != AMQP_STATUS_OK) die("publish: %s", amqp_error_string2(status));                              \
        sent++;                                                                                                    \
    } while (0)

    struct rusage usage_start;
    getrusage(RUSAGE_SELF, &usage_start);
    double started = now_seconds(), last_progress = started;
    for (long s = 0; s < concurrency; s++) SEND(s);

    while (answered < calls) {
        amqp_envelope_t envelope;
        struct timeval wait = {1, 0};
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t result = amqp_consume_message(conn, &envelope, &wait, 0);
        if (result.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && result.library_error == AMQP_STATUS_TIMEOUT) {
            if (now_seconds() - last_progress > timeout)
                die("no reply for %.0f s (%ld of %ld answered)", timeout, answered, calls);
            continue;
        }
        if (result.reply_type != AMQP_RESPONSE_NORMAL) {
            if (result.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                result.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
                amqp_frame_t frame;
                if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) die("lost the connection");
                if (frame.frame_type == AMQP_FRAME_METHOD &&
                    (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                     frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD))
                    die("the broker closed the channel or connection");
                continue;
            }
            check_rpc(result, "consume");
        }
        double arrived = now_seconds();
        json_object *reply = oslo_open(envelope.message.body.bytes, envelope.message.body.len);
        amqp_destroy_envelope(&envelope);
        if (!reply) die("undecodable reply");
        json_object *ending, *failure;
        if (!json_object_object_get_ex(reply, "ending", &ending) || !json_object_get_boolean(ending)) {
            json_object_put(reply); /* a call-monitor heartbeat */
            continue;
        }
        const char *msg_id = json_string_field(reply, "_msg_id");
        long s = -1;
        for (long i = 0; msg_id && i < concurrency; i++)
            if (slots[i].busy && strcmp(slots[i].msg_id, msg_id) == 0) { s = i; break; }
        if (s < 0) { json_object_put(reply); continue; }
        if (json_object_object_get_ex(reply, "failure", &failure) && !json_object_is_type(failure, json_type_null)) {
            if (failures++ == 0) snprintf(first_failure, sizeof first_failure, "%s", json_object_get_string(failure));
        } else if (out) {
            fprintf(out, "%s\n", slots[s].uuid);
        }
        json_object_put(reply);
        latency[answered++] = arrived - slots[s].sent;
        slots[s].busy = 0;
        last_progress = arrived;
        if (sent < calls) SEND(s);
    }
    double seconds = now_seconds() - started;
    struct rusage usage_end;
    getrusage(RUSAGE_SELF, &usage_end);
    double cpu = (double)(usage_end.ru_utime.tv_sec - usage_start.ru_utime.tv_sec) +
                 (double)(usage_end.ru_utime.tv_usec - usage_start.ru_utime.tv_usec) * 1e-6 +
                 (double)(usage_end.ru_stime.tv_sec - usage_start.ru_stime.tv_sec) +
                 (double)(usage_end.ru_stime.tv_usec - usage_start.ru_stime.tv_usec) * 1e-6;
    qsort(latency, (size_t)answered, sizeof *latency, compare_double);
    json_object *report = json_object_new_object();
    json_object_object_add(report, "method", json_object_new_string(method));
    json_object_object_add(report, "concurrency", json_object_new_int64(concurrency));
    json_object_object_add(report, "calls", json_object_new_int64(answered));
    json_object_object_add(report, "failures", json_object_new_int64(failures));
    json_object_object_add(report, "first_failure", json_object_new_string(first_failure));
    json_object_object_add(report, "seconds", json_object_new_double(seconds));
    json_object_object_add(report, "calls_per_s", json_object_new_double((double)answered / seconds));
    json_object_object_add(report, "p50_ms", json_object_new_double(percentile(latency, (size_t)answered, 0.50) * 1e3));
    json_object_object_add(report, "p90_ms", json_object_new_double(percentile(latency, (size_t)answered, 0.90) * 1e3));
    json_object_object_add(report, "p99_ms", json_object_new_double(percentile(latency, (size_t)answered, 0.99) * 1e3));
    json_object_object_add(report, "max_ms", json_object_new_double(latency[answered - 1] * 1e3));
    json_object_object_add(report, "cpu_seconds", json_object_new_double(cpu));
    printf("%s\n", json_object_to_json_string_ext(report, JSON_C_TO_STRING_PLAIN));
    json_object_put(report);
    if (out) fclose(out);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
