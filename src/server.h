/* server.h — the one process-wide state: the loop, the config, counters.
 *
 * moonpush runs one libev loop per process and every module reaches the loop
 * and the limits through `mp_server`. Nothing here is touched from another
 * thread: there are none.
 */
#ifndef MP_SERVER_H
#define MP_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { MP_ROUTE_WEBSOCKET, MP_ROUTE_PUBLISH, MP_ROUTE_HEALTH, MP_ROUTE_HISTORY, MP_ROUTE_PRESENCE, MP_ROUTE_METRICS,
               MP_ROUTE_SSE } mp_route_type;

/* Which hooks some plugin of a route's chain has: C calls into Lua only for
 * those, so a route without plugins costs no Lua call at all. */
enum {
    MP_HOOK_AUTH = 1 << 0,
    MP_HOOK_RATELIMIT = 1 << 1,
    MP_HOOK_ROUTE = 1 << 2,
    MP_HOOK_FORMAT = 1 << 3,
    MP_HOOK_ON_CONNECT = 1 << 4,
    MP_HOOK_ON_CLOSE = 1 << 5,
    MP_HOOK_ON_MESSAGE = 1 << 6,
    MP_HOOK_ON_ACK = 1 << 7,
};

typedef struct mp_route {
    char *path;            /* path prefix, without trailing slash (except "/") */
    size_t path_len;
    mp_route_type type;
    unsigned hooks;        /* MP_HOOK_* */
    int budget;            /* Lua instructions per hook call */
    int allow_duplicates;  /* several connections per user+device (else the newest replaces) */
    int acks;              /* clients must ack; unacked messages are resent */
    double ack_timeout;    /* seconds before the first resend */
    double ack_factor;     /* backoff multiplier per try */
    double ack_jitter;     /* +- fraction of each wait, so resends don't synchronise */
    int ack_max_tries;     /* sends of an unacked message before close 4004 */
    struct mp_cors *cors;  /* NULL: no CORS headers (cors.h) */
    int deflate;           /* websocket: permessage-deflate offered to clients (deflate.h) */
    int deflate_threshold; /* payloads shorter than this go plain */
    int deflate_level;     /* zlib level 1..9 */
} mp_route;

/* History limits for channels whose name matches pattern (exact, prefix*, *). */
typedef struct mp_history_policy {
    char *pattern;
    uint32_t max_messages;
    uint64_t max_age_ms;
} mp_history_policy;

typedef struct mp_history_config {
    uint32_t max_messages;         /* default policy */
    uint64_t max_age_ms;
    mp_history_policy *policies;   /* first match wins */
    int npolicies;
    size_t max_channels;           /* channel states in the store */
    size_t max_bytes;
    uint64_t channel_idle_ms;
    size_t max_cursors;
    uint64_t cursor_ttl_ms;
} mp_history_config;

/* One listening address; TLS when cert is set (tls.c loads the files). */
#define MP_MAX_LISTENERS 8
typedef struct mp_listener_config {
    char host[64];
    int port;
    char cert[512];        /* "" = plain */
    char key[512];
} mp_listener_config;

typedef struct mp_config {
    char listen_host[64];  /* the first listener's, for logs */
    int listen_port;
    mp_listener_config listeners[MP_MAX_LISTENERS];
    int nlisteners;        /* fixed at start: a reload keeps them (TLS files are reread) */
    int max_connections;
    size_t max_header_bytes;
    size_t max_body_bytes;
    size_t max_batch;
    size_t max_message_bytes;
    size_t max_outbound_bytes;
    size_t max_subscriptions;
    size_t max_channels;
    int socket_send_buffer;  /* SO_SNDBUF for WebSocket sockets */
    int plugin_budget;       /* Lua instructions per hook call (routes may override) */
    double request_timeout;  /* seconds */
    double idle_timeout;
    double ping_interval;
    double shutdown_grace;   /* seconds SIGTERM waits for queues to drain */
    mp_route *routes;
    int nroutes;
    mp_history_config history;
    char admin_socket[108];    /* "" = none */
    char admin_host[64];       /* "" = no TCP admin */
    int admin_port;
    char admin_token[128];
    int log_level;             /* MP_LOG_* */
    int log_json;              /* 1: JSON lines, 0: logfmt */
    int log_access;            /* an access line per HTTP request */
    char log_file[256];        /* "" = stderr */
    char pid_file[256];        /* "" = none (pidfile.h) */
} mp_config;

typedef struct mp_stats {
    uint64_t connections_accepted;
    uint64_t connections_rejected;   /* over max_connections */
    uint64_t http_requests;
    uint64_t ws_handshakes;
    uint64_t auth_denials;
    uint64_t messages_published;
    uint64_t frames_queued;          /* deliveries handed to outbound queues */
    uint64_t writev_calls;
    uint64_t slow_consumer_closes;
    uint64_t idle_timeout_closes;
    uint64_t plugin_errors;
    uint64_t messages_stored;
    uint64_t publishes_refused;      /* the store refused: answered 503, sent to nobody */
    uint64_t messages_replayed;      /* frames sent from history (resume, retry) */
    uint64_t acks;
    uint64_t resends;
    uint64_t ack_timeout_closes;
    uint64_t replaced_closes;
    uint64_t kicks;
    uint64_t dropped_slow;           /* message frames never sent to a slow consumer */
    uint64_t dropped_format;         /* recipients skipped because a format hook failed */
    uint64_t reloads;
    uint64_t reload_failures;
    uint64_t auth_cache_hits;        /* requests answered by a connection's cached identity */
    uint64_t auth_cache_misses;      /* cacheable requests that ran the auth chain */
} mp_stats;

struct mp_store;

typedef struct mp_server {
    struct ev_loop *loop;
    mp_config cfg;
    struct mp_store *store;  /* seq, history, device cursors (store.h) */
    mp_stats stats;
    int nconns;              /* open client connections (HTTP + WebSocket) */
    int nws;                 /* of which WebSocket */
    int nsse;                /* of which SSE streams */
    ev_tstamp started;
    char boot_id[9];         /* 8 hex chars, new each start: prefix of message ids */
    int stopping;
} mp_server;

extern mp_server mp;

/* Reloads the config file and plugins (SIGHUP, admin reload()). Returns 0
 * with a summary of what changed, or -1 with why it was refused. */
int mp_server_reload(char *summary, size_t summary_len, char *err, size_t errlen);

#endif
