/* store.h — sequence numbers, channel history and device cursors.
 *
 * The store owns three things, all keyed by name (never by a hub pointer):
 *
 *   - per channel: the seq counter (last seq published), the epoch, and a
 *     bounded history of the messages published with store=true, each kept
 *     as a reference to its already-encoded frame, so a replay pushes the
 *     same frames into a connection's queue: no copy, no re-encode;
 *   - per (user, device, channel): a cursor, the last seq that device acked
 *     and the epoch it belongs to;
 *   - the limits and a sweep that frees what expired.
 *
 * It is an interface with one implementation per backend: the memory store
 * (store_mem.c, the embedded default) and the Redis store for clusters
 * (store_redis.c; its header store_redis.h adds its config and stats).
 * Every operation that a backend may have to ask someone else about takes a
 * callback: the callback is called exactly once with the outcome. The memory
 * store always calls it before the operation returns; a Redis store calls it
 * later from the event loop. Callers write the continuation in the callback
 * and never assume either. `ud` must stay valid until the callback ran. A
 * NULL callback means "don't tell me". Sweep, stats and policy changes are
 * local bookkeeping and synchronous in every backend.
 *
 * Order: a backend completes operations in the order they were issued (a
 * networked one keeps them on one pipelined connection per shard), so an
 * append is visible to every read issued after it, and no callback of a
 * channel overtakes an earlier one. A callback may call the store again
 * (even a read from inside a read callback).
 *
 * Seq: the store, not the hub, hands out seqs, because in a cluster several
 * nodes publish on one channel and the seq must come from the shared store.
 * Publishing is one operation, mp_store_publish: the store takes the next
 * seq, encodes the standard envelope (envelope.h), retains it (unless
 * store=false) and makes it live; the node delivers only what reaches its
 * live handler (mp_store_live_handler), for the channels it watches
 * (mp_store_watch) — in a cluster every node, the one that took the publish
 * included, gets it from the bus, so each channel has one ordered path:
 *
 *     publish --cb(seq, epoch)--> answer the publisher
 *        `--> on_message on every node watching the channel --> fan out
 *
 * The older pair next_seq -> encode -> append is kept by the memory store
 * until the hub has moved to publish (NULL in the Redis store). A seq taken
 * and never stored (store=false, or the append failed) is a hole in the
 * history, not a loss: it was never stored.
 *
 * Epoch: a short string that changes whenever the channel's history before
 * some seq may have been lost, so a client's `since` or a device cursor from
 * another epoch means nothing and the caller replays from the start of what
 * is retained. It changes when
 *   - the store is new (process restart: every epoch carries a random
 *     instance id drawn at mp_store_mem_new);
 *   - the channel's state was dropped: a state retaining no message made
 *     room for a new channel past max_channels, or it was freed after it
 *     sat empty for channel_idle_ms. Its seq restarts at 1;
 *   - the channel was flushed. Its seq goes on from where it was.
 * It does NOT change when messages are trimmed for max_messages or age out
 * (policy max_age or the message's own ttl): that is routine, would change
 * the epoch on every publish of a full channel, and the caller sees it
 * exactly through first_seq (a `since` below first_seq - 1 is a gap).
 *
 * first_seq is 1 + the newest seq the history lost: trimmed (max_messages)
 * or aged out by max_age. A message whose own, shorter ttl ran
 * out is not a loss (the publisher said it was worthless by then) and never
 * moves it; nor do seqs that were never stored.
 *
 * Memory: the store allocates all of its state and frees it in
 * mp_store_free. It holds one reference to each retained frame (taken in
 * mp_store_append, dropped when the message is trimmed, expires or is
 * flushed). No limit ever drops a message another channel retains: past
 * max_channels or max_bytes the operation that would need room is refused
 * (MP_STORE_ECHANNELS, MP_STORE_EFULL), so a publisher naming many new
 * channels cannot evict anyone's history. Strings passed in are copied; strings and frames passed to a
 * callback are valid until the callback returns: take mp_frame_ref (or push
 * to an mp_outq, which does) to keep a frame. Every structure is bounded:
 * messages per channel by the policy, channels by max_channels, stored bytes
 * by max_bytes, cursors by max_cursors, and nothing is allocated per message
 * beyond its slot in the channel's ring (at most 2 x max_messages slots: a
 * message released early by its own ttl leaves a slot until compacted).
 */
#ifndef MP_STORE_H
#define MP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#define MP_STORE_NAME_MAX 128   /* channel, user and device names: 1..128 bytes */
#define MP_STORE_ID_MAX 32      /* message ids: at most 31 bytes + NUL */
#define MP_STORE_EPOCH_MAX 32   /* epochs: at most 31 bytes + NUL */
#define MP_STORE_MESSAGES_LIMIT 1000000u   /* largest max_messages accepted */

typedef struct mp_store mp_store;

/* Outcomes passed to callbacks. Negative values are errors. */
enum {
    MP_STORE_OK = 0,
    MP_STORE_STALE = 1,       /* cursor advance not forward: cursor unchanged (not an error) */
    MP_STORE_ENOENT = -1,     /* no such channel or cursor */
    MP_STORE_EINVAL = -2,     /* empty or too long name/id, seq 0, bad policy */
    MP_STORE_ESEQ = -3,       /* append: seq not handed out, or not after the last stored */
    MP_STORE_ERANGE = -4,     /* cursor advance beyond the last published seq */
    MP_STORE_EEPOCH = -5,     /* cursor advance for an epoch that is not the channel's */
    MP_STORE_ENOMEM = -6,
    MP_STORE_EUNAVAIL = -7,   /* backend unreachable (not the memory store) */
    MP_STORE_ECHANNELS = -8,  /* a new channel state past max_channels, and none can be dropped */
    MP_STORE_EFULL = -9,      /* append: the store holds max_bytes */
    MP_STORE_ECANCELED = -10, /* watch: unwatched before the watch was active */
    MP_STORE_ENOTSUP = -11,   /* the backend has no such operation (next_seq, append on Redis) */
};

const char *mp_store_strerror(int status);

/* History limits for the channels whose name matches pattern: an exact
 * name, a prefix ending in `*` (`orders:*`), or `*`. max_messages 0 keeps no
 * history; max_age_ms 0 means no age limit (the count still bounds it). */
typedef struct mp_store_policy {
    const char *pattern;
    uint32_t max_messages;
    uint64_t max_age_ms;
} mp_store_policy;

typedef struct mp_store_config {
    const mp_store_policy *policies;  /* first match wins; copied */
    size_t npolicies;
    mp_store_policy default_policy;   /* when none matches; pattern unused */
    size_t max_channels;        /* channel states (seq + epoch + history): past it the LRU state
                                   retaining no message goes, else MP_STORE_ECHANNELS */
    size_t max_bytes;           /* sum of retained frame sizes (appends past it: MP_STORE_EFULL); 0 = no limit */
    uint64_t channel_idle_ms;   /* a channel with no message is freed this long after its last use */
    size_t max_cursors;         /* LRU evicted past it */
    uint64_t cursor_ttl_ms;     /* a cursor not read nor advanced for this long is dropped; 0 = never */
    /* Milliseconds since the epoch (wall clock: publish times are shown to
     * clients and, in a cluster, compared across nodes). NULL: CLOCK_REALTIME. */
    uint64_t (*clock_ms)(void *clock_ud);
    void *clock_ud;
} mp_store_config;

/* Fills cfg with the defaults: no policies, default 100 messages / 1 hour,
 * 10000 channels, 256 MiB, idle 10 minutes, 100000 cursors, cursor ttl 7 days. */
void mp_store_config_defaults(mp_store_config *cfg);

/* One retained message, as passed to a read callback. */
typedef struct mp_store_item {
    uint64_t seq;
    uint64_t published_ms;
    uint64_t expires_ms;        /* UINT64_MAX: no age limit */
    mp_frame *frame;            /* borrowed for the callback's duration */
    char id[MP_STORE_ID_MAX];
} mp_store_item;

/* Where a reader's `since` stands. */
enum {
    MP_STORE_SINCE_OK = 0,      /* since >= first_seq - 1: nothing retained was missed */
    MP_STORE_SINCE_GAP,         /* since < first_seq - 1: messages since+1 .. first_seq-1 are gone */
    MP_STORE_SINCE_AHEAD,       /* since > last_seq: the reader is ahead of this history */
    MP_STORE_SINCE_EPOCH,       /* the reader's epoch is not the channel's: read from the start */
};

typedef struct mp_store_history {
    const char *epoch;          /* "" for a channel the store does not know */
    uint64_t first_seq;         /* 1 + the newest seq lost (see the top); 1 if none this epoch */
    uint64_t last_seq;          /* last seq handed out (published), 0 if none */
    int since_state;            /* MP_STORE_SINCE_* */
    const mp_store_item *items; /* seq order, all with seq > since (0 after an epoch change) */
    size_t count;
    int more;                   /* 1 if retained messages follow the last one returned */
} mp_store_history;

typedef struct mp_store_cursor {
    uint64_t seq;               /* last seq acked */
    const char *epoch;          /* the channel's epoch when it was acked */
} mp_store_cursor;

typedef struct mp_store_stats {
    uint64_t messages;          /* retained */
    uint64_t bytes;             /* sum of retained frame sizes */
    uint64_t channels;          /* channel states (seq + epoch), with or without history */
    uint64_t channels_with_history;
    uint64_t cursors;
    uint64_t trimmed;           /* messages dropped for max_messages */
    uint64_t expired;           /* messages aged out (max_age or ttl) */
    uint64_t evicted_channels;  /* states retaining no message dropped for max_channels */
    uint64_t idle_channels;     /* empty channel states freed after channel_idle_ms */
    uint64_t evicted_cursors;   /* dropped for max_cursors */
    uint64_t expired_cursors;   /* dropped after cursor_ttl_ms */
} mp_store_stats;

typedef void (*mp_store_done_cb)(mp_store *st, int status, void *ud);
typedef void (*mp_store_seq_cb)(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud);
typedef void (*mp_store_read_cb)(mp_store *st, int status, const mp_store_history *h, void *ud);
/* c is NULL unless status is MP_STORE_OK or MP_STORE_STALE. */
typedef void (*mp_store_cursor_cb)(mp_store *st, int status, const mp_store_cursor *c, void *ud);

/* A message to append. */
typedef struct mp_store_put {
    uint64_t seq;               /* from mp_store_next_seq on this channel */
    const char *id;             /* at most 31 bytes */
    mp_frame *frame;            /* the encoded message; the store takes its own reference */
    uint64_t ttl_ms;            /* 0: the policy's max_age; else min(ttl_ms, max_age) */
} mp_store_put;

/* ---- v2: publish and live delivery -------------------------------------- */

/* A message to publish. Every string is copied (or used) before
 * mp_store_publish returns. */
typedef struct mp_store_msg {
    const char *id;             /* 1..31 bytes of [A-Za-z0-9_.:@-] (envelope.h) */
    const char *data;           /* the message's data as compact JSON text, not empty */
    size_t data_len;
    uint64_t ttl_ms;            /* 0: the policy's max_age; else min(ttl_ms, max_age) */
    int store;                  /* 0: fire and forget: a seq is taken, nothing retained, still live */
    const char *kinds;          /* NULL or "": every device kind; else "pos,web" (no spaces, < 256 bytes) */
    uint64_t published_ms;      /* wall clock ms (latency metrics); 0: the store's clock */
} mp_store_msg;

#define MP_STORE_KINDS_MAX 256  /* kinds: at most 255 bytes + NUL */

/* One live message as the node receives it. Everything is borrowed for the
 * duration of on_message: take mp_frame_ref(frame) to keep the frame. */
typedef struct mp_store_live {
    const char *channel;
    uint64_t seq;
    const char *epoch;
    const char *id;
    const char *kinds;          /* "" = every kind; else a comma list */
    uint64_t published_ms;
    mp_frame *frame;            /* the standard envelope as one WebSocket text frame;
                                   frame->published = published_ms / 1000 (ev_now's clock) */
    const char *data;           /* the data JSON inside frame's payload (format hooks read it) */
    size_t data_len;
} mp_store_live;

/* Live events for the node. For each watched channel the store calls
 * on_message in strictly increasing seq order, at most once per seq, and
 * never silently skips a stored message: when the messages after the last
 * one it delivered can no longer all be delivered it calls on_reset
 * instead, with
 *   reason MP_STORE_SINCE_EPOCH: the channel's epoch changed (flushed,
 *          its state expired, Redis lost it), or
 *          MP_STORE_SINCE_GAP: history no longer reaches back (trimmed or
 *          aged out while this node could not hear the bus),
 * and epoch, first_seq, last_seq the channel's position now (as in
 * mp_store_history; epoch "" if the channel is gone). After on_reset,
 * on_message goes on with what history retains from first_seq on, then
 * with live messages: a caller forwards the reset to clients and fans out
 * what follows ("reset first, then whatever is retained", protocol.md).
 * A message published with store=false is live only: a node that could not
 * hear the bus when it went by does not get it, and that is not a gap (it
 * was never stored). The handler may call the store (also publish). */
typedef struct mp_store_live_handler {
    void (*on_message)(mp_store *st, const mp_store_live *m, void *ud);
    void (*on_reset)(mp_store *st, const char *channel, const char *epoch, uint64_t first_seq,
                     uint64_t last_seq, int reason, void *ud);
    void *ud;
} mp_store_live_handler;

/* epoch "" and last_seq 0 for a channel the store does not know yet. */
typedef void (*mp_store_watch_cb)(mp_store *st, int status, const char *epoch, uint64_t last_seq, void *ud);

/* The backend's operations; callers use the mp_store_* wrappers below. */
typedef struct mp_store_ops {
    void (*next_seq)(mp_store *st, const char *channel, mp_store_seq_cb cb, void *ud);
    void (*append)(mp_store *st, const char *channel, const mp_store_put *m, mp_store_done_cb cb, void *ud);
    void (*read)(mp_store *st, const char *channel, const char *epoch, uint64_t since, size_t max,
                 mp_store_read_cb cb, void *ud);
    void (*flush)(mp_store *st, const char *channel, mp_store_done_cb cb, void *ud);
    void (*cursor_get)(mp_store *st, const char *user, const char *device, const char *channel,
                       mp_store_cursor_cb cb, void *ud);
    void (*cursor_advance)(mp_store *st, const char *user, const char *device, const char *channel,
                           uint64_t seq, const char *epoch, mp_store_cursor_cb cb, void *ud);
    void (*cursor_delete_device)(mp_store *st, const char *user, const char *device,
                                 mp_store_done_cb cb, void *ud);
    size_t (*sweep)(mp_store *st);
    void (*stats)(mp_store *st, mp_store_stats *out);
    int (*set_policies)(mp_store *st, const mp_store_policy *p, size_t n, const mp_store_policy *def);
    void (*free)(mp_store *st);
    /* v2 */
    void (*set_live_handler)(mp_store *st, const mp_store_live_handler *h);
    void (*publish)(mp_store *st, const char *channel, const mp_store_msg *m, mp_store_seq_cb cb, void *ud);
    void (*watch)(mp_store *st, const char *channel, mp_store_watch_cb cb, void *ud);
    void (*unwatch)(mp_store *st, const char *channel);
} mp_store_ops;

struct mp_store {
    const mp_store_ops *ops;
};

/* The memory store. NULL if out of memory or a policy is invalid. */
mp_store *mp_store_mem_new(const mp_store_config *cfg);

/* Hands out the next seq of channel (creating its state: past max_channels
 * the least recently used state retaining no message goes, and if none does,
 * MP_STORE_ECHANNELS and no seq) and passes it with the
 * channel's epoch. Counts as use of the channel. */
static inline void mp_store_next_seq(mp_store *st, const char *channel, mp_store_seq_cb cb, void *ud)
{
    if (st->ops->next_seq) st->ops->next_seq(st, channel, cb, ud);
    else if (cb) cb(st, MP_STORE_ENOTSUP, 0, NULL, ud);
}

/* Retains m in channel's history, trimming the oldest past the policy's
 * max_messages. MP_STORE_EFULL if the store would hold more than max_bytes
 * after that trim (nothing is dropped to make room).
 * m->seq must have been handed out by mp_store_next_seq and be above every
 * seq appended before on this channel (else MP_STORE_ESEQ). Under a policy
 * with max_messages 0 nothing is retained and the status is MP_STORE_OK. */
static inline void mp_store_append(mp_store *st, const char *channel, const mp_store_put *m,
                                   mp_store_done_cb cb, void *ud)
{
    if (st->ops->append) st->ops->append(st, channel, m, cb, ud);
    else if (cb) cb(st, MP_STORE_ENOTSUP, ud);
}

/* Up to max retained messages with seq > since, oldest first, with first_seq,
 * last_seq and since_state. epoch is the reader's (NULL or "": none): if it is
 * not the channel's, since is taken as 0 and since_state is
 * MP_STORE_SINCE_EPOCH. Never returns an expired message. max 0 asks only
 * for the positions. An unknown channel reads as empty (status MP_STORE_OK,
 * epoch "", last_seq 0) and is not created. */
static inline void mp_store_read(mp_store *st, const char *channel, const char *epoch, uint64_t since,
                                 size_t max, mp_store_read_cb cb, void *ud)
{ st->ops->read(st, channel, epoch, since, max, cb, ud); }

/* Drops channel's history and gives it a new epoch; its seq goes on.
 * channel NULL: every channel. MP_STORE_ENOENT for an unknown channel. */
static inline void mp_store_flush(mp_store *st, const char *channel, mp_store_done_cb cb, void *ud)
{ st->ops->flush(st, channel, cb, ud); }

/* The device's cursor on channel: MP_STORE_OK, or MP_STORE_ENOENT. Counts as
 * use of the cursor (its ttl restarts). */
static inline void mp_store_cursor_get(mp_store *st, const char *user, const char *device,
                                       const char *channel, mp_store_cursor_cb cb, void *ud)
{ st->ops->cursor_get(st, user, device, channel, cb, ud); }

/* Moves the device's cursor on channel to seq in the channel's current epoch.
 * seq 0 records a starting position (creating the channel's state if it has
 * none), so a device that subscribed and never acked is still owed what was
 * published after it subscribed.
 *   MP_STORE_OK      moved (or created: past max_cursors the least recently
 *                    used cursor is evicted);
 *   MP_STORE_STALE   seq <= the cursor's seq in the same epoch: unchanged
 *                    (a duplicate or reordered ack), ttl restarted;
 *   MP_STORE_ERANGE  seq > the channel's last seq (or the channel is unknown);
 *   MP_STORE_EEPOCH  epoch (NULL or "": don't check) is not the channel's.
 * A cursor from an older epoch is replaced by any seq of the current one. */
static inline void mp_store_cursor_advance(mp_store *st, const char *user, const char *device,
                                           const char *channel, uint64_t seq, const char *epoch,
                                           mp_store_cursor_cb cb, void *ud)
{ st->ops->cursor_advance(st, user, device, channel, seq, epoch, cb, ud); }

/* Deletes every cursor of (user, device). MP_STORE_OK even if there was none. */
static inline void mp_store_cursor_delete_device(mp_store *st, const char *user, const char *device,
                                                 mp_store_done_cb cb, void *ud)
{ st->ops->cursor_delete_device(st, user, device, cb, ud); }

/* Frees expired messages, idle empty channels and expired cursors. Call it
 * periodically (e.g. once a second from one ev_timer). Work is proportional
 * to what is due, not to what is stored. Returns the number of messages,
 * channels and cursors it freed. Reads never depend on it having run. */
static inline size_t mp_store_sweep(mp_store *st) { return st->ops->sweep(st); }

static inline void mp_store_get_stats(mp_store *st, mp_store_stats *out) { st->ops->stats(st, out); }

/* Replaces the policy table (config reload). A channel picks its new limits
 * at its next append; retained messages keep the expiry they were given.
 * Returns 0, or MP_STORE_EINVAL (a pattern with `*` elsewhere than at its
 * end, or max_messages over MP_STORE_MESSAGES_LIMIT) / MP_STORE_ENOMEM, and
 * then the old table stays. def NULL keeps the default policy. */
static inline int mp_store_set_policies(mp_store *st, const mp_store_policy *p, size_t n,
                                        const mp_store_policy *def)
{ return st->ops->set_policies(st, p, n, def); }

/* Frees the store, dropping its frame references. Every operation still
 * waiting (Redis) is called back first, once, with MP_STORE_EUNAVAIL (a
 * pending watch too), so callers can free their contexts; callbacks may
 * not call the store any more then (it answers MP_STORE_EUNAVAIL). Not to
 * be called from inside one of the store's callbacks. NULL is a no-op. */
static inline void mp_store_free(mp_store *st) { if (st) st->ops->free(st); }

/* Sets who receives live messages and resets (copied; NULL: nobody). Set it
 * before the first watch. */
static inline void mp_store_set_live_handler(mp_store *st, const mp_store_live_handler *h)
{ st->ops->set_live_handler(st, h); }

/* Publishes one message on channel: assigns the next seq, encodes the
 * standard envelope, retains it (unless m->store is 0; trimmed and aged as
 * mp_store_append does) and makes it live: the live handler of every node
 * watching the channel gets it. cb gets (status, seq, epoch).
 *   memory store: synchronously, and on_message (if this node watches the
 *     channel) runs BEFORE cb; a publish from inside on_message is
 *     delivered after the outer on_message returns, so order holds;
 *   Redis: one script does it all on the channel's shard; cb comes when
 *     Redis answered, on_message when the bus brings it (either first).
 * Errors (nothing was stored and nobody gets the message):
 *   MP_STORE_EINVAL     bad channel (1..128 bytes of [A-Za-z0-9_.:@-]), id, kinds, empty data;
 *   MP_STORE_ECHANNELS, MP_STORE_EFULL, MP_STORE_ENOMEM   memory store limits;
 *   MP_STORE_EUNAVAIL   Redis: the shard is down, did not answer in time,
 *                       or too many operations wait for it. After a timeout
 *                       the message MAY have been stored (the answer was
 *                       lost): "never 200 for a message not stored" holds,
 *                       a 503 for one that was is possible. */
static inline void mp_store_publish(mp_store *st, const char *channel, const mp_store_msg *m,
                                    mp_store_seq_cb cb, void *ud)
{ st->ops->publish(st, channel, m, cb, ud); }

/* Starts live delivery of channel to this node. cb(status, epoch, last_seq)
 * comes once the subscription is active: every message with seq > last_seq
 * in that epoch will reach on_message (or be covered by an on_reset).
 * Idempotent per channel (a second watch gets the current position); the
 * caller watches a channel while it has local subscribers. Statuses: OK;
 * EINVAL, ENOMEM; EUNAVAIL (Redis: the shard is down or went down before
 * the watch was active: nothing is watched, watch again later);
 * ECANCELED (unwatched before it was active). Once active, a watch
 * outlives connection losses: the store resubscribes and recovers what
 * the bus missed from history (or calls on_reset). Memory store: cb
 * before returning. */
static inline void mp_store_watch(mp_store *st, const char *channel, mp_store_watch_cb cb, void *ud)
{ st->ops->watch(st, channel, cb, ud); }

/* Stops live delivery of channel (one unwatch ends any number of watches).
 * A pending watch cb is called with MP_STORE_ECANCELED. A no-op for a
 * channel not watched. */
static inline void mp_store_unwatch(mp_store *st, const char *channel) { st->ops->unwatch(st, channel); }

/* Now in ms by the config's clock (mp_store_config.clock_ms; NULL: CLOCK_REALTIME). */
uint64_t mp_store_clock_ms(uint64_t (*clock_ms)(void *), void *clock_ud);

/* 1 if channel and m pass publish's checks (EINVAL otherwise). */
int mp_store_msg_valid(const char *channel, const mp_store_msg *m);

/* Where a reader at (epoch, since) stands against h's epoch, first_seq and
 * last_seq (MP_STORE_SINCE_*); *since_eff is since, or 0 when the epoch
 * differs (read from the start). Every backend reads through it. */
int mp_store_since_state(const mp_store_history *h, const char *reader_epoch, uint64_t since,
                         uint64_t *since_eff);

/* The first policy in p[0..n) whose pattern matches channel, or def. */
const mp_store_policy *mp_store_policy_match(const mp_store_policy *p, size_t n,
                                             const mp_store_policy *def, const char *channel);

/* A backend's own copy of the policy table (patterns strdup'd). A zeroed
 * one is empty with a zero default. */
typedef struct mp_store_policies {
    mp_store_policy *p;
    size_t n;
    mp_store_policy def;        /* pattern NULL */
} mp_store_policies;

/* Replaces t's table as mp_store_set_policies describes (validated first;
 * on error t is unchanged). */
int mp_store_policies_set(mp_store_policies *t, const mp_store_policy *p, size_t n, const mp_store_policy *def);
static inline const mp_store_policy *mp_store_policies_match(const mp_store_policies *t, const char *channel)
{ return mp_store_policy_match(t->p, t->n, &t->def, channel); }
void mp_store_policies_free(mp_store_policies *t);

#endif
