/* redis.h — connections to a set of Redis shards, on the server's libev loop.
 *
 * A shard is one independent Redis instance ("127.0.0.1:6379",
 * "[::1]:6380", "unix:/run/redis.sock"). Per shard this module keeps two
 * connections (hiredis 0.14 async API, hiredis/adapters/libev.h):
 *
 *   - the command connection: every command of the shard goes down it,
 *     pipelined; replies come back in order, so callbacks run in the order
 *     the commands were issued (see the NOSCRIPT note in redis_req.c for the
 *     one exception);
 *   - the pub/sub connection: SUBSCRIBE / UNSUBSCRIBE (batched, once per
 *     loop iteration) and the messages they bring.
 *
 * Each connects on its own, reconnects on its own with exponential backoff
 * and jitter, and reports up/down through mp_redis_events. A command
 * connection is "up" only after its handshake: AUTH, SELECT, the scripts
 * loaded, and the generation check (mp_redis_generation;
 * redis_handshake.c says what it is). Nothing blocks the loop: connects
 * are non-blocking (a host name is resolved once, in mp_redis_new), every
 * wait has a timer.
 *
 * Requests: mp_redis_command / mp_redis_eval call their callback exactly
 * once: with the reply (possibly an error reply), or with NULL when the
 * answer will never come (the shard is down, did not answer within
 * command_timeout_ms, more than max_pending requests wait for it, or the
 * module is being freed). A NULL answer is never given from inside the
 * call that issued the request: failures are delivered from the loop, in
 * issue order (mp_redis_free delivers what is left before it returns).
 * While a shard's command connection is connecting, requests wait (at
 * most max_pending, at most connect_timeout_ms); while it is down they
 * fail at once.
 *
 * Memory: the module owns its connections and requests; argv strings are
 * copied (formatted) when a request is issued. Replies are hiredis's, valid
 * for the duration of the callback.
 */
#ifndef MP_REDIS_H
#define MP_REDIS_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mp_redis mp_redis;
typedef struct mp_redis_script mp_redis_script;

#define MP_REDIS_ADDR_MAX 128      /* an address as configured, at most 127 bytes */
#define MP_REDIS_GEN_MAX 32        /* a generation, at most 31 bytes */

typedef struct mp_redis_config {
    const char *const *addrs;      /* shards, in order: the order is the sharding (jump hash) */
    size_t naddrs;
    const char *password;          /* NULL or "": no AUTH */
    int db;                        /* SELECT on the command connections (pub/sub has no db) */
    uint32_t connect_timeout_ms;   /* connect + handshake; default 2000 */
    uint32_t command_timeout_ms;   /* a command unanswered this long drops the connection; default 5000 */
    uint32_t backoff_min_ms;       /* first reconnect delay; default 100 */
    uint32_t backoff_max_ms;       /* largest reconnect delay; default 5000 */
    uint32_t probe_interval_ms;    /* pub/sub liveness probe period; default 1000 */
    size_t max_pending;            /* per shard: requests written or waiting; default 100000 */
} mp_redis_config;

/* Fills cfg's timing and bound fields with the defaults (addrs untouched). */
void mp_redis_config_defaults(mp_redis_config *cfg);

typedef struct mp_redis_events {
    /* The command connection finished its handshake: requests go through,
     * the generation is known. */
    void (*cmd_up)(mp_redis *r, int shard, void *ud);
    /* It was lost; requests in flight get NULL answers. */
    void (*cmd_down)(mp_redis *r, int shard, void *ud);
    /* The pub/sub connection is (again) ready: subscribe what is wanted. */
    void (*sub_up)(mp_redis *r, int shard, void *ud);
    /* It was lost: every subscription of the shard is gone, messages
     * published meanwhile will not come. */
    void (*sub_down)(mp_redis *r, int shard, void *ud);
    /* Redis confirmed a SUBSCRIBE: from now on messages on channel come. */
    void (*subscribed)(mp_redis *r, int shard, const char *channel, size_t len, void *ud);
    /* A message on a subscribed channel. */
    void (*message)(mp_redis *r, int shard, const char *channel, size_t len, const char *payload,
                    size_t plen, void *ud);
    void *ud;
} mp_redis_events;

typedef struct mp_redis_stats {
    uint64_t commands;             /* requests written to a command connection */
    uint64_t error_replies;        /* error replies (NOSCRIPT retried is not one) */
    uint64_t failed;               /* requests answered NULL */
    uint64_t refused;              /* ... of which never written: shard down or max_pending */
    uint64_t timeouts;             /* connections dropped for command_timeout_ms or a lost probe */
    uint64_t reconnects;           /* connections up again after a loss */
    uint64_t noscript;             /* EVALSHA answered NOSCRIPT, sent again as EVAL */
    uint64_t bus_messages;         /* pub/sub messages received (probes excluded) */
} mp_redis_stats;

typedef void (*mp_redis_reply_cb)(mp_redis *r, const redisReply *reply, void *ud);

/* Parses the addresses (a host name is resolved here, once: resolving on
 * the loop would block it) and prepares the shards; nothing connects yet.
 * NULL with a message in err on a bad address or out of memory. */
mp_redis *mp_redis_new(const mp_redis_config *cfg, struct ev_loop *loop, const mp_redis_events *ev,
                       char *err, size_t errlen);

/* Registers a Lua script (source copied; its SHA1 computed here). Scripts
 * registered before mp_redis_start are loaded by every handshake. NULL if
 * out of memory. Owned by r. */
mp_redis_script *mp_redis_script_add(mp_redis *r, const char *name, const char *source);

/* Starts connecting every shard. */
void mp_redis_start(mp_redis *r);

/* Runs the loop (EV_RUN_ONCE at a time: call it at startup, before the
 * server's own watchers are started) until every shard has both
 * connections up, or timeout_ms passed: then -1 and err names the first
 * shard not up and why ("redis 127.0.0.1:6390: Connection refused"). */
int mp_redis_wait_up(mp_redis *r, uint32_t timeout_ms, char *err, size_t errlen);

/* Closes every connection. Requests still waiting get their NULL answer
 * first (from inside this call); events are not called any more. Not to
 * be called from inside one of r's callbacks. NULL is a no-op. */
void mp_redis_free(mp_redis *r);

int mp_redis_nshards(const mp_redis *r);
const char *mp_redis_shard_addr(const mp_redis *r, int shard);

/* The shard for a name: jump consistent hash (Lamping & Veach) of its
 * 64-bit FNV-1a hash. Stable: adding a shard at the END of the list moves
 * only about 1/n of the names, all of them to the new shard. Never change
 * the hash: every node of a cluster must agree. */
int mp_redis_shard_of(const mp_redis *r, const char *name, size_t len);

/* The shard's generation ("" while its command connection is not up). */
const char *mp_redis_generation(const mp_redis *r, int shard);

/* A random id for this mp_redis (12 hex digits), e.g. to make epochs. */
const char *mp_redis_node_id(const mp_redis *r);

int mp_redis_cmd_up(const mp_redis *r, int shard);
int mp_redis_sub_up(const mp_redis *r, int shard);

/* Counts the pub/sub connection's ups: a subscription made under one
 * value is gone once it changed. */
uint64_t mp_redis_sub_serial(const mp_redis *r, int shard);

/* Sends argv (argc strings of lens bytes) on the shard's command connection. */
void mp_redis_command(mp_redis *r, int shard, mp_redis_reply_cb cb, void *ud, int argc, const char **argv,
                      const size_t *lens);

/* EVALSHA script with nkeys keys: argv holds the keys, then the arguments
 * (argc in all). NOSCRIPT (someone ran SCRIPT FLUSH) is handled inside:
 * the script is sent again as EVAL. */
void mp_redis_eval(mp_redis *r, int shard, const mp_redis_script *script, mp_redis_reply_cb cb, void *ud,
                   int nkeys, int argc, const char **argv, const size_t *lens);

/* Answers cb with NULL from the loop, in order with other failures: for a
 * request that cannot even be built (e.g. it needs a generation the shard
 * does not have yet). */
void mp_redis_fail(mp_redis *r, mp_redis_reply_cb cb, void *ud);

/* Subscribes / unsubscribes channel on the shard's pub/sub connection;
 * batched: the commands go out once per loop iteration, in call order.
 * Returns -1 (nothing done) if that connection is not up. Only unsubscribe
 * what was subscribed under the current mp_redis_sub_serial. */
int mp_redis_subscribe(mp_redis *r, int shard, const char *channel, size_t len);
int mp_redis_unsubscribe(mp_redis *r, int shard, const char *channel, size_t len);

void mp_redis_get_stats(const mp_redis *r, mp_redis_stats *out);

#endif
