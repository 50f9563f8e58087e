/* redis.c — shard connections over hiredis 0.14's async API (see redis.h).
 *
 * Connections. Each shard has a command and a pub/sub connection, each a
 * small state machine: DOWN -> CONNECTING (connect + handshake, under a
 * connect_timeout_ms timer) -> UP -> (lost) -> DOWN, and a retry timer
 * whose delay doubles per consecutive failure from backoff_min_ms up to
 * backoff_max_ms, each drawn in [delay/2, delay] (jitter: nodes that lost
 * the same Redis do not all come back in the same millisecond). The
 * handshake is pipelined behind the connect:
 *   command: [AUTH] [SELECT] INFO server, CONFIG GET appendonly,
 *            CONFIG GET appendfsync, SCRIPT LOAD (each registered script),
 *            then the generation script (redis/generation.lua) -> UP;
 *   pub/sub: [AUTH] SUBSCRIBE mp:probe:<node>:<shard> -> UP at its
 *            confirmation.
 *
 * Generation: the generation script returns the shard's mp:gen, a random
 * name that changes whenever the shard may have lost data (it is missing,
 * or Redis's run_id changed and the shard is not durable: appendonly yes
 * with appendfsync always, read with CONFIG GET; if CONFIG is not allowed
 * the shard counts as not durable). Channel scripts carry it and give a
 * channel a new epoch when its meta was made under another one.
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
 *
 * Limits: one command connection per shard serialises that shard's work
 * (Redis runs one command at a time anyway); pipelining keeps it busy.
 * max_pending bounds what waits per shard; past it requests fail at once.
 */
#include "redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "redis_scripts.h"

enum { C_DOWN, C_CONNECTING, C_UP };
enum { K_CMD, K_SUB };

struct mp_redis_script {
    struct mp_redis_script *next;
    char sha[41];
    size_t len;
    char name[32];
    char source[];
};

typedef struct req req;
typedef struct shard shard;

/* What to do with a reply. User requests call the user's callback;
 * handshake steps are internal. */
typedef void (*req_fn)(req *rq, redisReply *reply);

struct req {
    req *prev, *next;
    struct reqlist *in;         /* the shard's inflight, queue or steps list, or r->failed */
    shard *sh;
    struct conn *via;           /* the connection it was written on */
    req_fn fn;
    mp_redis_reply_cb cb;
    void *ud;
    const mp_redis_script *script;   /* an EVALSHA, sent again as EVAL on NOSCRIPT */
    uint64_t serial;            /* internal steps: the connection attempt they belong to */
    ev_tstamp sent;
    char *cmd;                  /* RESP, owned (hiredis's redisFormatCommandArgv) */
    size_t len;
};

typedef struct reqlist {
    req *head, *tail;
    size_t n;
} reqlist;

typedef struct conn {
    shard *sh;
    int kind;
    int state;
    redisAsyncContext *ac;
    uint64_t serial;            /* connection attempts */
    uint64_t ups;               /* times it came up */
    unsigned failures;          /* consecutive, for the backoff */
    ev_timer timer;             /* connect timeout while CONNECTING, retry while DOWN */
    char err[160];              /* why it is not up */
} conn;

typedef struct subop {
    int unsub;
    size_t len;
    char *name;
} subop;

struct shard {
    mp_redis *r;
    int index;
    char addr[MP_REDIS_ADDR_MAX];   /* as configured */
    int is_unix;
    char host[INET6_ADDRSTRLEN];
    int port;
    char path[108];
    conn cmd, sub;
    reqlist inflight;           /* written, waiting for a reply (in order) */
    reqlist sub_steps;          /* the pub/sub connection's AUTH, waiting for its reply */
    reqlist queue;              /* not written yet: connecting, or behind a barrier */
    req *barrier;               /* NOSCRIPT: queue until this one is answered */
    char gen[MP_REDIS_GEN_MAX];
    /* handshake facts */
    char run_id[48];
    int aof_yes, fsync_always;
    /* pub/sub */
    char probe[64];
    uint64_t probe_sent, probe_seen;
    ev_tstamp probe_at, probe_next;
    subop *ops;                 /* subscribe batch, in call order */
    size_t nops, ops_cap;
};

struct mp_redis {
    struct ev_loop *loop;
    mp_redis_config cfg;
    mp_redis_events ev;
    char *password;
    shard *shards;
    int nshards;
    mp_redis_script *scripts;
    mp_redis_script *generation;
    reqlist failed;             /* NULL answers waiting for the next loop iteration */
    ev_timer failed_timer;
    ev_timer tick;
    ev_timer batch_timer;       /* subscribe batches */
    int started, closing;
    uint64_t rng;
    char node[16];
    mp_redis_stats stats;
};

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

static uint64_t next_random(mp_redis *r)
{
    /* xorshift64*: jitter and generation names, not secrets */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ull;
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

static void list_push(reqlist *l, req *rq)
{
    rq->in = l;
    rq->next = NULL;
    rq->prev = l->tail;
    if (l->tail) l->tail->next = rq; else l->head = rq;
    l->tail = rq;
    l->n++;
}

static void list_unlink(req *rq)
{
    reqlist *l = rq->in;
    if (!l)
        return;
    rq->in = NULL;
    if (rq->prev) rq->prev->next = rq->next; else l->head = rq->next;
    if (rq->next) rq->next->prev = rq->prev; else l->tail = rq->prev;
    rq->prev = rq->next = NULL;
    l->n--;
}

static req *list_pop(reqlist *l)
{
    req *rq = l->head;
    if (rq)
        list_unlink(rq);
    return rq;
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
}

/* ---- addresses -------------------------------------------------------------- */

/* "unix:/path", "host:port" or "[v6]:port"; a host name is resolved here. */
static int parse_addr(shard *sh, const char *addr, char *err, size_t errlen)
{
    if (strlen(addr) >= sizeof sh->addr) {
        set_err(err, errlen, "redis address '%.60s...': too long%s", addr, "");
        return -1;
    }
    strcpy(sh->addr, addr);
    if (strncmp(addr, "unix:", 5) == 0) {
        if (!addr[5] || strlen(addr + 5) >= sizeof sh->path) {
            set_err(err, errlen, "redis address '%s': %s", addr, "bad unix socket path");
            return -1;
        }
        sh->is_unix = 1;
        strcpy(sh->path, addr + 5);
        return 0;
    }
    char host[MP_REDIS_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hlen = colon ? (size_t)(colon - addr) : 0;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close + 1 != colon) {
            set_err(err, errlen, "redis address '%s': %s", addr, "expected [ipv6]:port");
            return -1;
        }
        h = addr + 1;
        hlen = (size_t)(close - h);
    }
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || hlen == 0 || !colon[1] || *end || port < 1 || port > 65535) {
        set_err(err, errlen, "redis address '%s': %s", addr, "expected host:port or unix:/path");
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    sh->port = (int)port;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        set_err(err, errlen, "redis address '%s': %s", addr, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    const void *a = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                               : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, sh->host, sizeof sh->host);
    freeaddrinfo(res);
    return 0;
}

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

static void conn_lost(conn *c, const char *why);
static void flush_queue(shard *sh);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void user_reply(req *rq, redisReply *reply);

static req *req_new(shard *sh, req_fn fn, int argc, const char **argv, const size_t *lens)
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

static void req_free(req *rq)
{
    redisFreeCommand(rq->cmd);
    free(rq);
}

static void on_failed_timer(struct ev_loop *loop, ev_timer *w, int revents);

/* The request will get its NULL answer on the next loop iteration. */
static void req_fail_later(mp_redis *r, req *rq)
{
    list_push(&r->failed, rq);
    if (!r->closing && !ev_is_active(&r->failed_timer)) {
        ev_timer_set(&r->failed_timer, 0., 0.);
        ev_timer_start(r->loop, &r->failed_timer);
    }
}

static void drain_failed(mp_redis *r)
{
    req *rq;
    while ((rq = list_pop(&r->failed))) {
        r->stats.failed++;
        rq->fn(rq, NULL);
        req_free(rq);
    }
}

static void on_failed_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    drain_failed(w->data);
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
    if (redisAsyncFormattedCommand(ac, on_reply, rq, cmd, len) != REDIS_OK) {
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
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    req *rq = privdata;
    shard *sh = rq->sh;
    mp_redis *r = sh->r;
    redisReply *rep = reply;
    list_unlink(rq);
    int barrier_done = rq == sh->barrier;
    if (!rep) {
        if (rq->via->ac == ac)
            conn_lost(rq->via, ac->errstr[0] ? ac->errstr : "connection lost");
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
                flush_queue(sh);
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
    req_free(rq);
    if (lift) {
        sh->barrier = NULL;
        flush_queue(sh);
    }
}

static int write_req(shard *sh, req *rq)
{
    if (redisAsyncFormattedCommand(sh->cmd.ac, on_reply, rq, rq->cmd, rq->len) != REDIS_OK)
        return -1;
    rq->sent = ev_now(sh->r->loop);
    rq->via = &sh->cmd;
    list_push(&sh->inflight, rq);
    sh->r->stats.commands++;
    return 0;
}

/* Writes what waits, unless a barrier holds it back. */
static void flush_queue(shard *sh)
{
    while (sh->cmd.state == C_UP && !sh->barrier && sh->queue.head) {
        req *rq = list_pop(&sh->queue);
        if (write_req(sh, rq) < 0)
            req_fail_later(sh->r, rq);
    }
}

/* Routes a new user request: written, queued or failed (see the top). */
static void submit(shard *sh, req *rq)
{
    mp_redis *r = sh->r;
    size_t waiting = sh->inflight.n + sh->queue.n;
    if (r->closing || sh->cmd.state == C_DOWN || waiting >= r->cfg.max_pending) {
        r->stats.refused++;
        req_fail_later(r, rq);
    } else if (sh->cmd.state == C_CONNECTING || sh->barrier || sh->queue.head) {
        list_push(&sh->queue, rq);
    } else if (write_req(sh, rq) < 0) {
        r->stats.refused++;
        req_fail_later(r, rq);
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
    req_fail_later(r, rq);
}

void mp_redis_command(mp_redis *r, int shard_i, mp_redis_reply_cb cb, void *ud, int argc, const char **argv,
                      const size_t *lens)
{
    req *rq = req_new(&r->shards[shard_i], user_reply, argc, argv, lens);
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
    req *rq = req_new(&r->shards[shard_i], user_reply, argc + 3, av, al);
    if (!rq) {
        mp_redis_fail(r, cb, ud);
        return;
    }
    rq->cb = cb;
    rq->ud = ud;
    rq->script = script;
    submit(&r->shards[shard_i], rq);
}

/* ---- connections ------------------------------------------------------------- */

static void conn_start(conn *c);

static const char *kind_name(const conn *c) { return c->kind == K_CMD ? "command" : "pub/sub"; }

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
static void conn_lost(conn *c, const char *why)
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
            req_fail_later(r, rq);
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
static void conn_drop(conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    conn_lost(c, why);
    if (ac)
        redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (status != REDIS_OK && c->ac == ac)
        conn_lost(c, ac->errstr);   /* hiredis frees ac after this */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    conn *c = ac->data;
    if (c->ac == ac)
        conn_lost(c, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void conn_up(conn *c)
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
        flush_queue(sh);
        if (r->ev.cmd_up)
            r->ev.cmd_up(r, sh->index, r->ev.ud);
    } else {
        sh->probe_sent = sh->probe_seen = 0;
        sh->probe_next = ev_now(r->loop);
        if (r->ev.sub_up)
            r->ev.sub_up(r, sh->index, r->ev.ud);
    }
}

/* An internal step's reply belongs to the current attempt of c, or to a
 * connection already given up (then: ignore it). */
static int step_current(req *rq, conn *c) { return c->serial == rq->serial && c->state == C_CONNECTING; }

static void step_fail(conn *c, const char *what, const redisReply *reply)
{
    char why[160];
    snprintf(why, sizeof why, "%s: %s", what, reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no answer");
    conn_drop(c, why);
}

static void hs_auth(req *rq, redisReply *reply)
{
    conn *c = rq->via;
    if (!reply || !step_current(rq, c))
        return;
    if (reply->type == REDIS_REPLY_ERROR)
        step_fail(c, "AUTH", reply);
}

static void hs_select(req *rq, redisReply *reply)
{
    conn *c = &rq->sh->cmd;
    if (reply && step_current(rq, c) && reply->type == REDIS_REPLY_ERROR)
        step_fail(c, "SELECT", reply);
}

static void hs_info(req *rq, redisReply *reply)
{
    shard *sh = rq->sh;
    if (!reply || !step_current(rq, &sh->cmd))
        return;
    const char *p = reply->type == REDIS_REPLY_STRING ? strstr(reply->str, "run_id:") : NULL;
    if (!p) {
        step_fail(&sh->cmd, "INFO server (no run_id)", reply);
        return;
    }
    p += 7;
    size_t n = strcspn(p, "\r\n");
    if (n >= sizeof sh->run_id)
        n = sizeof sh->run_id - 1;
    memcpy(sh->run_id, p, n);
    sh->run_id[n] = '\0';
}

/* CONFIG GET x -> [x, value]; an error (CONFIG renamed or forbidden) means
 * "not known to be durable". */
static int config_is(const redisReply *reply, const char *value)
{
    return reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
           reply->element[1]->type == REDIS_REPLY_STRING && strcmp(reply->element[1]->str, value) == 0;
}

static void hs_aof(req *rq, redisReply *reply)
{
    if (reply && step_current(rq, &rq->sh->cmd))
        rq->sh->aof_yes = config_is(reply, "yes");
}

static void hs_fsync(req *rq, redisReply *reply)
{
    if (reply && step_current(rq, &rq->sh->cmd))
        rq->sh->fsync_always = config_is(reply, "always");
}

static void hs_load(req *rq, redisReply *reply)
{
    if (reply && step_current(rq, &rq->sh->cmd) && reply->type == REDIS_REPLY_ERROR)
        step_fail(&rq->sh->cmd, "SCRIPT LOAD", reply);
}

static void hs_generation(req *rq, redisReply *reply)
{
    shard *sh = rq->sh;
    if (!reply || !step_current(rq, &sh->cmd))
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len == 0 || reply->len >= sizeof sh->gen) {
        step_fail(&sh->cmd, "generation check", reply);
        return;
    }
    memcpy(sh->gen, reply->str, reply->len);
    sh->gen[reply->len] = '\0';
    conn_up(&sh->cmd);
}

/* Sends one handshake step on the connecting context (hiredis buffers it
 * until the connect completes). */
static int send_step(conn *c, req_fn fn, int argc, const char **argv, const size_t *lens)
{
    shard *sh = c->sh;
    req *rq = req_new(sh, fn, argc, argv, lens);
    if (!rq)
        return -1;
    rq->serial = c->serial;
    if (c->kind == K_SUB) {
        /* the pub/sub context: only AUTH goes this way, before SUBSCRIBE */
        if (redisAsyncFormattedCommand(c->ac, on_reply, rq, rq->cmd, rq->len) != REDIS_OK) {
            req_free(rq);
            return -1;
        }
        rq->via = c;
        list_push(&sh->sub_steps, rq);
        return 0;
    }
    if (write_req(sh, rq) < 0) {
        req_free(rq);
        return -1;
    }
    return 0;
}

static void hs_fsync_then_generation(req *rq, redisReply *reply);

static int send_cmd_handshake(conn *c)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    sh->run_id[0] = '\0';
    sh->aof_yes = sh->fsync_always = 0;
    size_t l[4];
    int rc = 0;
    if (r->password) {
        const char *a[2] = { "AUTH", r->password };
        l[0] = 4; l[1] = strlen(r->password);
        rc |= send_step(c, hs_auth, 2, a, l);
    }
    if (r->cfg.db) {
        char db[16];
        const char *a[2] = { "SELECT", db };
        l[0] = 6; l[1] = (size_t)snprintf(db, sizeof db, "%d", r->cfg.db);
        rc |= send_step(c, hs_select, 2, a, l);
    }
    const char *info[2] = { "INFO", "server" };
    l[0] = 4; l[1] = 6;
    rc |= send_step(c, hs_info, 2, info, l);
    const char *aof[3] = { "CONFIG", "GET", "appendonly" };
    l[0] = 6; l[1] = 3; l[2] = 10;
    rc |= send_step(c, hs_aof, 3, aof, l);
    const char *fsync[3] = { "CONFIG", "GET", "appendfsync" };
    l[2] = 11;
    rc |= send_step(c, hs_fsync_then_generation, 3, fsync, l);
    for (mp_redis_script *s = r->scripts; s; s = s->next) {
        const char *a[3] = { "SCRIPT", "LOAD", s->source };
        l[0] = 6; l[1] = 4; l[2] = s->len;
        rc |= send_step(c, hs_load, 3, a, l);
    }
    return rc;
}

/* The generation check needs INFO's and CONFIG's answers: it is sent from
 * the last of them, behind the SCRIPT LOADs already in the pipe. */
static void hs_fsync_then_generation(req *rq, redisReply *reply)
{
    hs_fsync(rq, reply);
    shard *sh = rq->sh;
    conn *c = &sh->cmd;
    if (!reply || !step_current(rq, c))
        return;
    char cand[24];
    snprintf(cand, sizeof cand, "%012llx", (unsigned long long)(next_random(sh->r) & 0xffffffffffffull));
    const char *durable = sh->aof_yes && sh->fsync_always ? "1" : "0";
    const mp_redis_script *g = sh->r->generation;
    const char *a[8] = { "EVALSHA", g->sha, "2", "mp:gen", "mp:run", sh->run_id, durable, cand };
    size_t l[8] = { 7, 40, 1, 6, 6, strlen(sh->run_id), 1, strlen(cand) };
    req *gq = req_new(sh, hs_generation, 8, a, l);
    if (!gq) {
        conn_drop(c, "out of memory");
        return;
    }
    gq->serial = c->serial;
    gq->script = g;
    if (write_req(sh, gq) < 0) {
        req_free(gq);
        conn_drop(c, "cannot send the generation check");
    }
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static int send_sub_handshake(conn *c)
{
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    if (r->password) {
        const char *a[2] = { "AUTH", r->password };
        size_t l[2] = { 4, strlen(r->password) };
        if (send_step(c, hs_auth, 2, a, l) < 0)
            return -1;
    }
    return redisAsyncCommand(c->ac, on_sub_reply, c, "SUBSCRIBE %s", sh->probe) == REDIS_OK ? 0 : -1;
}

static void on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    conn *c = w->data;
    if (c->state == C_CONNECTING) {
        char why[96];
        snprintf(why, sizeof why, "no answer within %u ms", c->sh->r->cfg.connect_timeout_ms);
        c->sh->r->stats.timeouts++;
        conn_drop(c, why);
    } else if (c->state == C_DOWN) {
        conn_start(c);
    }
}

static void conn_start(conn *c)
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
    int rc = c->kind == K_CMD ? send_cmd_handshake(c) : send_sub_handshake(c);
    if (rc < 0)
        conn_drop(c, "cannot send the handshake");
}

/* ---- pub/sub ------------------------------------------------------------------ */

static int is(const redisReply *e, const char *s)
{
    return e->type == REDIS_REPLY_STRING && e->len == strlen(s) && memcmp(e->str, s, e->len) == 0;
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn *c = privdata;
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    redisReply *rep = reply;
    if (!rep) {
        if (c->ac == ac)
            conn_lost(c, ac->errstr[0] ? ac->errstr : "connection lost");
        return;
    }
    if (c->ac != ac || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *kind = rep->element[0], *chan = rep->element[1];
    int probe = chan->len == strlen(sh->probe) && memcmp(chan->str, sh->probe, chan->len) == 0;
    if (is(kind, "message") && rep->element[2]->type == REDIS_REPLY_STRING) {
        if (probe) {
            sh->probe_seen = strtoull(rep->element[2]->str, NULL, 10);
        } else if (c->state == C_UP) {
            r->stats.bus_messages++;
            if (r->ev.message)
                r->ev.message(r, sh->index, chan->str, chan->len, rep->element[2]->str, rep->element[2]->len,
                              r->ev.ud);
        }
    } else if (is(kind, "subscribe")) {
        if (probe) {
            if (c->state == C_CONNECTING)
                conn_up(c);
        } else if (c->state == C_UP && r->ev.subscribed) {
            r->ev.subscribed(r, sh->index, chan->str, chan->len, r->ev.ud);
        }
    }
}

static int add_subop(mp_redis *r, int shard_i, int unsub, const char *channel, size_t len)
{
    shard *sh = &r->shards[shard_i];
    if (r->closing || sh->sub.state != C_UP)
        return -1;
    if (sh->nops == sh->ops_cap) {
        size_t cap = sh->ops_cap ? sh->ops_cap * 2 : 64;
        subop *o = realloc(sh->ops, cap * sizeof *o);
        if (!o)
            return -1;
        sh->ops = o;
        sh->ops_cap = cap;
    }
    char *name = malloc(len + 1);
    if (!name)
        return -1;
    memcpy(name, channel, len);
    name[len] = '\0';
    sh->ops[sh->nops++] = (subop){ unsub, len, name };
    if (!ev_is_active(&r->batch_timer)) {
        ev_timer_set(&r->batch_timer, 0., 0.);
        ev_timer_start(r->loop, &r->batch_timer);
    }
    return 0;
}

int mp_redis_subscribe(mp_redis *r, int shard, const char *channel, size_t len)
{
    return add_subop(r, shard, 0, channel, len);
}

int mp_redis_unsubscribe(mp_redis *r, int shard, const char *channel, size_t len)
{
    return add_subop(r, shard, 1, channel, len);
}

#define BATCH_MAX 512   /* channels per SUBSCRIBE / UNSUBSCRIBE */

/* Sends each run of same-kind operations as one command, in order. */
static void send_batch(shard *sh)
{
    const char *av[BATCH_MAX + 1];
    size_t al[BATCH_MAX + 1];
    size_t i = 0;
    while (i < sh->nops && sh->sub.state == C_UP) {
        int unsub = sh->ops[i].unsub;
        int n = 0;
        av[0] = unsub ? "UNSUBSCRIBE" : "SUBSCRIBE";
        al[0] = strlen(av[0]);
        while (i < sh->nops && sh->ops[i].unsub == unsub && n < BATCH_MAX) {
            av[1 + n] = sh->ops[i].name;
            al[1 + n] = sh->ops[i].len;
            n++;
            i++;
        }
        if (redisAsyncCommandArgv(sh->sub.ac, on_sub_reply, &sh->sub, n + 1, av, al) != REDIS_OK) {
            conn_drop(&sh->sub, "cannot send SUBSCRIBE");
            break;
        }
    }
    for (size_t k = 0; k < sh->nops; k++)
        free(sh->ops[k].name);
    sh->nops = 0;
}

static void on_batch_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    mp_redis *r = w->data;
    for (int i = 0; i < r->nshards; i++)
        send_batch(&r->shards[i]);
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
        conn_drop(&sh->cmd, why);
    }
    if (sh->sub.state != C_UP || sh->cmd.state != C_UP || !r->cfg.probe_interval_ms)
        return;
    if (sh->probe_seen < sh->probe_sent) {
        if (now - sh->probe_at > limit) {
            r->stats.timeouts++;
            conn_drop(&sh->sub, "pub/sub probe not heard back");
        }
        return;
    }
    if (now < sh->probe_next)
        return;
    char n[24];
    int len = snprintf(n, sizeof n, "%llu", (unsigned long long)(sh->probe_sent + 1));
    const char *a[3] = { "PUBLISH", sh->probe, n };
    size_t l[3] = { 7, strlen(sh->probe), (size_t)len };
    req *rq = req_new(sh, probe_reply, 3, a, l);
    if (rq && write_req(sh, rq) == 0) {
        sh->probe_sent++;
        sh->probe_at = now;
        sh->probe_next = now + (double)r->cfg.probe_interval_ms / 1000.0;
    } else if (rq) {
        req_free(rq);
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    mp_redis *r = w->data;
    ev_tstamp now = ev_now(loop);
    for (int i = 0; i < r->nshards; i++)
        check_shard(&r->shards[i], now);
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
            ev_timer_init(&cs[k]->timer, on_conn_timer, 0., 0.);
            cs[k]->timer.data = cs[k];
            snprintf(cs[k]->err, sizeof cs[k]->err, "not connected yet");
        }
        snprintf(sh->probe, sizeof sh->probe, "mp:probe:%s:%d", r->node, i);
        if (parse_addr(sh, cfg->addrs[i], err, errlen) < 0) {
            mp_redis_free(r);
            return NULL;
        }
    }
    ev_timer_init(&r->failed_timer, on_failed_timer, 0., 0.);
    r->failed_timer.data = r;
    ev_timer_init(&r->batch_timer, on_batch_timer, 0., 0.);
    r->batch_timer.data = r;
    double tick = (double)r->cfg.command_timeout_ms / 4000.0;
    if (tick > 0.25)
        tick = 0.25;
    ev_timer_init(&r->tick, on_tick, tick, tick);
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
        conn_start(&r->shards[i].cmd);
        conn_start(&r->shards[i].sub);
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
            conn_drop(cs[k], "closing");   /* in-flight requests: NULL, now */
        }
        req *rq;
        while ((rq = list_pop(&sh->queue)))
            list_push(&r->failed, rq);
        for (size_t k = 0; k < sh->nops; k++)
            free(sh->ops[k].name);
        free(sh->ops);
    }
    drain_failed(r);
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

static uint64_t fnv1a64(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm". */
static int jump_hash(uint64_t key, int buckets)
{
    int64_t b = -1, j = 0;
    while (j < buckets) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1ll << 31) / (double)((key >> 33) + 1)));
    }
    return (int)b;
}

int mp_redis_shard_of(const mp_redis *r, const char *name, size_t len)
{
    return r->nshards == 1 ? 0 : jump_hash(fnv1a64(name, len), r->nshards);
}
