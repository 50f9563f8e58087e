/* net.h — sockets: the listener, client connections, their output and their
 * one way out.
 *
 * A connection starts as HTTP (http.c parses it); a successful upgrade turns
 * it into a WebSocket (ws.c). Either way its output is a queue of shared
 * frames (outq.h) that is flushed at most once per loop iteration: senders
 * only push and mark the connection dirty, and an ev_prepare pass — which runs
 * after every callback of the iteration — writes each dirty connection's
 * queue with writev. Under load, every frame queued to a connection in one
 * iteration leaves in one syscall. A connection has one ev_io: it asks for
 * EV_WRITE only while the kernel pushed back (EAGAIN).
 *
 * Closing: mp_conn_close_stream() queues a close frame and lets the queue drain;
 * mp_conn_close_after_flush() does the same for an HTTP answer; both then
 * shut down writing and linger briefly to read the peer's remainder, so the
 * last frame is not lost to a reset. mp_conn_abort() drops everything. The
 * memory itself is freed only in the prepare pass, never inside a callback
 * that may still hold the pointer.
 */
#ifndef MP_NET_H
#define MP_NET_H

#include <ev.h>
#include <netinet/in.h>
#include <stdint.h>

#include "frame.h"
#include "histogram.h"
#include "outq.h"
#include "tlist.h"

typedef enum { MP_CONN_HTTP, MP_CONN_WS, MP_CONN_CLOSING, MP_CONN_SSE } mp_conn_state;

enum {
    MP_CONN_DIRTY = 1 << 0,        /* on the dirty list: flush in this iteration */
    MP_CONN_CLOSE_AFTER = 1 << 1,  /* shut down once the queue drains */
    MP_CONN_DEAD = 1 << 2,         /* aborted: free in the prepare pass */
    MP_CONN_SLOW = 1 << 3,         /* over its outbound bound: close with 4001 */
    MP_CONN_WR_SHUT = 1 << 4,      /* closing: all sent, write side shut down */
    MP_CONN_REPLAY = 1 << 5,       /* a history replay waits for the queue to drain */
};

struct mp_http;
struct mp_ws;
struct mp_sse;

/* TLS progress of a connection on a TLS listener (tls.h). */
enum {
    MP_TLS_HANDSHAKING = 1 << 0,         /* SSL_accept not done: on the request list */
    MP_TLS_READ_WANTS_WRITE = 1 << 1,    /* SSL_read waits until the socket is writable */
    MP_TLS_WRITE_WANTS_READ = 1 << 2,    /* SSL_write waits until the socket is readable */
};

/* One client connection. Idle WebSocket size: sizeof(mp_conn) plus its
 * mp_ws session and identity; see docs/benchmarks.md for the measured total. */
typedef struct mp_conn {
    /* EV_READ always; EV_WRITE only while the kernel pushed back. First
     * member: the watcher is the connection, so io.data is free and holds
     * the connection's SSL on a TLS listener (NULL on a plain one): plain
     * connections pay nothing for TLS. */
    ev_io io;
    mp_tnode tnode;             /* on one timeout list (request, idle, pong, linger) */
    mp_outq out;
    struct mp_conn *dirty_next; /* dirty or dead list link */
    struct mp_http *http;       /* while state == MP_CONN_HTTP */
    struct mp_ws *ws;           /* while state == MP_CONN_WS */
    struct mp_sse *sse;         /* while state == MP_CONN_SSE (sse.h) */
    uint64_t id;
    uint8_t state;
    uint8_t flags;
    uint16_t close_code;        /* for a pending slow-consumer close */
    uint16_t remote_port;
    uint8_t remote_family;      /* AF_INET or AF_INET6 */
    uint8_t tls_flags;          /* MP_TLS_* */
    uint8_t remote_addr[16];    /* formatted only when asked: mp_conn_remote() */
} mp_conn;

/* The peer as "ip:port", in one of a few rotating static buffers (valid for
 * the next few calls: enough for one log line or one Lua call). */
const char *mp_conn_remote(const mp_conn *c);

/* Server-Sent Event streams (sse.c, docs/protocol.md SSE) as the code that
 * may not include sse.h reaches them: the layers below the protocols (net
 * timers, drain and close; hub fanout; delivery replays) and the protocol
 * files that sse.c itself includes (http dispatch, ws accessors). One table,
 * defined in sse.c, documented function by function in sse.h. */
struct mp_http_req;
struct mp_sub;
struct mp_store_item;
struct mp_store_history;
struct mp_ws_desc;
typedef struct mp_sse_ops {
    void (*open)(struct mp_http_req *req);
    void (*session_free)(struct mp_conn *c);
    void (*heartbeat)(struct mp_conn *c);
    void (*continue_replays)(struct mp_conn *c);
    void (*going_away)(struct mp_conn *c, long after_ms);
    void (*remap_routes)(const int *map);
    int (*send_live)(struct mp_conn *c, struct mp_sub *s, uint64_t seq, const char *epoch, mp_frame *f,
                     mp_frame **body);
    int (*send_stored)(struct mp_conn *c, struct mp_sub *s, const struct mp_store_item *item, const char *epoch);
    void (*send_reset)(struct mp_conn *c, struct mp_sub *s, const struct mp_store_history *h, const char *reason);
    int (*describe)(const struct mp_conn *c, struct mp_ws_desc *d);
    const char *(*kind)(const struct mp_conn *c);
    const char *(*device)(const struct mp_conn *c);
} mp_sse_ops;
extern const mp_sse_ops mp_sse_stream;

/* A connection that receives messages: a WebSocket or an SSE stream. Both
 * have the same outbound bound, slow-consumer close and history replays. */
static inline int mp_conn_streaming(const mp_conn *c)
{
    return c->state == MP_CONN_WS || c->state == MP_CONN_SSE;
}

/* Timeout lists (tlist.h), one per kind of wait. */
extern mp_tlist mp_request_list;   /* HTTP: whole request within request_timeout */
extern mp_tlist mp_idle_list;      /* WebSocket: silent for ping_interval -> ping; SSE: heartbeat */
extern mp_tlist mp_pong_list;      /* WebSocket: pinged, silent until idle_timeout -> close 4000 */
extern mp_tlist mp_linger_list;    /* closing: wait for the peer's FIN */

/* Binds and listens on every cfg.listeners entry (TLS contexts must be
 * loaded first: tls.h mp_tls_load). Returns -1 with a log line. */
int mp_net_listen(void);

/* Starts the accept watcher, the prepare pass and the timeout lists. */
void mp_net_start(void);

/* Applies changed timeouts (config reload) to the timeout lists. */
void mp_net_apply_timeouts(void);

/* Stops accepting (shutdown drain). */
void mp_net_stop_accepting(void);

/* Queues a reference to f on c and marks c dirty. A WebSocket connection whose
 * queue passes max_outbound_bytes is flagged slow and closed with 4001 in the
 * prepare pass; frames sent to it meanwhile are dropped. Returns 0 if queued. */
int mp_conn_send(mp_conn *c, mp_frame *f);

/* Sends a close frame with code and reason, then shuts the connection down
 * once the queue is written. Unregisters it from the hub at once. Code 0:
 * the close frame is queued already (wslay answered a client's close). An
 * SSE stream has no close frame: it just ends (code kept for on_close). */
void mp_conn_close_stream(mp_conn *c, uint16_t code, const char *reason);

/* Stops reading requests; shuts down once the queued answer is written. */
void mp_conn_close_after_flush(mp_conn *c);

/* Bytes queued below which a paused history replay continues. */
#define MP_REPLAY_RESUME_BYTES(max) ((max) / 4)

/* Drops the connection now (peer gone, write error). */
void mp_conn_abort(mp_conn *c);

/* Calls fn on every open WebSocket and SSE connection (shutdown, admin). fn may close it. */
void mp_net_each_ws(void (*fn)(mp_conn *c, void *arg), void *arg);

/* Frees every connection (exit path). */
void mp_net_free_all(void);

/* Message frames completely written to a socket, and the seconds from
 * publish until then (metrics.c shows both). */
extern uint64_t mp_net_delivered;
extern mp_histogram mp_net_deliver_latency;

#endif
