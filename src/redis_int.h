/* redis_int.h — what the pieces of the Redis shard module share (private).
 *
 * The module (redis.h) is split by concern:
 *   redis.c            lifetime: new, start, wait_up, free; the queries;
 *   redis_shard.c      which shard: addresses parsed (and resolved) once,
 *                      and the jump hash of a name to its shard;
 *   redis_req.c        requests: formatting, the pipeline, the failed FIFO,
 *                      scripts (EVALSHA, NOSCRIPT resent as EVAL);
 *   redis_conn.c       the two connections of a shard: connect, loss,
 *                      reconnect with backoff, and the tick (timeouts, probe);
 *   redis_handshake.c  what a new connection sends before it is up (AUTH,
 *                      SELECT, durability facts, SCRIPT LOAD, generation);
 *   redis_sub.c        pub/sub: subscribe batches and incoming messages.
 * This header holds the state they all touch and the calls between them.
 * Nothing outside redis*.c includes it.
 */
#ifndef MP_REDIS_INT_H
#define MP_REDIS_INT_H

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <stdio.h>

#include "redis.h"

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

static inline uint64_t next_random(mp_redis *r)
{
    /* xorshift64*: jitter and generation names, not secrets */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ull;
}

static inline void list_push(reqlist *l, req *rq)
{
    rq->in = l;
    rq->next = NULL;
    rq->prev = l->tail;
    if (l->tail) l->tail->next = rq; else l->head = rq;
    l->tail = rq;
    l->n++;
}

static inline void list_unlink(req *rq)
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

static inline req *list_pop(reqlist *l)
{
    req *rq = l->head;
    if (rq)
        list_unlink(rq);
    return rq;
}

static inline void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
}

static inline const char *kind_name(const conn *c) { return c->kind == K_CMD ? "command" : "pub/sub"; }

/* ---- addresses (redis_shard.c) --------------------------------------------- */

/* "unix:/path", "host:port" or "[v6]:port"; a host name is resolved here. */
int redis_parse_addr(shard *sh, const char *addr, char *err, size_t errlen);

/* ---- requests (redis_req.c) ------------------------------------------------- */

req *redis_req_new(shard *sh, req_fn fn, int argc, const char **argv, const size_t *lens);
void redis_req_free(req *rq);
/* The request will get its NULL answer on the next loop iteration. */
void redis_req_fail_later(mp_redis *r, req *rq);
/* Answers every request of r->failed with NULL, now. */
void redis_drain_failed(mp_redis *r);
void redis_on_failed_timer(struct ev_loop *loop, ev_timer *w, int revents);
/* hiredis's reply callback for every request of the command connection. */
void redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata);
int redis_write_req(shard *sh, req *rq);
/* Writes what waits, unless a barrier holds it back. */
void redis_flush_queue(shard *sh);

/* ---- connections (redis_conn.c) --------------------------------------------- */

void redis_conn_start(conn *c);
void redis_conn_lost(conn *c, const char *why);
void redis_conn_drop(conn *c, const char *why);
void redis_conn_up(conn *c);
void redis_on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents);
void redis_on_tick(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- handshakes (redis_handshake.c) ----------------------------------------- */

int redis_send_cmd_handshake(conn *c);
int redis_send_sub_handshake(conn *c);

/* ---- pub/sub (redis_sub.c) ---------------------------------------------------- */

void redis_on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);
void redis_on_batch_timer(struct ev_loop *loop, ev_timer *w, int revents);

#endif
