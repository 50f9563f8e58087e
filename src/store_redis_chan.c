/* store_redis_chan.c — the Redis store's channel operations: publish, read
 * and flush (of one channel, or of every channel by SCAN on each shard).
 * Each is one script on the channel's shard (the top of store_redis.c).
 */
#include "store_redis_int.h"

/* ---- operations: publish -------------------------------------------------- */

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
        int status = rs_script_failed(o->st, "publish", rep);
        if (cb) cb(&o->st->base, status, 0, NULL, o->ud);
    }
    free(o);
}

void rs_publish(mp_store *base, const char *channel, const mp_store_msg *m, mp_store_seq_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    int status;
    op *o = rs_op_start(st, mp_store_msg_valid(channel, m), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, 0, NULL, ud);
        return;
    }
    args a;
    int shard;
    if (rs_chan_args(st, &a, channel, &shard) < 0) {
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
    if (rs_parse_history(st, rep, &raw) < 0) {
        int status = rs_script_failed(st, "read", rep);
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
    /* Ahead of the head nothing is read, whatever the script returned. */
    size_t n = h.since_state == MP_STORE_SINCE_AHEAD ? 0 : raw.n;
    mp_store_item *items = n ? calloc(n, sizeof *items) : NULL;
    int status = n && !items ? MP_STORE_ENOMEM : MP_STORE_OK;
    for (size_t i = 0; status == MP_STORE_OK && i < n; i++) {
        rec *rc = &raw.recs[i];
        size_t off, dlen;
        mp_frame *f = rs_envelope_frame(st, o->channel, rc->seq, rc->id, rc->env, rc->env_len, rc->published_ms,
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

void rs_read(mp_store *base, const char *channel, const char *epoch, uint64_t since, size_t max,
                    mp_store_read_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    int status;
    op *o = rs_op_start(st, channel_ok(channel) && epoch_ok(epoch), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    snprintf(o->channel, sizeof o->channel, "%s", channel);
    snprintf(o->epoch, sizeof o->epoch, "%s", epoch ? epoch : "");
    o->since = since;
    args a;
    int shard;
    if (rs_chan_args(st, &a, channel, &shard) < 0) {
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
    if (rs_chan_args(st, &a, channel, &shard) < 0)
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
    flush_done_part(all, ok ? MP_STORE_OK : rs_script_failed(all->st, "flush", rep));
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
        flush_done_part(all, rs_script_failed(st, "flush (SCAN)", rep));
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
                                                         : rs_script_failed(o->st, "flush", rep);
    if (cb) cb(&o->st->base, status, o->ud);
    free(o);
}

void rs_flush(mp_store *base, const char *channel, mp_store_done_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    int status;
    op *o = rs_op_start(st, !channel || channel_ok(channel), (void *)cb, ud, &status);
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
