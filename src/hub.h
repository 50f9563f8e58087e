/* hub.h — who is listening to what, and fanout.
 *
 * Channels are named streams with their own seq. Every WebSocket connection
 * is subscribed to its user's personal channel `user:<id>` and to the
 * channels it asked for, so "users -> connections" is the subscriber list of
 * the personal channel: one mechanism for both.
 *
 * A subscription is one node linked into two lists — the channel's
 * subscribers and the connection's subscriptions — so subscribing and
 * unsubscribing are O(1) and closing a connection costs O(its channels).
 *
 * mp_hub_publish encodes the message frame once and queues a reference to it
 * on every subscriber: O(subscribers) pointer pushes, no copy, no allocation
 * and no Lua per recipient.
 *
 * Memory: the hub owns channels and subscriptions. A hub channel is only a
 * subscriber set: it is created by the first subscriber and freed with the
 * last. Seq, epoch and history belong to the store (store.h), so publishing
 * to a channel nobody listens to costs no hub memory. The number of hub
 * channels is bounded by limits.max_channels.
 */
#ifndef MP_HUB_H
#define MP_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define MP_NAME_MAX 128

typedef struct mp_channel mp_channel;
typedef struct mp_sub mp_sub;

struct mp_sub {
    mp_channel *ch;
    mp_conn *conn;
    mp_sub *ch_prev, *ch_next;      /* in the channel's subscriber list */
    mp_sub *conn_next;              /* in the connection's subscriptions */
    uint64_t sent_seq;              /* last seq queued to it (ack routes) */
    uint64_t acked_seq;             /* last seq it acked (ack routes) */
    uint8_t tracks_acks;            /* its route requires acks */
    uint8_t replaying;              /* history replay paused: live frames wait for it */
    uint64_t replay_after;          /* replay resumes after this seq */
};

typedef struct mp_publish_opts {
    char *const *kinds;             /* deliver only to these device kinds ... */
    int nkinds;                     /* ... when nkinds > 0 */
    uint64_t ttl_ms;                /* history lifetime; 0: the channel's policy */
    int store;                      /* keep in history (0: fire and forget) */
} mp_publish_opts;

typedef struct mp_publish_result {
    uint64_t seq;
    char id[32];
    uint32_t recipients;
} mp_publish_result;

/* 1 if name is a valid channel name: 1..128 bytes of [A-Za-z0-9_.:@-]. */
int mp_hub_valid_name(const char *name, size_t len);

/* The channel, created if create is set. NULL if absent, or if creating it
 * would pass limits.max_channels. A created channel must get a subscriber
 * before control returns to the loop (it is freed with its last one). */
mp_channel *mp_hub_channel(const char *name, int create);

const char *mp_hub_channel_name(const mp_channel *ch);
mp_sub *mp_hub_channel_subs(const mp_channel *ch);
uint32_t mp_hub_channel_subscribers(const mp_channel *ch);

/* Subscribes c (listed in *subs, the connection's head) to ch; a no-op if it
 * already is. Returns 1 if added, 0 if already there, -1 out of memory.
 * *out (if given) is the subscription. */
int mp_hub_subscribe(mp_sub **subs, mp_conn *c, mp_channel *ch, mp_sub **out);

/* The connection's subscription to ch, or NULL. */
mp_sub *mp_hub_find_sub(mp_sub *subs, const mp_channel *ch);

/* Returns 1 if removed, 0 if c was not subscribed. Frees ch with its last
 * subscriber. */
int mp_hub_unsubscribe(mp_sub **subs, mp_channel *ch);

void mp_hub_unsubscribe_all(mp_sub **subs);

/* Publishes data (JSON text) on the channel called name: takes the next seq
 * and epoch from the store, encodes {"type":"message",...} once, appends it
 * to the history (unless opts->store is 0) and queues it to every
 * subscriber. With opts->nkinds > 0 only connections whose device kind is
 * listed get it. Subscribers on a route with a format hook get that route's
 * frame instead, made once per route by calling the hook the first time
 * such a subscriber comes up. Returns 0, or the store's negative status
 * (store.h: MP_STORE_ECHANNELS, MP_STORE_EFULL, MP_STORE_ENOMEM, ...) if it
 * refused the message or memory ran out: then nothing was sent. */
int mp_hub_publish(const char *name, const char *data, size_t data_len, const mp_publish_opts *opts,
                   mp_publish_result *out);


size_t mp_hub_channel_count(void);

void mp_hub_free_all(void);

#endif
