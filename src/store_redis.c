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
 * Per shard: mp:gen and mp:run (redis/generation.lua, redis_handshake.c).
 *
 * Scripts: the files under redis/, embedded at build time (see
 * redis_scripts.h). The channel scripts publish, read, position and flush
 * each start with redis/lib.lua (sent in front of them), which loads the
 * channel's state
 * and gives it a new epoch when its meta is missing or was made under
 * another generation: Redis lost data since, so positions in the old epoch
 * mean nothing. Every read and write of a channel or cursor is one script,
 * so it is atomic and keeps its order even across a NOSCRIPT (redis_req.c).
 * Publish: one script takes the seq, builds the envelope (byte for byte
 * envelope.c's), appends and trims, PUBLISHes "m <seq> <epoch> <ms>
 * <kinds> <id> <envelope>" on the bus and answers (seq, epoch).
 *
 * Live delivery: the top of store_redis_watch.c.
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
 *
 * The pieces (store_redis_int.h lists them): this file holds the lifetime,
 * the ops table and stats, and what every operation uses.
 */
#include "store_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "log.h"
#include "redis_scripts.h"
#include "store_redis_int.h"

static const mp_store_ops redis_ops;

/* ---- shared by the operations ---------------------------------------------- */

/* A reply that is not what the script returns: logged once per reply. */
int rs_script_failed(rstore *st, const char *what, const redisReply *reply)
{
    if (reply) {
        st->stats.script_errors++;
        mp_warn("redis script failed", "script=%s error=\"%s\"", what,
                mp_log_q(reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply"));
    }
    return MP_STORE_EUNAVAIL;
}

int rs_chan_args(rstore *st, args *a, const char *channel, int *shard)
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

op *rs_op_start(rstore *st, int valid, void *cb, void *ud, int *status)
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

int rs_parse_history(rstore *st, const redisReply *rep, raw_history *h)
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
mp_frame *rs_envelope_frame(rstore *st, const char *channel, uint64_t seq, const char *id, const char *env,
                                size_t env_len, uint64_t published_ms, size_t *data_off, size_t *data_len)
{
    const char *data;
    if (mp_envelope_split(env, env_len, channel, seq, id, &data, data_len) < 0) {
        st->stats.bad_messages++;
        return NULL;
    }
    *data_off = (size_t)(data - env);
    mp_frame *f = mp_frame_ws(MP_WS_TEXT, env, env_len);
    if (f)
        f->published = (double)published_ms / 1000.0;
    return f;
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
        rs_drop_watch(st, st->watches, &pending);
    mp_redis_free(st->r);   /* every operation in flight: EUNAVAIL */
    rs_answer_waiters(st, pending, MP_STORE_EUNAVAIL, NULL, 0);
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
    mp_redis_events ev = { rs_on_cmd_up, NULL, rs_on_sub_up, rs_on_sub_down, rs_on_subscribed, rs_on_bus_message, st };
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
    ev_timer_init(&st->quiet, rs_on_quiet_tick, (double)st->quiet_ms / 1000.0, (double)st->quiet_ms / 1000.0);
    st->quiet.data = st;
    mp_redis_start(st->r);
    if (mp_redis_wait_up(st->r, cfg->startup_timeout_ms ? cfg->startup_timeout_ms : 3000, err, errlen) < 0) {
        rs_free(&st->base);
        return NULL;
    }
    ev_timer_start(loop, &st->quiet);
    return &st->base;
}
