/* redis_req.c — requests on a shard's command connection, and scripts.
 *
 * Requests. A request is formatted once (RESP) and kept until answered: on
 * NOSCRIPT (SCRIPT FLUSH ran since the handshake) an EVALSHA is rebuilt as
 * EVAL from the same argument bytes. Order: the requests already in flight
 * behind the one that got NOSCRIPT fail the same way (the scripts are
 * gone) and are sent again in their order; new requests wait in the queue
 * until every request that was in flight when the first NOSCRIPT came has
 * been answered (the "barrier"), so no later request overtakes them. A
 * plain command in flight behind them was not retried, so it may run
 * before a retried script: store_redis.c uses scripts for everything that
 * reads or writes a channel or a cursor, so this never reorders its data.
 * Requests are written at once when the command connection is up; wait in
 * the queue while it is connecting (bounded by max_pending, and failed if
 * the connect fails or times out); are refused while it is down. A
 * request's NULL answer goes through the `failed` FIFO, drained on the
 * next loop iteration (timer 0): in issue order, after the in-flight
 * requests that hiredis fails synchronously when a connection dies, and
 * never from inside the call that issued it.
 */
#include <nettle/sha1.h>
#include <stdlib.h>
#include <string.h>

#include "redis_int.h"

/* ---- scripts ------------------------------------------------------------------ */

mp_redis_script *mp_redis_script_add(mp_redis *r, const char *name, const char *source)
{
    size_t len = strlen(source);
    mp_redis_script *s = calloc(1, sizeof *s + len + 1);
    if (!s)
        return NULL;
    memcpy(s->source, source, len + 1);
    s->len = len;
    snprintf(s->name, sizeof s->name, "%s", name);
    struct sha1_ctx ctx;
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_init(&ctx);
    sha1_update(&ctx, len, (const uint8_t *)source);
    sha1_digest(&ctx, sizeof digest, digest);
    for (int i = 0; i < SHA1_DIGEST_SIZE; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", digest[i]);
    s->next = r->scripts;
    r->scripts = s;
    return s;
}

/* ---- requests --------------------------------------------------------------- */

static void user_reply(req *rq, redisReply *reply);

req *redis_req_new(shard *sh, req_fn fn, int argc, const char **argv, const size_t *lens)
{
    req *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0 || !cmd) {
        free(rq);
        return NULL;
    }
    rq->sh = sh;
    rq->fn = fn;
    rq->cmd = cmd;
    rq->len = (size_t)n;
    return rq;
}

void redis_req_free(req *rq)
{
    redisFreeCommand(rq->cmd);
    free(rq);
}

/* The request will get its NULL answer on the next loop iteration. */
void redis_req_fail_later(mp_redis *r, req *rq)
{
    list_push(&r->failed, rq);
    if (!r->closing && !ev_is_active(&r->failed_timer)) {
        ev_timer_set(&r->failed_timer, 0., 0.);
        ev_timer_start(r->loop, &r->failed_timer);
    }
}

void redis_drain_failed(mp_redis *r)
{
    req *rq;
    while ((rq = list_pop(&r->failed))) {
        r->stats.failed++;
        rq->fn(rq, NULL);
        redis_req_free(rq);
    }
}

void redis_on_failed_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    redis_drain_failed(w->data);
}

/* Rebuilds an EVALSHA as EVAL and writes it again: "*N\r\n" stays,
 * "$7\r\nEVALSHA\r\n" (13 bytes) and "$40\r\n<sha>\r\n" (47) become
 * "$4\r\nEVAL\r\n$<len>\r\n<source>\r\n", the arguments stay. */
static int resend_as_eval(shard *sh, req *rq, redisAsyncContext *ac)
{
    const mp_redis_script *s = rq->script;
    size_t head = 0;
    while (rq->cmd[head] != '\n')
        head++;
    const char *tail = rq->cmd + head + 1 + 13 + 47;
    size_t tail_len = rq->len - (size_t)(tail - rq->cmd);
    char pre[96];
    int n = snprintf(pre, sizeof pre, "%.*s$4\r\nEVAL\r\n$%zu\r\n", (int)(head + 1), rq->cmd, s->len);
    size_t len = (size_t)n + s->len + 2 + tail_len;
    char *cmd = malloc(len);
    if (!cmd)
        return -1;
    memcpy(cmd, pre, (size_t)n);
    memcpy(cmd + n, s->source, s->len);
    memcpy(cmd + n + s->len, "\r\n", 2);
    memcpy(cmd + n + s->len + 2, tail, tail_len);
    if (redisAsyncFormattedCommand(ac, redis_on_reply, rq, cmd, len) != REDIS_OK) {
        free(cmd);
        return -1;
    }
    redisFreeCommand(rq->cmd);
    rq->cmd = cmd;
    rq->len = len;
    rq->script = NULL;
    rq->sent = ev_now(sh->r->loop);
    list_push(&sh->inflight, rq);
    sh->r->stats.commands++;
    sh->r->stats.noscript++;
    return 0;
}

/* Answer from hiredis (NULL: the connection is going away). */
void redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    req *rq = privdata;
    shard *sh = rq->sh;
    mp_redis *r = sh->r;
    redisReply *rep = reply;
    list_unlink(rq);
    int barrier_done = rq == sh->barrier;
    if (!rep) {
        if (rq->via->ac == ac)
            redis_conn_lost(rq->via, ac->errstr[0] ? ac->errstr : "connection lost");
        if (rq->fn == user_reply)
            r->stats.failed++;
    } else if (rq->script && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 &&
               sh->cmd.ac == ac) {
        /* Everything written before this retry may come back NOSCRIPT too
         * and be sent again: new requests wait until it has all answered. */
        if (!barrier_done && !sh->barrier && sh->inflight.tail)
            sh->barrier = sh->inflight.tail;
        if (resend_as_eval(sh, rq, ac) == 0) {
            if (barrier_done) {
                sh->barrier = NULL;
                redis_flush_queue(sh);
            }
            return;
        }
        r->stats.failed++;
        rep = NULL;
    } else if (rep->type == REDIS_REPLY_ERROR) {
        r->stats.error_replies++;
    }
    rq->fn(rq, rep);
    int lift = barrier_done && sh->barrier == rq;   /* still this barrier (not dropped meanwhile) */
    redis_req_free(rq);
    if (lift) {
        sh->barrier = NULL;
        redis_flush_queue(sh);
    }
}

int redis_write_req(shard *sh, req *rq)
{
    if (redisAsyncFormattedCommand(sh->cmd.ac, redis_on_reply, rq, rq->cmd, rq->len) != REDIS_OK)
        return -1;
    rq->sent = ev_now(sh->r->loop);
    rq->via = &sh->cmd;
    list_push(&sh->inflight, rq);
    sh->r->stats.commands++;
    return 0;
}

/* Writes what waits, unless a barrier holds it back. */
void redis_flush_queue(shard *sh)
{
    while (sh->cmd.state == C_UP && !sh->barrier && sh->queue.head) {
        req *rq = list_pop(&sh->queue);
        if (redis_write_req(sh, rq) < 0)
            redis_req_fail_later(sh->r, rq);
    }
}

/* Routes a new user request: written, queued or failed (see the top). */
static void submit(shard *sh, req *rq)
{
    mp_redis *r = sh->r;
    size_t waiting = sh->inflight.n + sh->queue.n;
    if (r->closing || sh->cmd.state == C_DOWN || waiting >= r->cfg.max_pending) {
        r->stats.refused++;
        redis_req_fail_later(r, rq);
    } else if (sh->cmd.state == C_CONNECTING || sh->barrier || sh->queue.head) {
        list_push(&sh->queue, rq);
    } else if (redis_write_req(sh, rq) < 0) {
        r->stats.refused++;
        redis_req_fail_later(r, rq);
    }
}

static void user_reply(req *rq, redisReply *reply)
{
    rq->cb(rq->sh->r, reply, rq->ud);
}

void mp_redis_fail(mp_redis *r, mp_redis_reply_cb cb, void *ud)
{
    /* Answered NULL like any refused request, from the loop. */
    req *rq = calloc(1, sizeof *rq);
    if (!rq) {
        cb(r, NULL, ud);   /* nothing left to queue with */
        return;
    }
    rq->fn = user_reply;
    rq->cb = cb;
    rq->ud = ud;
    rq->sh = &r->shards[0];
    rq->via = &rq->sh->cmd;
    r->stats.refused++;
    redis_req_fail_later(r, rq);
}

void mp_redis_command(mp_redis *r, int shard_i, mp_redis_reply_cb cb, void *ud, int argc, const char **argv,
                      const size_t *lens)
{
    req *rq = redis_req_new(&r->shards[shard_i], user_reply, argc, argv, lens);
    if (!rq) {
        mp_redis_fail(r, cb, ud);
        return;
    }
    rq->cb = cb;
    rq->ud = ud;
    submit(&r->shards[shard_i], rq);
}

#define MAX_ARGS 32

void mp_redis_eval(mp_redis *r, int shard_i, const mp_redis_script *script, mp_redis_reply_cb cb, void *ud,
                   int nkeys, int argc, const char **argv, const size_t *lens)
{
    const char *av[MAX_ARGS + 3];
    size_t al[MAX_ARGS + 3];
    char nk[16];
    if (argc > MAX_ARGS) {
        mp_redis_fail(r, cb, ud);
        return;
    }
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = script->sha;
    al[1] = 40;
    al[2] = (size_t)snprintf(nk, sizeof nk, "%d", nkeys);
    av[2] = nk;
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens[i];
    }
    req *rq = redis_req_new(&r->shards[shard_i], user_reply, argc + 3, av, al);
    if (!rq) {
        mp_redis_fail(r, cb, ud);
        return;
    }
    rq->cb = cb;
    rq->ud = ud;
    rq->script = script;
    submit(&r->shards[shard_i], rq);
}
