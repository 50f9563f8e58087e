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
 * Memory: the hub owns channels and subscriptions. A channel lives while it
 * has subscribers or a seq worth keeping; the number of channels is bounded
 * by limits.max_channels.
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
};

typedef struct mp_publish_result {
    uint64_t seq;
    char id[32];
    uint32_t recipients;
} mp_publish_result;

/* 1 if name is a valid channel name: 1..128 bytes of [A-Za-z0-9_.:@-]. */
int mp_hub_valid_name(const char *name, size_t len);

/* The channel, created if create is set. NULL if absent, or if creating it
 * would pass limits.max_channels. */
mp_channel *mp_hub_channel(const char *name, int create);

const char *mp_hub_channel_name(const mp_channel *ch);
uint32_t mp_hub_channel_subscribers(const mp_channel *ch);

/* Subscribes c (listed in *subs, the connection's head) to ch; a no-op if it
 * already is. Returns 1 if added, 0 if already there, -1 out of memory. */
int mp_hub_subscribe(mp_sub **subs, mp_conn *c, mp_channel *ch);

/* Returns 1 if removed, 0 if c was not subscribed. */
int mp_hub_unsubscribe(mp_sub **subs, mp_channel *ch);

void mp_hub_unsubscribe_all(mp_sub **subs);

/* Assigns the next seq of ch, encodes {"type":"message",...,"data":data} once
 * and queues it to every subscriber. data is JSON text of data_len bytes.
 * With nkinds > 0 only connections whose device kind is listed get it.
 * Subscribers on a route with a format hook get that route's frame instead,
 * made once per route by calling the hook the first time such a subscriber
 * comes up in the loop. Returns 0, or -1 if out of memory (nothing sent). */
int mp_hub_publish(mp_channel *ch, const char *data, size_t data_len, char *const *kinds, int nkinds,
                   mp_publish_result *out);

uint64_t mp_hub_channel_seq(const mp_channel *ch);

size_t mp_hub_channel_count(void);

void mp_hub_free_all(void);

#endif
