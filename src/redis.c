/* redis.c — shard connections over hiredis 0.14's async API (see redis.h):
 * the lifetime of an mp_redis and its queries.
 *
 * The pieces (redis_int.h lists them) each explain their part at their top:
 * connections and the hiredis pitfalls in redis_conn.c, the generation in
 * redis_handshake.c, requests, order and NOSCRIPT in redis_req.c.
 *
 * Limits: one command connection per shard serialises that shard's work
 * (Redis runs one command at a time anyway); pipelining keeps it busy.
 * max_pending bounds what waits per shard; past it requests fail at once.
 */
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "redis_int.h"
#include "redis_scripts.h"

/* ---- small helpers -------------------------------------------------------- */

void mp_redis_config_defaults(mp_redis_config *cfg)
{
    cfg->connect_timeout_ms = 2000;
    cfg->command_timeout_ms = 5000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->probe_interval_ms = 1000;
    cfg->max_pending = 100000;
}

static void seed_random(mp_redis *r)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)r;
    }
    r->rng = s ? s : 0x9e3779b97f4a7c15ull;
}

/* ---- lifetime ------------------------------------------------------------------- */

mp_redis *mp_redis_new(const mp_redis_config *cfg, struct ev_loop *loop, const mp_redis_events *ev,
                       char *err, size_t errlen)
{
    if (!cfg->naddrs || cfg->naddrs > 1024) {
        set_err(err, errlen, "redis: %s%s", cfg->naddrs ? "more than 1024 shards" : "no address", "");
        return NULL;
    }
    mp_redis *r = calloc(1, sizeof *r);
    if (!r || !(r->shards = calloc(cfg->naddrs, sizeof *r->shards))) {
        free(r);
        set_err(err, errlen, "redis: %s%s", "out of memory", "");
        return NULL;
    }
    r->loop = loop;
    r->cfg = *cfg;
    r->cfg.addrs = NULL;
    mp_redis_config d;
    mp_redis_config_defaults(&d);
    if (!r->cfg.connect_timeout_ms) r->cfg.connect_timeout_ms = d.connect_timeout_ms;
    if (!r->cfg.command_timeout_ms) r->cfg.command_timeout_ms = d.command_timeout_ms;
    if (!r->cfg.backoff_min_ms) r->cfg.backoff_min_ms = d.backoff_min_ms;
    if (r->cfg.backoff_max_ms < r->cfg.backoff_min_ms) r->cfg.backoff_max_ms = r->cfg.backoff_min_ms;
    if (!r->cfg.max_pending) r->cfg.max_pending = d.max_pending;
    if (ev)
        r->ev = *ev;
    seed_random(r);
    snprintf(r->node, sizeof r->node, "%012llx", (unsigned long long)(next_random(r) & 0xffffffffffffull));
    if (cfg->password && *cfg->password && !(r->password = strdup(cfg->password))) {
        set_err(err, errlen, "redis: %s%s", "out of memory", "");
        mp_redis_free(r);
        return NULL;
    }
    r->nshards = (int)cfg->naddrs;
    for (int i = 0; i < r->nshards; i++) {
        shard *sh = &r->shards[i];
        sh->r = r;
        sh->index = i;
        conn *cs[2] = { &sh->cmd, &sh->sub };
        for (int k = 0; k < 2; k++) {
            cs[k]->sh = sh;
            cs[k]->kind = k;
            ev_timer_init(&cs[k]->timer, redis_on_conn_timer, 0., 0.);
            cs[k]->timer.data = cs[k];
            snprintf(cs[k]->err, sizeof cs[k]->err, "not connected yet");
        }
        snprintf(sh->probe, sizeof sh->probe, "mp:probe:%s:%d", r->node, i);
        if (redis_parse_addr(sh, cfg->addrs[i], err, errlen) < 0) {
            mp_redis_free(r);
            return NULL;
        }
    }
    ev_timer_init(&r->failed_timer, redis_on_failed_timer, 0., 0.);
    r->failed_timer.data = r;
    ev_timer_init(&r->batch_timer, redis_on_batch_timer, 0., 0.);
    r->batch_timer.data = r;
    double tick = (double)r->cfg.command_timeout_ms / 4000.0;
    if (tick > 0.25)
        tick = 0.25;
    ev_timer_init(&r->tick, redis_on_tick, tick, tick);
    r->tick.data = r;
    if (!(r->generation = mp_redis_script_add(r, "generation", mp_redis_lua_generation))) {
        set_err(err, errlen, "redis: %s%s", "out of memory", "");
        mp_redis_free(r);
        return NULL;
    }
    return r;
}

void mp_redis_start(mp_redis *r)
{
    if (r->started)
        return;
    r->started = 1;
    ev_timer_start(r->loop, &r->tick);
    for (int i = 0; i < r->nshards; i++) {
        redis_conn_start(&r->shards[i].cmd);
        redis_conn_start(&r->shards[i].sub);
    }
}

static void on_wait_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    *(int *)w->data = 1;
}

int mp_redis_wait_up(mp_redis *r, uint32_t timeout_ms, char *err, size_t errlen)
{
    int expired = 0;
    ev_timer deadline;
    ev_timer_init(&deadline, on_wait_deadline, (double)timeout_ms / 1000.0, 0.);
    deadline.data = &expired;
    ev_timer_start(r->loop, &deadline);
    for (;;) {
        int all = 1;
        for (int i = 0; i < r->nshards && all; i++)
            all = r->shards[i].cmd.state == C_UP && r->shards[i].sub.state == C_UP;
        if (all || expired)
            break;
        ev_run(r->loop, EVRUN_ONCE);
    }
    ev_timer_stop(r->loop, &deadline);
    for (int i = 0; i < r->nshards; i++) {
        shard *sh = &r->shards[i];
        conn *c = sh->cmd.state != C_UP ? &sh->cmd : sh->sub.state != C_UP ? &sh->sub : NULL;
        if (c) {
            if (err && errlen)
                snprintf(err, errlen, "redis %s (%s connection): %s", sh->addr, kind_name(c),
                         c->err[0] ? c->err : "no answer");
            return -1;
        }
    }
    return 0;
}

void mp_redis_free(mp_redis *r)
{
    if (!r)
        return;
    r->closing = 1;
    if (r->loop) {
        ev_timer_stop(r->loop, &r->tick);
        ev_timer_stop(r->loop, &r->failed_timer);
        ev_timer_stop(r->loop, &r->batch_timer);
    }
    for (int i = 0; r->shards && i < r->nshards; i++) {
        shard *sh = &r->shards[i];
        conn *cs[2] = { &sh->cmd, &sh->sub };
        for (int k = 0; k < 2; k++) {
            if (r->loop)
                ev_timer_stop(r->loop, &cs[k]->timer);
            redis_conn_drop(cs[k], "closing");   /* in-flight requests: NULL, now */
        }
        req *rq;
        while ((rq = list_pop(&sh->queue)))
            list_push(&r->failed, rq);
        for (size_t k = 0; k < sh->nops; k++)
            free(sh->ops[k].name);
        free(sh->ops);
    }
    redis_drain_failed(r);
    while (r->scripts) {
        mp_redis_script *s = r->scripts;
        r->scripts = s->next;
        free(s);
    }
    free(r->shards);
    free(r->password);
    free(r);
}

/* ---- queries ---------------------------------------------------------------------- */

int mp_redis_nshards(const mp_redis *r) { return r->nshards; }
const char *mp_redis_shard_addr(const mp_redis *r, int shard) { return r->shards[shard].addr; }
const char *mp_redis_generation(const mp_redis *r, int shard) { return r->shards[shard].gen; }
const char *mp_redis_node_id(const mp_redis *r) { return r->node; }
int mp_redis_cmd_up(const mp_redis *r, int shard) { return r->shards[shard].cmd.state == C_UP; }
int mp_redis_sub_up(const mp_redis *r, int shard) { return r->shards[shard].sub.state == C_UP; }
uint64_t mp_redis_sub_serial(const mp_redis *r, int shard) { return r->shards[shard].sub.ups; }
void mp_redis_get_stats(const mp_redis *r, mp_redis_stats *out) { *out = r->stats; }
