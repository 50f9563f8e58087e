/* ws.h — WebSocket connections: the upgrade, wslay for input, client frames.
 *
 * Input goes through wslay's event API, which validates framing, masking,
 * fragmentation, control frames and message size, and answers pings and
 * closes. A wslay context embeds a 4 KB buffer, so a connection holds one
 * only while a client message is actually arriving: it is created on the
 * first byte and released as soon as the bytes fed to it end exactly on a
 * complete, unfragmented message. An idle connection holds none.
 *
 * Output bypasses wslay's queue (which copies every payload): data frames are
 * pre-encoded shared frames pushed straight onto the connection's queue, and
 * wslay's own output (pongs, closes) is routed through the same queue so
 * frames never interleave.
 */
#ifndef MP_WS_H
#define MP_WS_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "net.h"

/* Completes (101) or refuses (4xx/5xx) an upgrade request; rest holds the
 * bytes that followed the request, already WebSocket data. */
void mp_ws_handshake(mp_http_req *req, const uint8_t *rest, size_t rest_len);

/* Answers 426 (with Upgrade: websocket) to a plain request on a WebSocket route. */
void mp_ws_upgrade_required(mp_conn *c);

void mp_ws_feed(mp_conn *c, const uint8_t *data, size_t len);

struct mp_sub;

/* What the admin sees of a WebSocket connection. Valid until the loop runs. */
typedef struct mp_ws_desc {
    const char *user, *device, *kind;
    int route_index;
    const struct mp_sub *subs;
} mp_ws_desc;

/* Fills d for a WebSocket or SSE connection; returns -1 for any other. */
int mp_ws_describe(const mp_conn *c, mp_ws_desc *d);

/* The device kind / device id of a WebSocket or SSE connection ("" otherwise). */
const char *mp_ws_kind(const mp_conn *c);
const char *mp_ws_device(const mp_conn *c);

/* The index of the connection's route if that route formats messages
 * itself (a format hook), else -1. */
int mp_ws_format_route(const mp_conn *c);

/* A frame on an ack route went out unacked: make sure the retry timer runs. */
void mp_ws_awaiting_ack(mp_conn *c);

/* The queue drained: continue the connection's paused history replays. */
void mp_ws_continue_replays(mp_conn *c);

/* After a config reload: map[old route index] = new index, or -1. */
void mp_ws_remap_routes(const int *map);

/* The frame c gets for the shared message frame f: f itself, or on a
 * connection that negotiated permessage-deflate and for a payload at its
 * route's threshold or above, f's compressed form (made once, shared). */
mp_frame *mp_ws_wire_frame(mp_conn *c, mp_frame *f);

/* Queues a text frame holding len bytes of text (copied). */
void mp_ws_send_text(mp_conn *c, const char *text, size_t len);

/* Queues obj as a compact JSON text frame; takes ownership of obj (NULL is
 * ignored, so a failed json_pack needs no check at the call). */
struct json_t;
void mp_ws_send_json(mp_conn *c, struct json_t *obj);

/* Queues a ping (the connection was silent for timeouts.ping_ms). */
void mp_ws_ping(mp_conn *c);

/* Checks the channels an identity asked for at connect (names, permissions,
 * limits.max_subscriptions, room in the hub). Returns 0, or answers the
 * request (400, 403, 503) and returns -1. SSE streams use it too. */
struct mp_identity;
int mp_ws_check_channels(mp_conn *c, const struct mp_identity *id);

/* Unsubscribes everything and frees the session (called by net.c). */
void mp_ws_session_free(mp_conn *c);

/* Frees the (by then empty) index of connections by device; after
 * mp_net_free_all. */
void mp_ws_free_all(void);

/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)), into out
 * (29 bytes with NUL). Returns 0, or -1 if the key is not 16 bytes of base64. */
int mp_ws_accept_key(const char *key, char out[29]);

#endif
