/* sse.h — Server-Sent Events: a `type = "sse"` route streams messages to
 * clients that cannot use WebSocket (docs/protocol.md, SSE).
 *
 * A GET is authenticated by the route's auth chain exactly like a WebSocket
 * handshake (same identities, same `channels=a,b`, same per-channel checks),
 * then answered `200 text/event-stream` without a length: the connection
 * stays open and carries events until one side closes it.
 *
 * Sharing: a message reaches SSE subscribers as two queue entries, written
 * with one writev — a small `id: <position>\n` line of the recipient's own,
 * and `data: <envelope>\n\n`, made once per message for every SSE recipient
 * (like the WebSocket frame). The id is the recipient's position on every
 * channel it is on, so a reconnect with Last-Event-ID resumes them all. It
 * names channels by their place in the connection's list (personal channel
 * first, then `channels` in the order given, repeats dropped) plus a hash of
 * that list, and epochs by a 32-bit hash: at most MP_SSE_ID_MAX bytes.
 *
 * Heartbeats (`: hb`) go every timeouts.ping_ms on the shared idle list; the
 * outbound bound and slow-consumer close are the WebSocket ones (net.c).
 */
#ifndef MP_SSE_H
#define MP_SSE_H

#include <stdint.h>

#include "http.h"
#include "hub.h"
#include "net.h"
#include "ws.h"

/* The functions below are reached from elsewhere only through the table
 * mp_sse_stream (net.h): sse.c includes http.h and ws.h, so they, and the
 * layers below, may not include this header. */

/* Channels an SSE stream may ask for besides its personal one: bounds the id. */
#define MP_SSE_MAX_CHANNELS 32
/* Longest event id: "1.<8 hex>" + 33 x ".<seq>-<8 hex>" is at most 1000. */
#define MP_SSE_ID_MAX 1024

struct mp_store_item;
struct mp_store_history;

/* Answers a GET on an sse route: the stream, or a JSON error (401, 403, ...). */
void mp_sse_open(mp_http_req *req);

/* A live message on s's channel: queues [id line][shared body]. *body is the
 * shared `data:` part, made from the WebSocket frame f by the first SSE
 * recipient (the caller drops it after the fanout). Returns 0 if queued. */
int mp_sse_send_live(mp_conn *c, mp_sub *s, uint64_t seq, const char *epoch, mp_frame *f, mp_frame **body);

/* A replayed message from history (delivery.c). Returns 0 if queued. */
int mp_sse_send_stored(mp_conn *c, mp_sub *s, const struct mp_store_item *item, const char *epoch);

/* An `event: reset` (the resume could not be honoured; delivery.c). */
void mp_sse_send_reset(mp_conn *c, mp_sub *s, const struct mp_store_history *h, const char *reason);

/* The queue drained: continue paused history replays. */
void mp_sse_continue_replays(mp_conn *c);

/* Queues the shared `: hb` comment. */
void mp_sse_heartbeat(mp_conn *c);

/* Shutdown: `retry: after_ms` so EventSource comes back then (close follows). */
void mp_sse_going_away(mp_conn *c, long after_ms);

/* After a config reload: map[old route index] = new index, or -1. */
void mp_sse_remap_routes(const int *map);

/* What the admin, metrics and presence see (ws.c falls back to these). */
int mp_sse_describe(const mp_conn *c, mp_ws_desc *d);
const char *mp_sse_kind(const mp_conn *c);
const char *mp_sse_device(const mp_conn *c);

/* Unsubscribes everything, runs on_close and frees the session (net.c). */
void mp_sse_session_free(mp_conn *c);

#endif
