/* store_redis.c — the Redis store (store.h, store_redis.h) over redis.c.
 *
 * Keys. Channel C lives on shard mp_redis_shard_of(C); its keys share the
 * hash tag {C} (the same scripts would run on Redis Cluster):
 *   mp:{C}:m   meta hash: epoch, last seq, generation, floor (redis/lib.lua)
 *   mp:{C}:h   history: a stream, entry id <seq>-0, trimmed to exactly
 *              max_messages (so the floor is exact), entries carrying their
 *              expiry; the key expires max_age after the last append
 *   mp:{C}:p   the bus: pub/sub channel of C's live messages
 * A device's cursors live on the shard of its user:
 *   mp:cur:<len(user)>:{<user>}:<device>  hash channel -> "<epoch> <seq>"
 *   (the length makes every (user, device) pair its own key, whatever
 *   bytes the names hold; the tag keeps a user's devices together)
 * Per shard: mp:gen and mp:run (redis/generation.lua, redis.c).
 *
 * Scripts: the files under redis/, embedded at build time (see
 * redis_scripts.h). The channel scripts publish, read, position and flush
 * each start with redis/lib.lua (sent in front of them), which loads the
 * channel's state
 * and gives it a new epoch when its meta is missing or was made under
 * another generation: Redis lost data since, so positions in the old epoch
 * mean nothing. Every read and write of a channel or cursor is one script,
 * so it is atomic and keeps its order even across a NOSCRIPT (redis.c).
 * Publish: one script takes the seq, builds the envelope (byte for byte
 * envelope.c's), appends and trims, PUBLISHes "m <seq> <epoch> <ms>
 * <kinds> <id> <envelope>" on the bus and answers (seq, epoch).
 *
 * Live delivery. watch(C) SUBSCRIBEs mp:{C}:p (batched per loop
 * iteration); once Redis confirms, the position script gives (epoch, last)
 * and the watch is active. Per watched channel the store keeps the epoch
 * and last seq it delivered; a bus message with
 *   - the next seq: delivered (on_message);
 *   - a seq already delivered: dropped (a duplicate);
 *   - a jump, or another epoch: the channel "recovers": bus messages are
 *     held (at most buffer_max, then dropped and read from history too)
 *     while the history after the last seq is read (read.lua, in pages) and
 *     merged with them in seq order. A seq neither retained nor held was
 *     never stored (store=false, its own ttl): not a loss. If history no
 *     longer reaches back, or the epoch changed: on_reset first, then what
 *     is retained.
 * Pub/sub is at most once; it is made whole by history: a pub/sub
 * connection lost (killed, Redis restarted, or its probe not heard back,
 * redis.c) makes every watched channel of the shard resubscribe and, once
 * confirmed, recover from its last seq; a channel silent for
 * quiet_check_ms has its position read (position.lua), so a lost LAST
 * message is found too. What stays at most once: a store=false message
 * published while this node could not hear the bus.
 *
 * Failures. A channel operation needs the shard's generation, so it fails
 * with MP_STORE_EUNAVAIL while the shard's command connection is not up
 * (from the loop, via mp_redis_fail); a publish that timed out may have
 * been stored (store.h). A watch made while the shard is down fails; an
 * active watch outlives any outage (it recovers when the shard is back).
 *
 * Expiry. Entries carry their expiry; reads skip expired ones and drop
 * those at the head (an age-limited one moves the floor). Publishes do not
 * look for expired entries (less work per message): those go with the
 * count trim, whose floor rule treats them alike, and the whole history
 * key expires max_age after its last append. Meta lives max(max_age,
 * channel_idle_ms) after its last use (no expiry while a history without
 * an age limit exists); cursors cursor_ttl_ms after theirs, per device
 * (the memory store's is per cursor).
 *
 * Shards. Channels and users map to shards by jump consistent hash
 * (redis.h). Adding a shard: append it to the list on every node at once
 * (stop all nodes, change the config, start them: a node with the old list
 * would publish a moved channel on the old shard). About 1/n of the
 * channels then live on the new shard: they start a new epoch there
 * (their clients get a reset; the old keys expire, or delete mp:{C}:* on
 * the old shard), and 1/n
 * of the devices start without cursors (at least once: they get what is
 * retained again). Never reorder or remove shards.
 *
 * Limits. Reads of a page hold its messages in one reply; recovery reads
 * 256 at a time, and holds at most buffer_max bus messages per channel
 * meanwhile (then reads again). A failover to a replica that missed
 * acknowledged writes is only detected when the shard is not durable (a
 * run_id change then means a new generation); with AOF always on a replica
 * that lagged, those writes are lost silently (Redis replication is
 * asynchronous). The Redis memory is bounded by the policies (count and
 * age per channel, meta and cursor expiry) and by maxmemory (use
 * noeviction); the memory store's max_channels / max_bytes / max_cursors
 * do not apply. Stats are this node's (mp_store_redis_get_stats), not
 * Redis's content. A live handler may call the store; mp_store_free may
 * not be called from a callback.
 */
#include "store_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "envelope.h"
#include "log.h"
#include "redis_scripts.h"

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

static const mp_store_ops redis_ops;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t now_ms(rstore *st) { return mp_store_clock_ms(st->clock_ms, st->clock_ud); }

static size_t name_len(const char *s)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, MP_STORE_NAME_MAX + 1);
    return n > MP_STORE_NAME_MAX ? 0 : n;
}

static int channel_ok(const char *channel)
{
    size_t n = name_len(channel);
    return n && mp_envelope_safe(channel, n);
}

/* The one place channel keys are built: kind 'm' meta, 'h' history, 'p' bus. */
static size_t chan_key(char out[KEY_MAX], const char *channel, char kind)
{
    return (size_t)snprintf(out, KEY_MAX, "mp:{%s}:%c", channel, kind);
}

/* The channel named by a bus channel "mp:{C}:p" (len bytes), into out. */
static int channel_of_bus(const char *bus, size_t len, char out[MP_STORE_NAME_MAX + 1])
{
    if (len < 8 || len - 7 > MP_STORE_NAME_MAX || memcmp(bus, "mp:{", 4) != 0 || memcmp(bus + len - 3, "}:p", 3) != 0)
        return -1;
    memcpy(out, bus + 4, len - 7);
    out[len - 7] = '\0';
    return 0;
}

/* The one place cursor keys are built. 0 if a name is empty or too long. */
static size_t cursor_key(char out[KEY_MAX], const char *user, const char *device)
{
    size_t ul = name_len(user), dl = name_len(device);
    if (!ul || !dl)
        return 0;
    return (size_t)snprintf(out, KEY_MAX, "mp:cur:%zu:{%s}:%s", ul, user, device);
}

static int u64_of(const redisReply *r, uint64_t *out)
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

static int str_of(const redisReply *r, char *out, size_t cap)
{
    if (r->type != REDIS_REPLY_STRING || r->len >= cap)
        return -1;
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return 0;
}

/* A reply that is not what the script returns: logged once per reply. */
static int script_failed(rstore *st, const char *what, const redisReply *reply)
{
    if (reply) {
        st->stats.script_errors++;
        mp_warn("redis script failed", "script=%s error=\"%s\"", what,
                mp_log_q(reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply"));
    }
    return MP_STORE_EUNAVAIL;
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

static void arg(args *a, const char *s, size_t len)
{
    a->v[a->n] = s;
    a->l[a->n++] = len;
}

static void arg_s(args *a, const char *s) { arg(a, s, strlen(s)); }

static void arg_u(args *a, uint64_t v)
{
    char *b = a->nums[a->nnums++];
    arg(a, b, (size_t)snprintf(b, sizeof a->nums[0], "%llu", (unsigned long long)v));
}

/* The keys and the six arguments every channel script starts with
 * (redis/lib.lua). -1 if the shard's generation is not known (not up). */
static int chan_args(rstore *st, args *a, const char *channel, int *shard)
{
    memset(a, 0, offsetof(args, keys));
    a->nnums = 0;
    *shard = mp_redis_shard_of(st->r, channel, strlen(channel));
    const char *gen = mp_redis_generation(st->r, *shard);
    if (!*gen)
        return -1;
    arg(a, a->keys[0], chan_key(a->keys[0], channel, 'm'));
    arg(a, a->keys[1], chan_key(a->keys[1], channel, 'h'));
    arg_s(a, gen);
    snprintf(a->cand, sizeof a->cand, "%s-%llx", mp_redis_node_id(st->r), (unsigned long long)++st->epoch_no);
    arg_s(a, a->cand);
    arg_u(a, now_ms(st));
    const mp_store_policy *p = mp_store_policies_match(&st->policies, channel);
    arg_u(a, p->max_messages);
    arg_u(a, p->max_age_ms);
    arg_u(a, st->idle_ms);
    return 0;
}

static void eval(rstore *st, int shard, const mp_redis_script *s, args *a, int nkeys, mp_redis_reply_cb cb,
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

/* read.lua's answer: {epoch, last, floor, more, 6 values per message}. */
static int parse_history(rstore *st, const redisReply *rep, raw_history *h)
{
    memset(h, 0, sizeof *h);
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 4 || (rep->elements - 4) % 6 != 0)
        return -1;
    uint64_t more;
    if (str_of(rep->element[0], h->epoch, sizeof h->epoch) < 0 || u64_of(rep->element[1], &h->last) < 0 ||
        u64_of(rep->element[2], &h->floor) < 0 || u64_of(rep->element[3], &more) < 0)
        return -1;
    h->more = more != 0;
    h->n = (rep->elements - 4) / 6;
    if (h->n && !(h->recs = calloc(h->n, sizeof *h->recs)))
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++) {
        redisReply **e = rep->element + 4 + 6 * i;
        rec *r = &h->recs[k];
        if (u64_of(e[0], &r->seq) == 0 && r->seq > h->top)
            h->top = r->seq;
        if (u64_of(e[0], &r->seq) < 0 || u64_of(e[1], &r->published_ms) < 0 || u64_of(e[2], &r->expires_ms) < 0 ||
            str_of(e[3], r->id, sizeof r->id) < 0 || str_of(e[4], r->kinds, sizeof r->kinds) < 0 ||
            e[5]->type != REDIS_REPLY_STRING) {
            st->stats.bad_messages++;
            continue;   /* an entry this version cannot read: skipped, not fatal */
        }
        r->env = e[5]->str;
        r->env_len = e[5]->len;
        if (!r->expires_ms)
            r->expires_ms = UINT64_MAX;
        k++;
    }
    h->n = k;
    return 0;
}

/* The envelope as a WebSocket frame, and where its data is. NULL if out of
 * memory or it is not an envelope of (channel, seq, id). */
static mp_frame *envelope_frame(rstore *st, const char *channel, uint64_t seq, const char *id, const char *env,
                                size_t env_len, uint64_t published_ms, size_t *data_off, size_t *data_len)
{
    const char *data;
    if (mp_envelope_split(env, env_len, channel, seq, id, &data, data_len) < 0) {
        st->stats.bad_messages++;
        return NULL;
    }
    *data_off = (size_t)(data - env);
    mp_frame *f = mp_ws_frame(MP_WS_TEXT, env, env_len);
    if (f)
        f->published = (double)published_ms / 1000.0;
    return f;
}

/* ---- operations: publish -------------------------------------------------- */

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

/* The context of an operation whose arguments passed (valid), or NULL
 * with *status: EUNAVAIL while the store closes, EINVAL, ENOMEM. */
static op *op_start(rstore *st, int valid, void *cb, void *ud, int *status)
{
    op *o = NULL;
    *status = st->closing ? MP_STORE_EUNAVAIL : !valid ? MP_STORE_EINVAL : MP_STORE_ENOMEM;
    if (!st->closing && valid && (o = calloc(1, sizeof *o))) {
        o->st = st;
        o->cb = cb;
        o->ud = ud;
    }
    return o;
}

static int epoch_ok(const char *epoch) { return !epoch || strnlen(epoch, MP_STORE_EPOCH_MAX) < MP_STORE_EPOCH_MAX; }

static void published(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_seq_cb cb = (mp_store_seq_cb)o->cb;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && u64_of(rep->element[0], &seq) == 0 &&
        str_of(rep->element[1], epoch, sizeof epoch) == 0) {
        if (cb) cb(&o->st->base, MP_STORE_OK, seq, epoch, o->ud);
    } else {
        int status = script_failed(o->st, "publish", rep);
        if (cb) cb(&o->st->base, status, 0, NULL, o->ud);
    }
    free(o);
}

static void rs_publish(mp_store *base, const char *channel, const mp_store_msg *m, mp_store_seq_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    int status;
    op *o = op_start(st, mp_store_msg_valid(channel, m), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, 0, NULL, ud);
        return;
    }
    args a;
    int shard;
    if (chan_args(st, &a, channel, &shard) < 0) {
        mp_redis_fail(st->r, published, o);
        return;
    }
    char bus[KEY_MAX];
    arg_s(&a, channel);
    arg_s(&a, m->id);
    arg(&a, m->data, m->data_len);
    arg_u(&a, m->ttl_ms);
    arg_s(&a, m->store ? "1" : "0");
    arg_s(&a, m->kinds ? m->kinds : "");
    arg_u(&a, m->published_ms ? m->published_ms : now_ms(st));
    arg(&a, bus, chan_key(bus, channel, 'p'));
    eval(st, shard, st->s_publish, &a, 2, published, o);
}

/* ---- operations: read ---------------------------------------------------- */

static void got_history(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    rstore *st = o->st;
    mp_store_read_cb cb = (mp_store_read_cb)o->cb;
    raw_history raw;
    if (parse_history(st, rep, &raw) < 0) {
        int status = script_failed(st, "read", rep);
        if (cb) cb(&st->base, status, NULL, o->ud);
        free(raw.recs);
        free(o);
        return;
    }
    mp_store_history h = { .epoch = raw.epoch, .first_seq = raw.floor + 1, .last_seq = raw.last, .more = raw.more };
    if (!raw.epoch[0])
        h.first_seq = 1;
    uint64_t after;
    h.since_state = mp_store_since_state(&h, o->epoch, o->since, &after);
    mp_store_item *items = raw.n ? calloc(raw.n, sizeof *items) : NULL;
    int status = raw.n && !items ? MP_STORE_ENOMEM : MP_STORE_OK;
    for (size_t i = 0; status == MP_STORE_OK && i < raw.n; i++) {
        rec *rc = &raw.recs[i];
        size_t off, dlen;
        mp_frame *f = envelope_frame(st, o->channel, rc->seq, rc->id, rc->env, rc->env_len, rc->published_ms,
                                     &off, &dlen);
        if (!f)
            continue;   /* unreadable entry: counted, skipped */
        mp_store_item *it = &items[h.count++];
        it->seq = rc->seq;
        it->published_ms = rc->published_ms;
        it->expires_ms = rc->expires_ms;
        it->frame = f;
        memcpy(it->id, rc->id, sizeof it->id);
    }
    h.items = items;
    if (cb) cb(&st->base, status, status == MP_STORE_OK ? &h : NULL, o->ud);
    for (size_t i = 0; i < h.count; i++)
        mp_frame_unref(items[i].frame);
    free(items);
    free(raw.recs);
    free(o);
}

static void rs_read(mp_store *base, const char *channel, const char *epoch, uint64_t since, size_t max,
                    mp_store_read_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    int status;
    op *o = op_start(st, channel_ok(channel) && epoch_ok(epoch), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    snprintf(o->channel, sizeof o->channel, "%s", channel);
    snprintf(o->epoch, sizeof o->epoch, "%s", epoch ? epoch : "");
    o->since = since;
    args a;
    int shard;
    if (chan_args(st, &a, channel, &shard) < 0) {
        mp_redis_fail(st->r, got_history, o);
        return;
    }
    arg_s(&a, o->epoch);
    arg_u(&a, since);
    arg_u(&a, max > 1000000 ? 1000000 : max);
    eval(st, shard, st->s_read, &a, 2, got_history, o);
}

/* ---- operations: flush ----------------------------------------------------- */

static void flushed_one(mp_redis *r, const redisReply *rep, void *ud);

/* A flush of every channel: SCAN each shard for meta keys, flush each. */
static void flush_done_part(op *o, int status)
{
    if (status != MP_STORE_OK && o->status == MP_STORE_OK)
        o->status = status;
    if (--o->pending == 0) {
        mp_store_done_cb cb = (mp_store_done_cb)o->cb;
        if (cb) cb(&o->st->base, o->status, o->ud);
        free(o);
    }
}

static int flush_channel(rstore *st, const char *channel, mp_redis_reply_cb done, void *ctx)
{
    args a;
    int shard;
    if (chan_args(st, &a, channel, &shard) < 0)
        return -1;
    char bus[KEY_MAX];
    arg(&a, bus, chan_key(bus, channel, 'p'));
    eval(st, shard, st->s_flush, &a, 2, done, ctx);
    return 0;
}

typedef struct scan_part {
    op *all;
    int shard;
} scan_part;

static void scanned(mp_redis *r, const redisReply *rep, void *ud);

static void scan_next(rstore *st, scan_part *p, const char *cursor, size_t len)
{
    const char *a[6] = { "SCAN", cursor, "MATCH", "mp:{*}:m", "COUNT", "500" };
    size_t l[6] = { 4, len, 5, 8, 5, 3 };
    mp_redis_command(st->r, p->shard, scanned, p, 6, a, l);
}

static void flushed_in_scan(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *all = ud;
    int ok = rep && rep->type == REDIS_REPLY_INTEGER;
    flush_done_part(all, ok ? MP_STORE_OK : script_failed(all->st, "flush", rep));
}

static void scanned(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    scan_part *p = ud;
    op *all = p->all;
    rstore *st = all->st;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_ARRAY) {
        free(p);
        flush_done_part(all, script_failed(st, "flush (SCAN)", rep));
        return;
    }
    const redisReply *keys = rep->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
        char channel[MP_STORE_NAME_MAX + 1];
        const redisReply *k = keys->element[i];
        /* "mp:{C}:m" -> C, read as the bus name "mp:{C}:p" would be */
        if (k->type != REDIS_REPLY_STRING || k->len < 8 || k->str[k->len - 1] != 'm')
            continue;
        char bus[KEY_MAX];
        if (k->len >= KEY_MAX)
            continue;
        memcpy(bus, k->str, k->len - 1);
        bus[k->len - 1] = 'p';
        if (channel_of_bus(bus, k->len, channel) < 0 || !channel_ok(channel))
            continue;
        all->pending++;
        if (flush_channel(st, channel, flushed_in_scan, all) < 0)
            flush_done_part(all, MP_STORE_EUNAVAIL);
    }
    const redisReply *cur = rep->element[0];
    if (cur->len == 1 && cur->str[0] == '0') {
        free(p);
        flush_done_part(all, MP_STORE_OK);
    } else {
        scan_next(st, p, cur->str, cur->len);
    }
}

static void flushed_one(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_done_cb cb = (mp_store_done_cb)o->cb;
    int status = rep && rep->type == REDIS_REPLY_INTEGER ? (rep->integer ? MP_STORE_OK : MP_STORE_ENOENT)
                                                         : script_failed(o->st, "flush", rep);
    if (cb) cb(&o->st->base, status, o->ud);
    free(o);
}

static void rs_flush(mp_store *base, const char *channel, mp_store_done_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    int status;
    op *o = op_start(st, !channel || channel_ok(channel), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, ud);
        return;
    }
    if (channel) {
        if (flush_channel(st, channel, flushed_one, o) < 0)
            mp_redis_fail(st->r, flushed_one, o);
        return;
    }
    o->status = MP_STORE_OK;
    o->pending = 1;   /* held until every shard's scan was sent */
    for (int i = 0; i < mp_redis_nshards(st->r); i++) {
        scan_part *p = calloc(1, sizeof *p);
        if (!p) {
            o->status = MP_STORE_ENOMEM;
            continue;
        }
        p->all = o;
        p->shard = i;
        o->pending++;
        scan_next(st, p, "0", 1);
    }
    flush_done_part(o, MP_STORE_OK);
}

/* ---- operations: cursors --------------------------------------------------- */

static int user_shard(rstore *st, const char *user) { return mp_redis_shard_of(st->r, user, strlen(user)); }

static void got_cursor(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_cursor_cb cb = (mp_store_cursor_cb)o->cb;
    char epoch[MP_STORE_EPOCH_MAX];
    unsigned long long seq;
    int n = 0;
    if (rep && rep->type == REDIS_REPLY_NIL) {
        if (cb) cb(&o->st->base, MP_STORE_ENOENT, NULL, o->ud);
    } else if (rep && rep->type == REDIS_REPLY_STRING &&
               sscanf(rep->str, "%31s %llu%n", epoch, &seq, &n) == 2 && (size_t)n == rep->len) {
        mp_store_cursor c = { seq, epoch };
        if (cb) cb(&o->st->base, MP_STORE_OK, &c, o->ud);
    } else {
        int status = script_failed(o->st, "cursor_get", rep);
        if (cb) cb(&o->st->base, status, NULL, o->ud);
    }
    free(o);
}

static void rs_cursor_get(mp_store *base, const char *user, const char *device, const char *channel,
                          mp_store_cursor_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device);
    int status;
    op *o = op_start(st, klen && channel_ok(channel), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    char ttl[24];
    const char *a[3] = { key, channel, ttl };
    size_t l[3] = { klen, strlen(channel),
                    (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)st->cursor_ttl_ms) };
    mp_redis_eval(st->r, user_shard(st, user), st->s_cget, got_cursor, o, 1, 3, a, l);
}

static void cursor_moved(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_cursor_cb cb = (mp_store_cursor_cb)o->cb;
    char status_s[8], epoch[MP_STORE_EPOCH_MAX];
    uint64_t seq;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        str_of(rep->element[0], status_s, sizeof status_s) < 0 || str_of(rep->element[1], epoch, sizeof epoch) < 0 ||
        u64_of(rep->element[2], &seq) < 0) {
        int status = script_failed(o->st, "cursor_advance", rep);
        if (cb) cb(&o->st->base, status, NULL, o->ud);
        free(o);
        return;
    }
    int status = strcmp(status_s, "OK") == 0      ? MP_STORE_OK
                 : strcmp(status_s, "STALE") == 0 ? MP_STORE_STALE
                 : strcmp(status_s, "EEPOCH") == 0 ? MP_STORE_EEPOCH
                                                   : MP_STORE_ERANGE;
    mp_store_cursor c = { seq, epoch };
    if (cb) cb(&o->st->base, status, status >= 0 ? &c : NULL, o->ud);
    free(o);
}

/* Step 1 answered: the channel's position, then the cursor on the user's shard. */
static void cursor_position(mp_redis *r, const redisReply *rep, void *ud)
{
    op *o = ud;
    rstore *st = o->st;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        str_of(rep->element[0], epoch, sizeof epoch) < 0 || u64_of(rep->element[1], &last) < 0) {
        cursor_moved(r, rep && rep->type == REDIS_REPLY_ERROR ? rep : NULL, o);
        return;
    }
    char key[KEY_MAX], lastb[24], seqb[24], ttl[24];
    size_t klen = cursor_key(key, o->user, o->device);
    const char *a[7] = { key, o->channel, epoch, lastb, seqb, o->epoch, ttl };
    size_t l[7] = { klen, strlen(o->channel), strlen(epoch),
                    (size_t)snprintf(lastb, sizeof lastb, "%llu", (unsigned long long)last),
                    (size_t)snprintf(seqb, sizeof seqb, "%llu", (unsigned long long)o->seq), strlen(o->epoch),
                    (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)st->cursor_ttl_ms) };
    mp_redis_eval(st->r, user_shard(st, o->user), st->s_cadv, cursor_moved, o, 1, 7, a, l);
}

static void rs_cursor_advance(mp_store *base, const char *user, const char *device, const char *channel,
                              uint64_t seq, const char *epoch, mp_store_cursor_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    char key[KEY_MAX];
    int status;
    op *o = op_start(st, cursor_key(key, user, device) && channel_ok(channel) && epoch_ok(epoch), (void *)cb, ud,
                     &status);
    if (!o) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    snprintf(o->user, sizeof o->user, "%s", user);
    snprintf(o->device, sizeof o->device, "%s", device);
    snprintf(o->channel, sizeof o->channel, "%s", channel);
    snprintf(o->epoch, sizeof o->epoch, "%s", epoch ? epoch : "");
    o->seq = seq;
    args a;
    int shard;
    if (chan_args(st, &a, channel, &shard) < 0) {
        mp_redis_fail(st->r, cursor_position, o);
        return;
    }
    arg_s(&a, seq == 0 ? "1" : "0");   /* seq 0 records a starting position: the channel needs an epoch */
    eval(st, shard, st->s_position, &a, 2, cursor_position, o);
}

static void device_deleted(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_done_cb cb = (mp_store_done_cb)o->cb;
    int status = rep && rep->type == REDIS_REPLY_INTEGER ? MP_STORE_OK : script_failed(o->st, "cursor_delete", rep);
    if (cb) cb(&o->st->base, status, o->ud);
    free(o);
}

static void rs_cursor_delete_device(mp_store *base, const char *user, const char *device, mp_store_done_cb cb,
                                    void *ud)
{
    rstore *st = (rstore *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device);
    int status;
    op *o = op_start(st, klen != 0, (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, ud);
        return;
    }
    const char *a[1] = { key };
    mp_redis_eval(st->r, user_shard(st, user), st->s_cdel, device_deleted, o, 1, 1, a, &klen);
}

/* ---- watches: bookkeeping ---------------------------------------------------- */

static wch *find_watch(rstore *st, const char *name)
{
    wch *w = NULL;
    HASH_FIND_STR(st->watches, name, w);
    return w;
}

/* w if (name, id) is still watched as that incarnation, else NULL. */
static wch *still(rstore *st, const char *name, uint64_t id)
{
    wch *w = find_watch(st, name);
    return w && w->id == id && !w->unwanted ? w : NULL;
}

static void free_buffer(bmsg *b)
{
    while (b) {
        bmsg *next = b->next;
        free(b);
        b = next;
    }
}

static void add_waiter(wch *w, waiter *wt)
{
    wt->next = NULL;
    if (w->waiters_tail) w->waiters_tail->next = wt; else w->waiters = wt;
    w->waiters_tail = wt;
}

/* Removes w from the table and frees it; its waiters are appended to *out
 * (called by the caller once nothing refers to the table any more). */
static void drop_watch(rstore *st, wch *w, waiter **out)
{
    if (w->waiters) {
        w->waiters_tail->next = *out;
        *out = w->waiters;
    }
    HASH_DEL(st->watches, w);
    free_buffer(w->bhead);
    free(w);
    st->stats.watched--;
}

static void answer_waiters(rstore *st, waiter *list, int status, const char *epoch, uint64_t last)
{
    while (list) {
        waiter *next = list->next;
        if (list->cb)
            list->cb(&st->base, status, status == MP_STORE_OK ? epoch : NULL, last, list->ud);
        free(list);
        list = next;
    }
}

/* Unsubscribes w's bus channel if its SUBSCRIBE went on the current
 * pub/sub connection (only then does Redis know it). */
static void unsubscribe(rstore *st, wch *w)
{
    if (mp_redis_sub_up(st->r, w->shard) && w->sub_serial == mp_redis_sub_serial(st->r, w->shard)) {
        char bus[KEY_MAX];
        mp_redis_unsubscribe(st->r, w->shard, bus, chan_key(bus, w->name, 'p'));
    }
}

/* The watch cannot become active: its waiters get status. */
static void fail_watch(rstore *st, wch *w, int status)
{
    waiter *list = NULL;
    unsubscribe(st, w);
    drop_watch(st, w, &list);
    answer_waiters(st, list, status, NULL, 0);
}

/* Holds a bus message while the channel catches up (copying it unless
 * it is already a held one). Past buffer_max it is dropped: the read
 * after this one finds it in history. */
static void hold(rstore *st, wch *w, bmsg *m, int owned)
{
    if (w->nbuf >= st->buffer_max) {
        st->stats.overflows++;
        w->overflow = 1;
        if (owned)
            free(m);
        return;
    }
    bmsg *b = m;
    if (!owned) {
        if (!(b = malloc(sizeof *b + m->env_len))) {
            w->overflow = 1;
            return;
        }
        *b = *m;
        memcpy(b->data, m->env, m->env_len);
        b->env = b->data;
    }
    b->next = NULL;
    if (w->btail) w->btail->next = b; else w->bhead = b;
    w->btail = b;
    w->nbuf++;
}

/* ---- watches: delivery ---------------------------------------------------------- */

/* Delivers one message to the handler, w's position moving first. Returns
 * w, or NULL if the handler unwatched it. */
static wch *deliver(rstore *st, wch *w, const char *epoch, uint64_t seq, const char *id, const char *kinds,
                    uint64_t published_ms, const char *env, size_t env_len, int from_history)
{
    char name[MP_STORE_NAME_MAX + 1], ep[MP_STORE_EPOCH_MAX];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    snprintf(ep, sizeof ep, "%s", epoch);
    memcpy(w->epoch, ep, sizeof w->epoch);
    w->last = seq;
    size_t off, dlen;
    mp_frame *f = envelope_frame(st, name, seq, id, env, env_len, published_ms, &off, &dlen);
    if (!f) {
        mp_warn("unreadable message skipped", "channel=%s seq=%llu", name, (unsigned long long)seq);
        return w;
    }
    st->stats.delivered++;
    st->stats.recovered += from_history != 0;
    if (st->live.on_message) {
        size_t plen;
        const char *payload = (const char *)mp_ws_frame_payload(f, &plen);
        mp_store_live m = { name, seq, ep, id, kinds, published_ms, f, payload + off, dlen };
        st->live.on_message(&st->base, &m, st->live.ud);
    }
    mp_frame_unref(f);
    return still(st, name, wid);
}

static wch *reset(rstore *st, wch *w, const char *epoch, uint64_t first_seq, uint64_t last_seq, int reason)
{
    char name[MP_STORE_NAME_MAX + 1], ep[MP_STORE_EPOCH_MAX];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    snprintf(ep, sizeof ep, "%s", epoch);
    memcpy(w->epoch, ep, sizeof w->epoch);
    w->last = first_seq - 1;
    st->stats.resets++;
    if (st->live.on_reset)
        st->live.on_reset(&st->base, name, ep, first_seq, last_seq, reason, st->live.ud);
    return still(st, name, wid);
}

static void start_recovery(rstore *st, wch *w);

/* A bus message for a LIVE channel (see the top). m is a held message
 * (owned: moved or freed here) or one parsed in place (copied if held). */
static wch *take_live(rstore *st, wch *w, bmsg *m, int owned)
{
    if (m->kind == 'r') {
        /* Flushed: its epoch is new unless a recovery already saw it. */
        if (strcmp(m->epoch, w->epoch) != 0)
            start_recovery(st, w);
        if (owned)
            free(m);
        return w;
    }
    int same = strcmp(m->epoch, w->epoch) == 0;
    int unknown = !w->epoch[0] && w->last == 0;   /* no state at watch: its first epoch is no reset */
    if (same && m->seq <= w->last) {
        st->stats.duplicates++;
        if (owned)
            free(m);
        return w;
    }
    if ((same || unknown) && m->seq == w->last + 1) {
        w = deliver(st, w, m->epoch, m->seq, m->id, m->kinds, m->published_ms, m->env, m->env_len, 0);
        if (owned)
            free(m);
        return w;
    }
    hold(st, w, m, owned);
    start_recovery(st, w);
    return w;
}

/* ---- watches: reads ---------------------------------------------------------------- */

typedef struct wop {
    rstore *st;
    uint64_t id, round;
    char name[MP_STORE_NAME_MAX + 1];
} wop;

static wop *wop_new(rstore *st, wch *w)
{
    wop *o = malloc(sizeof *o);
    if (o) {
        o->st = st;
        o->id = w->id;
        o->round = w->round;
        snprintf(o->name, sizeof o->name, "%s", w->name);
    }
    return o;
}

/* The watch an answer is for, if it still waits for it (same incarnation,
 * same round, in state); o is freed either way. */
static wch *answer_for(wop *o, int state)
{
    wch *w = still(o->st, o->name, o->id);
    if (w && (w->round != o->round || w->state != state))
        w = NULL;
    free(o);
    if (w)
        w->reading = 0;
    return w;
}

/* Goes through what was held while w caught up, as if it came now. */
static void replay_held(rstore *st, wch *w)
{
    char name[MP_STORE_NAME_MAX + 1];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    bmsg *queue = w->bhead;
    w->bhead = w->btail = NULL;
    w->nbuf = 0;
    while (queue) {
        bmsg *m = queue;
        queue = m->next;
        if (!(w = still(st, name, wid)))
            free(m);
        else if (w->state == W_LIVE)
            take_live(st, w, m, 1);
        else
            hold(st, w, m, 1);
    }
}

static void recovered(mp_redis *r, const redisReply *rep, void *ud);

static void read_from_last(rstore *st, wch *w)
{
    args a;
    int shard;
    wop *o;
    if (!mp_redis_cmd_up(st->r, w->shard) || chan_args(st, &a, w->name, &shard) < 0 || !(o = wop_new(st, w)))
        return;   /* sent again when the shard is back (cmd_up) or at the next quiet tick */
    w->reading = 1;
    w->read_mark = w->arrivals;
    st->stats.recoveries++;
    arg_s(&a, w->epoch);
    arg_u(&a, w->last);
    arg_u(&a, RECOVER_BATCH);
    eval(st, shard, st->s_read, &a, 2, recovered, o);
}

static void start_recovery(rstore *st, wch *w)
{
    w->state = W_RECOVERING;
    w->round++;
    w->reading = 0;
    read_from_last(st, w);
}

/* Delivers held messages of epoch with seq <= upto (in order) and drops
 * those already delivered; returns the rest. *wp becomes NULL if the
 * handler unwatched. */
static bmsg *deliver_held(rstore *st, wch **wp, bmsg *held, const char *epoch, uint64_t upto, uint64_t mark,
                          bmsg **rest_tail)
{
    bmsg *rest = NULL;
    *rest_tail = NULL;
    while (held) {
        bmsg *m = held;
        held = m->next;
        m->next = NULL;
        if (!*wp) {
            free(m);
            continue;
        }
        int same = m->kind == 'm' && strcmp(m->epoch, epoch) == 0;
        if (same && m->seq <= (*wp)->last) {
            st->stats.duplicates++;
            free(m);
        } else if (same && m->seq <= upto) {
            *wp = deliver(st, *wp, m->epoch, m->seq, m->id, m->kinds, m->published_ms, m->env, m->env_len, 0);
            free(m);
        } else if (!same && m->arrival <= mark) {
            free(m);   /* older than the read: its epoch is past */
        } else {
            if (*rest_tail) (*rest_tail)->next = m; else rest = m;
            *rest_tail = m;
        }
    }
    return rest;
}

static void recovered(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    wop *o = ud;
    rstore *st = o->st;
    wch *w = answer_for(o, W_RECOVERING);
    if (!w)
        return;
    raw_history h;
    if (parse_history(st, rep, &h) < 0) {
        if (rep)
            script_failed(st, "read", rep);
        free(h.recs);
        return;   /* tried again at cmd_up or the next quiet tick */
    }
    mp_store_history pos = { .epoch = h.epoch, .first_seq = h.floor + 1, .last_seq = h.last };
    uint64_t after;
    int state = mp_store_since_state(&pos, w->epoch[0] ? w->epoch : NULL, w->last, &after);
    if (state != MP_STORE_SINCE_OK) {
        uint64_t first = h.epoch[0] ? h.floor + 1 : 1;
        w = reset(st, w, h.epoch, first, h.last, state);
        if (w && state == MP_STORE_SINCE_AHEAD) {
            free(h.recs);   /* the read started past what is retained: read again from the floor */
            start_recovery(st, w);
            return;
        }
    }
    /* Merge what history retains with what the bus brought meanwhile. */
    bmsg *held = w ? w->bhead : NULL, *rest = NULL, *rest_tail = NULL;
    int overflow = w ? w->overflow : 0;
    if (w) {
        w->bhead = w->btail = NULL;
        w->nbuf = 0;
        w->overflow = 0;
    }
    uint64_t mark = w ? w->read_mark : 0;
    for (size_t i = 0; w && i < h.n; i++) {
        rec *rc = &h.recs[i];
        bmsg *tail;
        held = deliver_held(st, &w, held, h.epoch, rc->seq - 1, mark, &tail);
        if (w && rc->seq > w->last)
            w = deliver(st, w, h.epoch, rc->seq, rc->id, rc->kinds, rc->published_ms, rc->env, rc->env_len, 1);
    }
    uint64_t upto = h.more ? h.top : h.last;
    rest = deliver_held(st, &w, held, h.epoch, upto, mark, &rest_tail);
    free(h.recs);
    if (!w) {
        free_buffer(rest);
        return;
    }
    /* Seqs up to there that were neither retained nor heard were never
     * stored (or could not be read: counted in bad_messages). */
    if (w->last < upto)
        w->last = upto;
    memcpy(w->epoch, h.epoch, sizeof w->epoch);   /* a first epoch seen by a watch of an unknown channel */
    /* What is left waits its turn: held again in front of anything newer. */
    if (rest) {
        rest_tail->next = w->bhead;
        if (!w->bhead)
            w->btail = rest_tail;
        w->bhead = rest;
        for (bmsg *b = rest; b; b = b->next)
            w->nbuf++;
    }
    w->overflow |= overflow;
    w->heard = ev_now(st->loop);
    if (h.more) {
        read_from_last(st, w);
        return;
    }
    w->state = W_LIVE;
    char name[MP_STORE_NAME_MAX + 1];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    replay_held(st, w);
    if ((w = still(st, name, wid)) && w->state == W_LIVE && w->overflow) {
        w->overflow = 0;
        start_recovery(st, w);
    }
}

static void synced(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    wop *o = ud;
    rstore *st = o->st;
    wch *w = answer_for(o, W_SYNCING);
    if (!w)
        return;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        str_of(rep->element[0], epoch, sizeof epoch) < 0 || u64_of(rep->element[1], &last) < 0) {
        fail_watch(st, w, script_failed(st, "position", rep));
        return;
    }
    memcpy(w->epoch, epoch, sizeof w->epoch);
    w->last = last;
    w->synced = 1;
    w->state = W_LIVE;
    w->heard = ev_now(st->loop);
    char name[MP_STORE_NAME_MAX + 1];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    waiter *list = w->waiters;
    w->waiters = w->waiters_tail = NULL;
    answer_waiters(st, list, MP_STORE_OK, epoch, last);
    if ((w = still(st, name, wid)))
        replay_held(st, w);
}

static void sync_position(rstore *st, wch *w)
{
    args a;
    int shard;
    wop *o;
    w->state = W_SYNCING;
    w->round++;
    if (chan_args(st, &a, w->name, &shard) < 0 || !(o = wop_new(st, w))) {
        fail_watch(st, w, MP_STORE_EUNAVAIL);
        return;
    }
    w->reading = 1;
    arg_s(&a, "0");
    eval(st, shard, st->s_position, &a, 2, synced, o);
}

/* ---- watches: quiet channels ------------------------------------------------------- */

static void quiet_checked(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    wop *o = ud;
    rstore *st = o->st;
    wch *w = still(st, o->name, o->id);
    free(o);
    if (!w)
        return;
    w->checking = 0;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
    if (w->state != W_LIVE || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        str_of(rep->element[0], epoch, sizeof epoch) < 0 || u64_of(rep->element[1], &last) < 0)
        return;
    if (strcmp(epoch, w->epoch) != 0 || last > w->last)
        start_recovery(st, w);
}

static void on_quiet_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    rstore *st = t->data;
    ev_tstamp now = ev_now(loop), quiet = (double)st->quiet_ms / 1000.0;
    for (wch *w = st->watches; w; w = w->hh.next) {
        if (w->unwanted || !mp_redis_cmd_up(st->r, w->shard))
            continue;
        if (w->state == W_RECOVERING && !w->reading) {
            read_from_last(st, w);
        } else if (w->state == W_LIVE && !w->checking && now - w->heard >= quiet) {
            args a;
            int shard;
            wop *o;
            if (chan_args(st, &a, w->name, &shard) < 0 || !(o = wop_new(st, w)))
                continue;
            w->checking = 1;
            w->heard = now;   /* the next check comes a quiet period later */
            st->stats.quiet_checks++;
            arg_s(&a, "0");
            eval(st, shard, st->s_position, &a, 2, quiet_checked, o);
        }
    }
}

/* ---- watches: bus events from redis.c ---------------------------------------------- */

/* "m <seq> <epoch> <ms> <kinds|-> <id> <envelope>" or "r <last> <epoch>". */
static int parse_bus(const char *p, size_t len, bmsg *m)
{
    const char *end = p + len;
    char tok[MP_STORE_KINDS_MAX];
    int field = 0;
    memset(m, 0, sizeof *m);
    if (len < 2 || (p[0] != 'm' && p[0] != 'r') || p[1] != ' ')
        return -1;
    m->kind = p[0];
    p += 2;
    int fields = m->kind == 'm' ? 5 : 2;
    while (field < fields) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp && field == fields - 1 && m->kind == 'r')
            sp = end;
        if (!sp || (size_t)(sp - p) >= sizeof tok || sp == p)
            return -1;
        memcpy(tok, p, (size_t)(sp - p));
        tok[sp - p] = '\0';
        char *e;
        switch (field) {
        case 0: m->seq = strtoull(tok, &e, 10); if (*e) return -1; break;
        case 1: if (strlen(tok) >= sizeof m->epoch) return -1; strcpy(m->epoch, tok); break;
        case 2: m->published_ms = strtoull(tok, &e, 10); if (*e) return -1; break;
        case 3: if (strcmp(tok, "-") != 0) strcpy(m->kinds, tok); break;
        case 4: if (strlen(tok) >= sizeof m->id) return -1; strcpy(m->id, tok); break;
        }
        field++;
        p = sp + (sp < end);
    }
    if (m->kind == 'm') {
        m->env = p;
        m->env_len = (size_t)(end - p);
        if (!m->env_len)
            return -1;
    }
    return 0;
}

static void on_bus_message(mp_redis *r, int shard, const char *channel, size_t len, const char *payload, size_t plen,
                           void *ud)
{
    (void)r; (void)shard;
    rstore *st = ud;
    char name[MP_STORE_NAME_MAX + 1];
    bmsg m;
    wch *w;
    if (channel_of_bus(channel, len, name) < 0 || !(w = find_watch(st, name)) || w->unwanted)
        return;
    if (parse_bus(payload, plen, &m) < 0) {
        st->stats.bad_messages++;
        return;
    }
    m.arrival = ++w->arrivals;
    w->heard = ev_now(st->loop);
    switch (w->state) {
    case W_SUBSCRIBING:
        break;   /* before the confirmation: the position read after it covers it */
    case W_SYNCING:
    case W_RECOVERING:
        hold(st, w, &m, 0);
        break;
    default:
        take_live(st, w, &m, 0);
    }
}

static void on_subscribed(mp_redis *r, int shard, const char *channel, size_t len, void *ud)
{
    rstore *st = ud;
    char name[MP_STORE_NAME_MAX + 1];
    wch *w;
    if (channel_of_bus(channel, len, name) < 0 || !(w = find_watch(st, name)) || w->state != W_SUBSCRIBING ||
        w->sub_serial != mp_redis_sub_serial(r, shard))
        return;
    if (w->unwanted) {
        waiter *none = NULL;
        unsubscribe(st, w);
        drop_watch(st, w, &none);
        return;
    }
    w->heard = ev_now(st->loop);
    if (w->synced)
        start_recovery(st, w);   /* back after a pub/sub loss: from the last seq delivered */
    else
        sync_position(st, w);
}

static void on_sub_up(mp_redis *r, int shard, void *ud)
{
    rstore *st = ud;
    uint64_t serial = mp_redis_sub_serial(r, shard);
    for (wch *w = st->watches; w; w = w->hh.next) {
        if (w->shard != shard)
            continue;
        char bus[KEY_MAX];
        if (mp_redis_subscribe(r, shard, bus, chan_key(bus, w->name, 'p')) == 0)
            w->sub_serial = serial;
    }
}

static void on_sub_down(mp_redis *r, int shard, void *ud)
{
    (void)r;
    rstore *st = ud;
    waiter *failed = NULL;
    wch *w, *tmp;
    HASH_ITER(hh, st->watches, w, tmp) {
        if (w->shard != shard)
            continue;
        if (!w->synced || w->unwanted) {
            drop_watch(st, w, &failed);
            continue;
        }
        w->state = W_SUBSCRIBING;
        w->round++;
        w->reading = w->checking = 0;
        free_buffer(w->bhead);
        w->bhead = w->btail = NULL;
        w->nbuf = 0;
        w->overflow = 0;
    }
    answer_waiters(st, failed, MP_STORE_EUNAVAIL, NULL, 0);
}

static void on_cmd_up(mp_redis *r, int shard, void *ud)
{
    rstore *st = ud;
    for (wch *w = st->watches; w; w = w->hh.next)
        if (w->shard == shard && w->state == W_RECOVERING && !w->reading && mp_redis_cmd_up(r, shard))
            read_from_last(st, w);
}

/* ---- operations: watch ----------------------------------------------------------------- */

static void rs_watch(mp_store *base, const char *channel, mp_store_watch_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    if (st->closing || !channel_ok(channel)) {
        if (cb) cb(base, st->closing ? MP_STORE_EUNAVAIL : MP_STORE_EINVAL, NULL, 0, ud);
        return;
    }
    wch *w = find_watch(st, channel);
    if (w && w->unwanted)
        w->unwanted = 0;   /* its SUBSCRIBE is still on its way: take it back */
    if (w && w->synced) {
        char epoch[MP_STORE_EPOCH_MAX];
        memcpy(epoch, w->epoch, sizeof epoch);
        if (cb) cb(base, MP_STORE_OK, epoch, w->last, ud);
        return;
    }
    waiter *wt = calloc(1, sizeof *wt);
    if (!wt) {
        if (cb) cb(base, MP_STORE_ENOMEM, NULL, 0, ud);
        return;
    }
    wt->cb = cb;
    wt->ud = ud;
    if (w) {
        add_waiter(w, wt);
        return;
    }
    size_t len = strlen(channel);
    int shard = mp_redis_shard_of(st->r, channel, len);
    char bus[KEY_MAX];
    int status = MP_STORE_OK;
    if (!mp_redis_sub_up(st->r, shard) || !mp_redis_cmd_up(st->r, shard))
        status = MP_STORE_EUNAVAIL;
    else if (!(w = calloc(1, sizeof *w + len + 1)) ||
             mp_redis_subscribe(st->r, shard, bus, chan_key(bus, channel, 'p')) < 0)
        status = MP_STORE_ENOMEM;
    if (status != MP_STORE_OK) {
        free(w);
        free(wt);
        if (cb) cb(base, status, NULL, 0, ud);
        return;
    }
    memcpy(w->name, channel, len + 1);
    w->id = ++st->next_wid;
    w->shard = shard;
    w->state = W_SUBSCRIBING;
    w->sub_serial = mp_redis_sub_serial(st->r, shard);
    add_waiter(w, wt);
    HASH_ADD(hh, st->watches, name[0], len, w);
    st->stats.watched++;
}

static void rs_unwatch(mp_store *base, const char *channel)
{
    rstore *st = (rstore *)base;
    wch *w = channel ? find_watch(st, channel) : NULL;
    if (!w || w->unwanted)
        return;
    waiter *list = w->waiters;
    w->waiters = w->waiters_tail = NULL;
    if (w->state == W_SUBSCRIBING && mp_redis_sub_up(st->r, w->shard) &&
        w->sub_serial == mp_redis_sub_serial(st->r, w->shard)) {
        /* Redis has not confirmed the SUBSCRIBE yet: an UNSUBSCRIBE now
         * could be overtaken by a new watch's SUBSCRIBE confirmation. Kept
         * until the confirmation comes, then unsubscribed (on_subscribed). */
        w->unwanted = 1;
        free_buffer(w->bhead);
        w->bhead = w->btail = NULL;
        w->nbuf = 0;
    } else {
        unsubscribe(st, w);
        waiter *none = NULL;
        drop_watch(st, w, &none);
    }
    answer_waiters(st, list, MP_STORE_ECANCELED, NULL, 0);
}

static void rs_set_live_handler(mp_store *base, const mp_store_live_handler *h)
{
    rstore *st = (rstore *)base;
    if (h)
        st->live = *h;
    else
        memset(&st->live, 0, sizeof st->live);
}

/* ---- the rest of store.h ---------------------------------------------------------------- */

static size_t rs_sweep(mp_store *base)
{
    (void)base;
    return 0;   /* Redis expires keys itself */
}

static void rs_stats(mp_store *base, mp_store_stats *out)
{
    (void)base;
    memset(out, 0, sizeof *out);   /* Redis's content is not counted here: mp_store_redis_get_stats */
}

static int rs_set_policies(mp_store *base, const mp_store_policy *p, size_t n, const mp_store_policy *def)
{
    rstore *st = (rstore *)base;
    return mp_store_policies_set(&st->policies, p, n, def);
}

static void rs_free(mp_store *base)
{
    rstore *st = (rstore *)base;
    st->closing = 1;
    ev_timer_stop(st->loop, &st->quiet);
    waiter *pending = NULL;
    while (st->watches)
        drop_watch(st, st->watches, &pending);
    mp_redis_free(st->r);   /* every operation in flight: EUNAVAIL */
    answer_waiters(st, pending, MP_STORE_EUNAVAIL, NULL, 0);
    mp_store_policies_free(&st->policies);
    free(st);
}

int mp_store_redis_get_stats(mp_store *base, mp_store_redis_stats *out)
{
    if (!base || base->ops != &redis_ops)
        return -1;
    rstore *st = (rstore *)base;
    *out = st->stats;
    mp_redis_get_stats(st->r, &out->redis);
    out->shards = mp_redis_nshards(st->r);
    out->shards_up = 0;
    for (int i = 0; i < out->shards; i++)
        out->shards_up += mp_redis_cmd_up(st->r, i) && mp_redis_sub_up(st->r, i);
    return 0;
}

static const mp_store_ops redis_ops = {
    .next_seq = NULL,
    .append = NULL,
    .read = rs_read,
    .flush = rs_flush,
    .cursor_get = rs_cursor_get,
    .cursor_advance = rs_cursor_advance,
    .cursor_delete_device = rs_cursor_delete_device,
    .sweep = rs_sweep,
    .stats = rs_stats,
    .set_policies = rs_set_policies,
    .free = rs_free,
    .set_live_handler = rs_set_live_handler,
    .publish = rs_publish,
    .watch = rs_watch,
    .unwatch = rs_unwatch,
};

void mp_store_redis_config_defaults(mp_store_redis_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    mp_store_config_defaults(&cfg->store);
    mp_redis_config_defaults(&cfg->redis);
    cfg->startup_timeout_ms = 3000;
    cfg->quiet_check_ms = 3000;
    cfg->buffer_max = 10000;
}

/* A channel script is lib.lua followed by its own text. */
static mp_redis_script *add_channel_script(mp_redis *r, const char *name, const char *body)
{
    size_t a = strlen(mp_redis_lua_lib), b = strlen(body);
    char *src = malloc(a + b + 1);
    if (!src)
        return NULL;
    memcpy(src, mp_redis_lua_lib, a);
    memcpy(src + a, body, b + 1);
    mp_redis_script *s = mp_redis_script_add(r, name, src);
    free(src);
    return s;
}

mp_store *mp_store_redis_new(const mp_store_redis_config *cfg, struct ev_loop *loop, char *err, size_t errlen)
{
    rstore *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "redis store: out of memory");
        return NULL;
    }
    st->base.ops = &redis_ops;
    st->loop = loop;
    st->idle_ms = cfg->store.channel_idle_ms < 1000 ? 1000 : cfg->store.channel_idle_ms;
    st->cursor_ttl_ms = cfg->store.cursor_ttl_ms;
    st->clock_ms = cfg->store.clock_ms;
    st->clock_ud = cfg->store.clock_ud;
    st->quiet_ms = cfg->quiet_check_ms ? cfg->quiet_check_ms : 3000;
    st->buffer_max = cfg->buffer_max ? cfg->buffer_max : 10000;
    if (mp_store_policies_set(&st->policies, cfg->store.policies, cfg->store.npolicies,
                              &cfg->store.default_policy) != MP_STORE_OK) {
        snprintf(err, errlen, "redis store: invalid history policy");
        free(st);
        return NULL;
    }
    mp_redis_events ev = { on_cmd_up, NULL, on_sub_up, on_sub_down, on_subscribed, on_bus_message, st };
    if (!(st->r = mp_redis_new(&cfg->redis, loop, &ev, err, errlen))) {
        mp_store_policies_free(&st->policies);
        free(st);
        return NULL;
    }
    st->s_publish = add_channel_script(st->r, "publish", mp_redis_lua_publish);
    st->s_read = add_channel_script(st->r, "read", mp_redis_lua_read);
    st->s_position = add_channel_script(st->r, "position", mp_redis_lua_position);
    st->s_flush = add_channel_script(st->r, "flush", mp_redis_lua_flush);
    st->s_cget = mp_redis_script_add(st->r, "cursor_get", mp_redis_lua_cursor_get);
    st->s_cadv = mp_redis_script_add(st->r, "cursor_advance", mp_redis_lua_cursor_advance);
    st->s_cdel = mp_redis_script_add(st->r, "cursor_delete", mp_redis_lua_cursor_delete);
    if (!st->s_publish || !st->s_read || !st->s_position || !st->s_flush || !st->s_cget || !st->s_cadv || !st->s_cdel) {
        snprintf(err, errlen, "redis store: out of memory");
        rs_free(&st->base);
        return NULL;
    }
    ev_timer_init(&st->quiet, on_quiet_tick, (double)st->quiet_ms / 1000.0, (double)st->quiet_ms / 1000.0);
    st->quiet.data = st;
    mp_redis_start(st->r);
    if (mp_redis_wait_up(st->r, cfg->startup_timeout_ms ? cfg->startup_timeout_ms : 3000, err, errlen) < 0) {
        rs_free(&st->base);
        return NULL;
    }
    ev_timer_start(loop, &st->quiet);
    return &st->base;
}
