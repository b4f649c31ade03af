#ifndef BERTH_AMQP_SHIM_H
#define BERTH_AMQP_SHIM_H

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <sys/eventfd.h>

/* The I/O thread's wake-up descriptor (glibc's eventfd flags are macros Swift does not see). */
static inline int berth_wake_descriptor(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

/* librabbitmq's method-number macros carry casts, which Swift does not import. */
static const amqp_method_number_t berth_amqp_connection_close = 0x000A0032;
static const amqp_method_number_t berth_amqp_connection_close_ok = 0x000A0033;
static const amqp_method_number_t berth_amqp_channel_close_ok = 0x00140029;
static const amqp_method_number_t berth_amqp_connection_blocked = 0x000A003C;
static const amqp_method_number_t berth_amqp_connection_unblocked = 0x000A003D;
static const amqp_method_number_t berth_amqp_channel_close = 0x00140028;
static const amqp_method_number_t berth_amqp_basic_cancel = 0x003C001E;
static const amqp_method_number_t berth_amqp_basic_return = 0x003C0032;
static const amqp_method_number_t berth_amqp_basic_deliver = 0x003C003C;
static const amqp_method_number_t berth_amqp_basic_ack = 0x003C0050;
static const amqp_method_number_t berth_amqp_basic_nack = 0x003C0078;

/* amqp_login_with_properties is variadic (the SASL arguments); Swift cannot call it. PLAIN login, with
 * client properties so the broker's connection list names the worker. */
amqp_rpc_reply_t berth_amqp_login_plain(amqp_connection_state_t state, const char *vhost, int channel_max,
                                        int frame_max, int heartbeat, const amqp_table_t *client_properties,
                                        const char *user, const char *password);

#endif
