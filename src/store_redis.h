/* store_redis.h — the Redis store: store.h over a set of Redis shards, for
 * clusters (several nodes, or workers, sharing channels, history, cursors
 * and live delivery). store_redis.c says how; redis.h how it connects.
 */
#ifndef MP_STORE_REDIS_H
#define MP_STORE_REDIS_H

#include <ev.h>

#include "redis.h"
#include "store.h"

typedef struct mp_store_redis_config {
    /* Used: policies, default_policy, channel_idle_ms (channel state kept at
     * least 1 s), cursor_ttl_ms, clock_ms. Not used: max_channels,
     * max_bytes, max_cursors: Redis's maxmemory bounds what it holds (use
     * a noeviction policy: an evicted key is silently lost history). */
    mp_store_config store;
    mp_redis_config redis;      /* shards, password, db, timeouts, max_pending */
    uint32_t startup_timeout_ms;   /* mp_store_redis_new waits this long for every shard; default 3000 */
    uint32_t quiet_check_ms;    /* a watched channel silent this long has its position checked; default 3000 */
    uint32_t buffer_max;        /* bus messages held per channel while it catches up; default 10000 */
} mp_store_redis_config;

/* Defaults for everything but the addresses (mp_store_config_defaults,
 * mp_redis_config_defaults, and the fields above). */
void mp_store_redis_config_defaults(mp_store_redis_config *cfg);

/* Connects to every shard, running loop until all are up (see
 * mp_redis_wait_up: call it at startup, before the server's other
 * watchers), and returns the store; NULL with a message naming the address
 * in err if a shard is not reachable within startup_timeout_ms, an address
 * or a policy is invalid, or memory ran out. next_seq and append are not
 * implemented (MP_STORE_ENOTSUP): publish replaces them. */
mp_store *mp_store_redis_new(const mp_store_redis_config *cfg, struct ev_loop *loop, char *err, size_t errlen);

typedef struct mp_store_redis_stats {
    mp_redis_stats redis;       /* commands, errors, timeouts, reconnects ... */
    uint64_t watched;           /* channels watched now */
    uint64_t delivered;         /* on_message calls */
    uint64_t duplicates;        /* bus messages dropped: seq already delivered */
    uint64_t recoveries;        /* history reads after a gap, a reconnect or a quiet check */
    uint64_t recovered;         /* messages delivered from history rather than the bus */
    uint64_t resets;            /* on_reset calls */
    uint64_t quiet_checks;      /* positions read for silent channels */
    uint64_t overflows;         /* bus messages dropped past buffer_max (read from history instead) */
    uint64_t bad_messages;      /* bus payloads or history entries that could not be parsed */
    uint64_t script_errors;     /* scripts that answered an error (logged) */
    int shards, shards_up;      /* shards; those with both connections up */
} mp_store_redis_stats;

/* Fills out and returns 0, or returns -1 if st is not a Redis store. */
int mp_store_redis_get_stats(mp_store *st, mp_store_redis_stats *out);

#endif
