/* store_redis_int.h — what the pieces of the Redis store share (private).
 *
 * The Redis store (store_redis.h; keys, scripts and limits at the top of
 * store_redis.c) is split by concern:
 *   store_redis.c          lifetime, the ops table, stats, and what every
 *                          operation uses: script arguments, history replies;
 *   store_redis_chan.c     channel operations: publish, read, flush;
 *   store_redis_cursor.c   device cursors;
 *   store_redis_watch.c    watches: bookkeeping, live delivery, the bus
 *                          events from redis.c, watch / unwatch;
 *   store_redis_recover.c  how a watch catches up: the position at watch,
 *                          recovery from history after a gap, quiet checks.
 * This header holds the state they all touch and the calls between them.
 * Nothing outside store_redis*.c includes it.
 */
#ifndef MP_STORE_REDIS_INT_H
#define MP_STORE_REDIS_INT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "envelope.h"
#include "store_redis.h"

#define KEY_MAX (MP_STORE_NAME_MAX * 2 + 32)
#define RECOVER_BATCH 256
#define MAX_SCRIPT_ARGS 20

enum { W_SUBSCRIBING, W_SYNCING, W_LIVE, W_RECOVERING };

typedef struct waiter {
    struct waiter *next;
    mp_store_watch_cb cb;
    void *ud;
} waiter;

/* A bus message: parsed in place (env points into the payload), or held
 * while its channel recovers (env points at data). */
typedef struct bmsg {
    struct bmsg *next;
    int kind;                   /* 'm' message, 'r' flushed (seq: the last seq then) */
    uint64_t seq, published_ms;
    uint64_t arrival;           /* its channel's arrival count when it came */
    char epoch[MP_STORE_EPOCH_MAX];
    char id[MP_STORE_ID_MAX];
    char kinds[MP_STORE_KINDS_MAX];
    const char *env;
    size_t env_len;
    char data[];
} bmsg;

typedef struct wch {
    UT_hash_handle hh;
    uint64_t id;                /* incarnation: answers for an older one are ignored */
    int shard;
    int state;
    int synced;                 /* epoch/last are a real position */
    int unwanted;               /* unwatched before Redis confirmed its SUBSCRIBE */
    uint64_t sub_serial;        /* the pub/sub connection its SUBSCRIBE went on */
    uint64_t round;             /* reads of an older round are ignored */
    int reading;                /* a read of this round is in flight */
    int checking;               /* a quiet check is in flight */
    uint64_t arrivals;          /* bus messages that came */
    uint64_t read_mark;         /* arrivals when the current read was sent */
    ev_tstamp heard;            /* last bus message, recovery or quiet check */
    uint64_t last;              /* last seq delivered (or the position at watch) */
    char epoch[MP_STORE_EPOCH_MAX];   /* "": the channel had no state */
    waiter *waiters, *waiters_tail;
    bmsg *bhead, *btail;        /* held while SYNCING / RECOVERING */
    size_t nbuf;
    int overflow;               /* held messages were dropped: recover again */
    char name[];
} wch;

typedef struct rstore {
    mp_store base;
    mp_redis *r;
    struct ev_loop *loop;
    mp_store_policies policies;
    uint64_t idle_ms, cursor_ttl_ms;
    uint64_t (*clock_ms)(void *);
    void *clock_ud;
    uint32_t quiet_ms, buffer_max;
    mp_redis_script *s_publish, *s_read, *s_position, *s_flush, *s_cget, *s_cadv, *s_cdel;
    mp_store_live_handler live;
    wch *watches;
    uint64_t next_wid, epoch_no;
    ev_timer quiet;
    int closing;
    mp_store_redis_stats stats;
} rstore;

typedef struct op {
    rstore *st;
    void *cb;                   /* the caller's callback, by operation */
    void *ud;
    char channel[MP_STORE_NAME_MAX + 1];
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t since, seq;
    size_t max;
    /* cursor advance, step 2 */
    char user[MP_STORE_NAME_MAX + 1], device[MP_STORE_NAME_MAX + 1];
    /* flush of every channel */
    int pending, status;
} op;

/* ---- small helpers ------------------------------------------------------ */

static inline uint64_t now_ms(rstore *st) { return mp_store_clock_ms(st->clock_ms, st->clock_ud); }

static inline size_t name_len(const char *s)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, MP_STORE_NAME_MAX + 1);
    return n > MP_STORE_NAME_MAX ? 0 : n;
}

static inline int channel_ok(const char *channel)
{
    size_t n = name_len(channel);
    return n && mp_envelope_safe(channel, n);
}

/* The one place channel keys are built: kind 'm' meta, 'h' history, 'p' bus. */
static inline size_t chan_key(char out[KEY_MAX], const char *channel, char kind)
{
    return (size_t)snprintf(out, KEY_MAX, "mp:{%s}:%c", channel, kind);
}

/* The channel named by a bus channel "mp:{C}:p" (len bytes), into out. */
static inline int channel_of_bus(const char *bus, size_t len, char out[MP_STORE_NAME_MAX + 1])
{
    if (len < 8 || len - 7 > MP_STORE_NAME_MAX || memcmp(bus, "mp:{", 4) != 0 || memcmp(bus + len - 3, "}:p", 3) != 0)
        return -1;
    memcpy(out, bus + 4, len - 7);
    out[len - 7] = '\0';
    return 0;
}

static inline int u64_of(const redisReply *r, uint64_t *out)
{
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        *out = (uint64_t)r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING || !r->len || r->len > 20)
        return -1;
    char *end;
    *out = strtoull(r->str, &end, 10);
    return *end ? -1 : 0;
}

static inline int str_of(const redisReply *r, char *out, size_t cap)
{
    if (r->type != REDIS_REPLY_STRING || r->len >= cap)
        return -1;
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return 0;
}

static inline int epoch_ok(const char *epoch)
{
    return !epoch || strnlen(epoch, MP_STORE_EPOCH_MAX) < MP_STORE_EPOCH_MAX;
}

/* ---- script arguments -------------------------------------------------- */

typedef struct args {
    const char *v[MAX_SCRIPT_ARGS];
    size_t l[MAX_SCRIPT_ARGS];
    int n;
    char keys[2][KEY_MAX];
    char nums[8][24];
    int nnums;
    char cand[MP_STORE_EPOCH_MAX];
} args;

static inline void arg(args *a, const char *s, size_t len)
{
    a->v[a->n] = s;
    a->l[a->n++] = len;
}

static inline void arg_s(args *a, const char *s) { arg(a, s, strlen(s)); }

static inline void arg_u(args *a, uint64_t v)
{
    char *b = a->nums[a->nnums++];
    arg(a, b, (size_t)snprintf(b, sizeof a->nums[0], "%llu", (unsigned long long)v));
}

static inline void eval(rstore *st, int shard, const mp_redis_script *s, args *a, int nkeys, mp_redis_reply_cb cb,
                 void *ctx)
{
    mp_redis_eval(st->r, shard, s, cb, ctx, nkeys, a->n, a->v, a->l);
}

/* ---- history replies ----------------------------------------------------- */

typedef struct rec {
    uint64_t seq, published_ms, expires_ms;
    char id[MP_STORE_ID_MAX];
    char kinds[MP_STORE_KINDS_MAX];
    const char *env;
    size_t env_len;
} rec;

typedef struct raw_history {
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last, floor;
    int more;
    uint64_t top;               /* highest seq in the reply, readable entry or not */
    size_t n;
    rec *recs;                  /* n of them, seq order; env borrowed from the reply */
} raw_history;

/* ---- shared by the operations (store_redis.c) ------------------------------ */

/* A reply that is not what the script returns: logged once per reply.
 * Returns MP_STORE_EUNAVAIL. */
int rs_script_failed(rstore *st, const char *what, const redisReply *reply);
/* The keys and the six arguments every channel script starts with
 * (redis/lib.lua). -1 if the shard's generation is not known (not up). */
int rs_chan_args(rstore *st, args *a, const char *channel, int *shard);
/* The context of an operation whose arguments passed (valid), or NULL
 * with *status: EUNAVAIL while the store closes, EINVAL, ENOMEM. */
op *rs_op_start(rstore *st, int valid, void *cb, void *ud, int *status);
/* read.lua's answer: {epoch, last, floor, more, 6 values per message}. */
int rs_parse_history(rstore *st, const redisReply *rep, raw_history *h);
/* The envelope as a WebSocket frame, and where its data is. NULL if out of
 * memory or it is not an envelope of (channel, seq, id). */
mp_frame *rs_envelope_frame(rstore *st, const char *channel, uint64_t seq, const char *id, const char *env,
                            size_t env_len, uint64_t published_ms, size_t *data_off, size_t *data_len);

/* ---- channel operations (store_redis_chan.c) -------------------------------- */

void rs_publish(mp_store *base, const char *channel, const mp_store_msg *m, mp_store_seq_cb cb, void *ud);
void rs_read(mp_store *base, const char *channel, const char *epoch, uint64_t since, size_t max,
             mp_store_read_cb cb, void *ud);
void rs_flush(mp_store *base, const char *channel, mp_store_done_cb cb, void *ud);

/* ---- cursors (store_redis_cursor.c) ------------------------------------------ */

void rs_cursor_get(mp_store *base, const char *user, const char *device, const char *channel,
                   mp_store_cursor_cb cb, void *ud);
void rs_cursor_advance(mp_store *base, const char *user, const char *device, const char *channel,
                       uint64_t seq, const char *epoch, mp_store_cursor_cb cb, void *ud);
void rs_cursor_delete_device(mp_store *base, const char *user, const char *device, mp_store_done_cb cb,
                             void *ud);

/* ---- watches (store_redis_watch.c) ------------------------------------------- */

wch *rs_find_watch(rstore *st, const char *name);
/* w if (name, id) is still watched as that incarnation, else NULL. */
wch *rs_still(rstore *st, const char *name, uint64_t id);
void rs_free_buffer(bmsg *b);
/* Removes w from the table and frees it; its waiters are appended to *out. */
void rs_drop_watch(rstore *st, wch *w, waiter **out);
void rs_answer_waiters(rstore *st, waiter *list, int status, const char *epoch, uint64_t last);
/* The watch cannot become active: its waiters get status. */
void rs_fail_watch(rstore *st, wch *w, int status);
/* Holds a bus message while the channel catches up. */
void rs_hold(rstore *st, wch *w, bmsg *m, int owned);
/* Delivers one message to the handler; NULL if the handler unwatched. */
wch *rs_deliver(rstore *st, wch *w, const char *epoch, uint64_t seq, const char *id, const char *kinds,
                uint64_t published_ms, const char *env, size_t env_len, int from_history);
wch *rs_reset(rstore *st, wch *w, const char *epoch, uint64_t first_seq, uint64_t last_seq, int reason);
/* A bus message for a LIVE channel. */
wch *rs_take_live(rstore *st, wch *w, bmsg *m, int owned);
void rs_watch(mp_store *base, const char *channel, mp_store_watch_cb cb, void *ud);
void rs_unwatch(mp_store *base, const char *channel);
void rs_set_live_handler(mp_store *base, const mp_store_live_handler *h);
/* mp_redis_events of the store (mp_store_redis_new). */
void rs_on_bus_message(mp_redis *r, int shard, const char *channel, size_t len, const char *payload, size_t plen,
                       void *ud);
void rs_on_subscribed(mp_redis *r, int shard, const char *channel, size_t len, void *ud);
void rs_on_sub_up(mp_redis *r, int shard, void *ud);
void rs_on_sub_down(mp_redis *r, int shard, void *ud);
void rs_on_cmd_up(mp_redis *r, int shard, void *ud);

/* ---- catching up (store_redis_recover.c) --------------------------------------- */

void rs_read_from_last(rstore *st, wch *w);
void rs_start_recovery(rstore *st, wch *w);
/* Reads the channel's position once Redis confirmed the SUBSCRIBE. */
void rs_sync_position(rstore *st, wch *w);
void rs_on_quiet_tick(struct ev_loop *loop, ev_timer *t, int revents);

#endif
