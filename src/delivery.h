/* delivery.h — what a connection is owed beyond live fanout: history
 * replay (resume by `since`, device cursors) and acks with resend.
 *
 * Resume is race-free because it is one synchronous step on the loop: the
 * history read and the subscription happen before any other publish can
 * run, so replayed messages end exactly where live ones begin — no gap, no
 * duplicate. (A networked store must keep that order; see store.h.)
 *
 * A replay never fills a connection's queue past half its bound: it pauses
 * there (the subscription is marked replaying, and live fanout skips it,
 * since every live message is in the history the replay will read) and
 * continues when the queue has drained to a quarter. Messages published
 * with store=false are not in history: a subscription that is replaying
 * misses them, like a disconnected one would.
 *
 * Acks: on a route with `acks`, each subscription tracks the last seq sent
 * and the last acked (cumulative, per channel). A connection with anything
 * unacked has one retry timer — armed when the first unacked message goes
 * out, not per message, and restarted by every ack that moves a position
 * (so a device that keeps acking is never resent to). When it fires, every
 * subscription's unacked range
 * is resent from history (frames shared with the store), and the next wait
 * grows by the route's factor with +-jitter. After max_tries sends the
 * connection is closed with 4004; the device resumes from its cursor.
 * Nothing per message is allocated: the history is the resend buffer.
 */
#ifndef MP_DELIVERY_H
#define MP_DELIVERY_H

#include <stdint.h>

#include "histogram.h"
#include "hub.h"
#include "identity.h"
#include "net.h"
#include "server.h"

typedef struct mp_acks mp_acks;

/* Queues the retained messages of s's channel after `since` to c, in order.
 * epoch is the client's (NULL: none). If the epoch is not the channel's, or
 * history no longer reaches back to since + 1, or since is beyond the head,
 * a `reset` frame tells the client first (docs/protocol.md). Sets
 * s->sent_seq to the last seq queued. Returns the number of messages. */
int mp_delivery_replay(mp_conn *c, mp_sub *s, const char *epoch, uint64_t since);

/* Continues a replay paused because the connection's queue was full. */
void mp_delivery_continue(mp_conn *c, mp_sub *s);

/* Queues the retained messages the device has not acked (its cursor), or
 * for its personal channel with no cursor, everything retained. A device
 * with no cursor on a channel gets one at the channel's current position,
 * so what is published from now on is owed to it until it acks. */
void mp_delivery_resume_device(mp_conn *c, mp_sub *s, const mp_identity *id, int personal);

/* The channel's epoch and last seq ("" and 0 if the store does not know it). */
void mp_delivery_position(const char *channel, char epoch[32], uint64_t *last_seq);

/* Ack state of one connection on an ack route. */
mp_acks *mp_acks_new(mp_conn *c, mp_sub **subs, const mp_identity *id, const mp_route *route);
void mp_acks_free(mp_acks *a);

/* Something unacked went out: start the retry timer unless it runs. */
void mp_acks_arm(mp_acks *a);

/* A cumulative ack of seq on s. Returns 0, or -1 if seq was never sent
 * (the caller answers bad_ack). Advances the device cursor in the store. */
int mp_acks_ack(mp_acks *a, mp_sub *s, uint64_t seq);

/* Publish-to-ack seconds of acked messages (metrics.c shows it). */
extern mp_histogram mp_delivery_ack_latency;

#endif
