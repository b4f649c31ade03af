/* Shared by the benchmark's C load generator and C responder: connection set-up, ids, oslo publish
 * properties and the oslo envelope, all over librabbitmq and json-c (the libraries Berth itself uses). */
#ifndef BENCH_AMQP_H
#define BENCH_AMQP_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <json-c/json.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_HELPER __attribute__((unused)) static

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

BENCH_HELPER void check_rpc(amqp_rpc_reply_t reply, const char *what) {
    switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_NONE:
        die("%s: missing RPC reply type", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        die("%s: %s", what, amqp_error_string2(reply.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = reply.reply.decoded;
            die("%s: connection closed %u %.*s", what, m->reply_code, (int)m->reply_text.len,
                (char *)m->reply_text.bytes);
        }
        if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = reply.reply.decoded;
            die("%s: channel closed %u %.*s", what, m->reply_code, (int)m->reply_text.len,
                (char *)m->reply_text.bytes);
        }
        die("%s: server exception 0x%08x", what, reply.reply.id);
    }
}

/* amqp://user:pass@host:port/ — only what the benchmark needs (default vhost). */
BENCH_HELPER amqp_connection_state_t bench_connect(const char *url, const char *name) {
    struct amqp_connection_info info;
    char *copy = strdup(url);
    amqp_default_connection_info(&info);
    if (amqp_parse_url(copy, &info) != AMQP_STATUS_OK) die("cannot parse transport URL %s", url);
    if (!info.vhost || !*info.vhost) info.vhost = "/"; /* amqp://host:port/ names the default vhost */
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    if (!socket) die("cannot create a TCP socket");
    if (amqp_socket_open(socket, info.host, info.port) != AMQP_STATUS_OK)
        die("cannot connect to %s:%d", info.host, info.port);
    amqp_table_entry_t props[1];
    props[0].key = amqp_cstring_bytes("connection_name");
    props[0].value.kind = AMQP_FIELD_KIND_UTF8;
    props[0].value.value.bytes = amqp_cstring_bytes(name);
    amqp_table_t client_properties = {1, props};
    check_rpc(amqp_login_with_properties(conn, info.vhost, 0, 131072, 0, &client_properties, AMQP_SASL_METHOD_PLAIN,
                                         info.user, info.password),
              "login");
    amqp_channel_open(conn, 1);
    check_rpc(amqp_get_rpc_reply(conn), "channel.open");
    free(copy);
    return conn;
}

/* xorshift128+ seeded from the clock and pid: ids need to be unique, not secret. */
static uint64_t rng_state[2];
BENCH_HELPER void rng_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rng_state[0] = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() << 32;
    rng_state[1] = (uint64_t)ts.tv_sec * 0xBF58476D1CE4E5B9ULL ^ 0x94D049BB133111EBULL;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(rng_state, sizeof rng_state, 1, f) != 1) { /* keep the clock seed */ }
        fclose(f);
    }
}
BENCH_HELPER uint64_t rng_next(void) {
    uint64_t s1 = rng_state[0];
    const uint64_t s0 = rng_state[1];
    rng_state[0] = s0;
    s1 ^= s1 << 23;
    rng_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_state[1] + s0;
}
/* 32 lowercase hex digits (oslo's uuid4().hex). */
BENCH_HELPER void hex32(char out[33]) {
    uint64_t a = rng_next(), b = rng_next();
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}
/* A canonical lowercase version-4 uuid. */
BENCH_HELPER void uuid4(char out[37]) {
    uint64_t a = rng_next(), b = rng_next();
    a = (a & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;
    b = (b & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;
    snprintf(out, 37, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(a >> 32),
             (unsigned long long)((a >> 16) & 0xFFFF), (unsigned long long)(a & 0xFFFF),
             (unsigned long long)(b >> 48), (unsigned long long)(b & 0xFFFFFFFFFFFFULL));
}

BENCH_HELPER double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The properties oslo puts on every message (OSLO-WIRE §3); `expiration` only on call requests. */
BENCH_HELPER void oslo_properties(amqp_basic_properties_t *props, const char *expiration) {
    memset(props, 0, sizeof *props);
    props->_flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                    AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props->content_type = amqp_cstring_bytes("application/json");
    props->content_encoding = amqp_cstring_bytes("utf-8");
    props->delivery_mode = 2;
    props->priority = 0;
    props->headers.num_entries = 0;
    props->headers.entries = NULL;
    if (expiration) {
        props->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
        props->expiration = amqp_cstring_bytes(expiration);
    }
}

/* {"oslo.version": "2.0", "oslo.message": "<inner as a JSON string>"}; returns a malloc'd string. */
BENCH_HELPER char *oslo_envelope(const char *inner) {
    json_object *outer = json_object_new_object();
    json_object_object_add(outer, "oslo.version", json_object_new_string("2.0"));
    json_object_object_add(outer, "oslo.message", json_object_new_string(inner));
    char *text = strdup(json_object_to_json_string_ext(outer, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(outer);
    return text;
}

/* The inner message of an envelope (or the body itself for a bare 1.0 dict); the caller puts the result. */
BENCH_HELPER json_object *oslo_open(const void *bytes, size_t len) {
    json_tokener *tok = json_tokener_new();
    json_object *outer = json_tokener_parse_ex(tok, bytes, (int)len);
    json_tokener_free(tok);
    if (!outer) return NULL;
    json_object *message;
    if (json_object_object_get_ex(outer, "oslo.message", &message) && json_object_is_type(message, json_type_string)) {
        json_object *inner = json_tokener_parse(json_object_get_string(message));
        json_object_put(outer);
        return inner;
    }
    return outer;
}

BENCH_HELPER const char *json_string_field(json_object *obj, const char *key) {
    json_object *value;
    if (!json_object_object_get_ex(obj, key, &value) || !json_object_is_type(value, json_type_string)) return NULL;
    return json_object_get_string(value);
}

#endif
