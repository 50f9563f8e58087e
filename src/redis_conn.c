/* redis_conn.c — a shard's two connections: connect, loss, reconnect, tick.
 *
 * Connections. Each shard has a command and a pub/sub connection, each a
 * small state machine: DOWN -> CONNECTING (connect + handshake, under a
 * connect_timeout_ms timer) -> UP -> (lost) -> DOWN, and a retry timer
 * whose delay doubles per consecutive failure from backoff_min_ms up to
 * backoff_max_ms, each drawn in [delay/2, delay] (jitter: nodes that lost
 * the same Redis do not all come back in the same millisecond). The
 * handshake (redis_handshake.c) is pipelined behind the connect.
 *
 * Timeouts. One tick timer per mp_redis checks each shard: the oldest
 * request in flight older than command_timeout_ms drops the command
 * connection (its requests fail; a 503 for a publish that may have been
 * stored, see store.h), and a probe (PUBLISH on the command connection to
 * the shard's probe channel, every probe_interval_ms) not heard back on
 * the pub/sub connection within command_timeout_ms drops the pub/sub
 * connection (a silently dead subscription: store_redis.c recovers from
 * history). Redis killing a slow subscriber (client-output-buffer-limit)
 * is an ordinary disconnect.
 *
 * hiredis 0.14 pitfalls handled here:
 *   - redisAsyncFree inside onConnect frees at once and hiredis then uses
 *     the context: never done. A context is freed only by us from a timer
 *     or a reply callback (hiredis defers that until the callback returns),
 *     or by hiredis itself after an error (then onConnect(ERR) or
 *     onDisconnect tells us; we never free it again).
 *   - On teardown hiredis calls every pending callback with a NULL reply,
 *     before onDisconnect (and without onDisconnect if it never
 *     connected): the first NULL reply marks the connection lost.
 *   - In subscribed mode, a reply it cannot match (an UNSUBSCRIBE of a
 *     channel it has no callback for, a PING) re-runs the previous
 *     callback: every subscription here uses one callback that ignores
 *     what it does not expect, and no PING goes to a pub/sub connection.
 *   - The async API has no connect timeout: our timer. Host names would be
 *     resolved by a blocking getaddrinfo per connect: resolved once at
 *     mp_redis_new instead. A unix connect that is refused (or whose
 *     backlog is full) fails at once and is retried with backoff.
 */
#include <hiredis/adapters/libev.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "redis_int.h"

/* ---- connections ------------------------------------------------------------- */

static void schedule_retry(conn *c)
{
    mp_redis *r = c->sh->r;
    if (r->closing)
        return;
    uint64_t delay = r->cfg.backoff_min_ms;
    for (unsigned i = 1; i < c->failures && delay < r->cfg.backoff_max_ms; i++)
        delay *= 2;
    if (delay > r->cfg.backoff_max_ms)
        delay = r->cfg.backoff_max_ms;
    delay = delay / 2 + next_random(r) % (delay / 2 + 1);
    ev_timer_stop(r->loop, &c->timer);
    ev_timer_set(&c->timer, (double)delay / 1000.0, 0.);
    ev_timer_start(r->loop, &c->timer);
}

/* The connection is gone (or going: hiredis may be tearing it down right
 * now). Never frees the context: see conn_drop. */
void redis_conn_lost(conn *c, const char *why)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    int was_up = c->state == C_UP;
    if (!c->ac && c->state == C_DOWN)
        return;
    c->ac = NULL;
    c->state = C_DOWN;
    c->failures++;
    if (why && *why)
        snprintf(c->err, sizeof c->err, "%s", why);
    if (!r->closing) {
        if (was_up)
            mp_warn("redis connection lost", "addr=%s conn=%s error=\"%s\"", sh->addr, kind_name(c), mp_log_q(c->err));
        else
            mp_debug("redis connect failed", "addr=%s conn=%s error=\"%s\"", sh->addr, kind_name(c), mp_log_q(c->err));
    }
    ev_timer_stop(r->loop, &c->timer);
    schedule_retry(c);
    if (c->kind == K_CMD) {
        sh->gen[0] = '\0';
        sh->barrier = NULL;
        req *rq;
        while ((rq = list_pop(&sh->queue)))
            redis_req_fail_later(r, rq);
        if (was_up && !r->closing && r->ev.cmd_down)
            r->ev.cmd_down(r, sh->index, r->ev.ud);
    } else {
        for (size_t i = 0; i < sh->nops; i++)
            free(sh->ops[i].name);
        sh->nops = 0;
        if (was_up && !r->closing && r->ev.sub_down)
            r->ev.sub_down(r, sh->index, r->ev.ud);
    }
}

/* We end the connection: marked lost first, then freed (hiredis calls the
 * pending callbacks with NULL from inside redisAsyncFree, or after the
 * current callback returns if we are inside one). */
void redis_conn_drop(conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    redis_conn_lost(c, why);
    if (ac)
        redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (status != REDIS_OK && c->ac == ac)
        redis_conn_lost(c, ac->errstr);   /* hiredis frees ac after this */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    conn *c = ac->data;
    if (c->ac == ac)
        redis_conn_lost(c, ac->errstr[0] ? ac->errstr : "connection closed");
}

void redis_conn_up(conn *c)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    ev_timer_stop(r->loop, &c->timer);
    c->state = C_UP;
    c->err[0] = '\0';
    if (c->ups++ > 0) {
        r->stats.reconnects++;
        mp_info("redis connection back", "addr=%s conn=%s", sh->addr, kind_name(c));
    }
    c->failures = 0;
    if (c->kind == K_CMD) {
        redis_flush_queue(sh);
        if (r->ev.cmd_up)
            r->ev.cmd_up(r, sh->index, r->ev.ud);
    } else {
        sh->probe_sent = sh->probe_seen = 0;
        sh->probe_next = ev_now(r->loop);
        if (r->ev.sub_up)
            r->ev.sub_up(r, sh->index, r->ev.ud);
    }
}

void redis_on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    conn *c = w->data;
    if (c->state == C_CONNECTING) {
        char why[96];
        snprintf(why, sizeof why, "no answer within %u ms", c->sh->r->cfg.connect_timeout_ms);
        c->sh->r->stats.timeouts++;
        redis_conn_drop(c, why);
    } else if (c->state == C_DOWN) {
        redis_conn_start(c);
    }
}

void redis_conn_start(conn *c)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    if (r->closing || c->state != C_DOWN)
        return;
    c->serial++;
    redisAsyncContext *ac = sh->is_unix ? redisAsyncConnectUnix(sh->path) : redisAsyncConnect(sh->host, sh->port);
    if (!ac || ac->err) {
        snprintf(c->err, sizeof c->err, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        c->failures++;
        mp_debug("redis connect failed", "addr=%s conn=%s error=\"%s\"", sh->addr, kind_name(c), mp_log_q(c->err));
        schedule_retry(c);
        return;
    }
    if (!sh->is_unix)
        redisEnableKeepAlive(&ac->c);
    ac->data = c;
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = C_CONNECTING;
    ev_timer_stop(r->loop, &c->timer);
    ev_timer_set(&c->timer, (double)r->cfg.connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(r->loop, &c->timer);
    int rc = c->kind == K_CMD ? redis_send_cmd_handshake(c) : redis_send_sub_handshake(c);
    if (rc < 0)
        redis_conn_drop(c, "cannot send the handshake");
}

/* ---- the tick: command timeouts and the pub/sub probe ------------------------- */

static void probe_reply(req *rq, redisReply *reply) { (void)rq; (void)reply; }

static void check_shard(shard *sh, ev_tstamp now)
{
    mp_redis *r = sh->r;
    double limit = (double)r->cfg.command_timeout_ms / 1000.0;
    if (sh->cmd.state == C_UP && sh->inflight.head && now - sh->inflight.head->sent > limit) {
        r->stats.timeouts++;
        char why[96];
        snprintf(why, sizeof why, "no answer within %u ms", r->cfg.command_timeout_ms);
        redis_conn_drop(&sh->cmd, why);
    }
    if (sh->sub.state != C_UP || sh->cmd.state != C_UP || !r->cfg.probe_interval_ms)
        return;
    if (sh->probe_seen < sh->probe_sent) {
        if (now - sh->probe_at > limit) {
            r->stats.timeouts++;
            redis_conn_drop(&sh->sub, "pub/sub probe not heard back");
        }
        return;
    }
    if (now < sh->probe_next)
        return;
    char n[24];
    int len = snprintf(n, sizeof n, "%llu", (unsigned long long)(sh->probe_sent + 1));
    const char *a[3] = { "PUBLISH", sh->probe, n };
    size_t l[3] = { 7, strlen(sh->probe), (size_t)len };
    req *rq = redis_req_new(sh, probe_reply, 3, a, l);
    if (rq && redis_write_req(sh, rq) == 0) {
        sh->probe_sent++;
        sh->probe_at = now;
        sh->probe_next = now + (double)r->cfg.probe_interval_ms / 1000.0;
    } else if (rq) {
        redis_req_free(rq);
    }
}

void redis_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    mp_redis *r = w->data;
    ev_tstamp now = ev_now(loop);
    for (int i = 0; i < r->nshards; i++)
        check_shard(&r->shards[i], now);
}
