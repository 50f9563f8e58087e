/* ws_session.c — a WebSocket session's life and its input: wslay's event
 * API as the adapter for the bytes a client sends (a reader only while a
 * message is arriving, see ws.h), wslay's control frames routed through the
 * connection's queue, pings, and the session's end.
 */
#include "ws_int.h"

#include <stdlib.h>
#include <string.h>

#include "deadlines.h"
#include "deflate.h"
#include "delivery.h"
#include "devices.h"
#include "hub.h"
#include "log.h"
#include "server.h"

/* The bytes of the current read, handed to wslay by recv_cb. */
static const uint8_t *feed_ptr;
static size_t feed_left;

static mp_frame *ping_frame;        /* one shared ping for every connection */

/* ---- wslay callbacks ---------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    mp_ws *ws = user;
    if (feed_left == 0 || ws->detached) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < feed_left ? len : feed_left;
    memcpy(buf, feed_ptr, n);
    feed_ptr += n;
    feed_left -= n;
    ws->rd->fed += n;
    return (ssize_t)n;
}

/* wslay's own output is only control frames (pong, close): at most 127
 * bytes each, written in pieces (header, then payload). send_cb gathers the
 * pieces into whole frames here, so each becomes one queue entry and a close
 * wslay generated with no reason can be given the documented one. wslay
 * drains synchronously (send_cb never blocks), so a frame never spans calls
 * for two connections. */
static uint8_t ctl_buf[2 + 125];
static size_t ctl_len;

static const char *close_reason(uint16_t code)
{
    switch (code) {
    case 1000: return "bye";
    case 1002: return "protocol error";
    case 1003: return "binary messages not supported";
    case 1007: return "invalid utf-8";
    case 1009: return "message too big";
    case 1001: return "server shutting down";
    case 1006: return "connection lost";
    case 1011: return "internal error";
    case 4000: return "idle timeout";
    case 4001: return "slow consumer";
    case 4005: return "token expired";
    default:   return "";
    }
}

/* Whether the close frame b is wslay's echo of the client's close: one was
 * received, and this carries its code (or none, as it did). A close of our
 * own queued before the client's arrived carries our code. */
static int is_close_echo(wslay_event_context_ptr ctx, uint16_t code)
{
    uint16_t got = wslay_event_get_status_code_received(ctx);
    return wslay_event_get_close_received(ctx) && (code == 0 || code == WSLAY_CODE_NO_STATUS_RCVD || code == got);
}

static int emit_control_frame(wslay_event_context_ptr ctx, mp_conn *c, const uint8_t *b, size_t len)
{
    mp_frame *f;
    if ((b[0] & 0x0f) == MP_WS_CLOSE && len == 2 && !wslay_event_get_close_received(ctx)) {
        /* wslay closes a framing error (oversized or fragmented control
         * frame, bad opcode) without a code: it is a protocol error. */
        f = mp_frame_ws_close(1002, close_reason(1002));
    } else if ((b[0] & 0x0f) == MP_WS_CLOSE && is_close_echo(ctx, len >= 4 ? (uint16_t)(b[2] << 8 | b[3]) : 0)) {
        /* The answer to a client's close (wslay echoes the client's code, or
         * none): always 1000 "bye", as docs/protocol.md says. RFC 6455 5.5.1
         * lets the answer carry any code; echoing would send the client's
         * 1001 or 4000 back with our reasons ("server shutting down", "idle
         * timeout") for things that did not happen. */
        f = mp_frame_ws_close(1000, close_reason(1000));
    } else if ((b[0] & 0x0f) == MP_WS_CLOSE && len >= 4) {
        /* wslay's own close goes out with the documented reason. */
        uint16_t code = (uint16_t)(b[2] << 8 | b[3]);
        f = mp_frame_ws_close(code, close_reason(code));
    } else {
        f = mp_frame_copy(b, len);
    }
    if (!f)
        return -1;
    mp_conn_send(c, f);
    mp_frame_unref(f);
    return 0;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
    (void)flags;
    mp_ws *ws = user;
    mp_conn *c = ws->conn;
    if (ws->detached)
        return (ssize_t)len;   /* the connection is closing on its own terms */
    size_t take = len < sizeof ctl_buf - ctl_len ? len : sizeof ctl_buf - ctl_len;
    memcpy(ctl_buf + ctl_len, data, take);
    ctl_len += take;
    while (ctl_len >= 2) {
        size_t flen = 2 + (ctl_buf[1] & 0x7f);
        if (ctl_len < flen)
            break;
        if (emit_control_frame(ctx, c, ctl_buf, flen) < 0) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        memmove(ctl_buf, ctl_buf + flen, ctl_len - flen);
        ctl_len -= flen;
    }
    return (ssize_t)take;
}

static void frame_start_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *a, void *user)
{
    mp_ws *ws = user;
    uint64_t len = a->payload_length;
    if (a->opcode == WSLAY_CONNECTION_CLOSE && len == 1) {
        /* A status code is two bytes; wslay would answer with an empty close. */
        wslay_event_queue_close(ctx, 1002, NULL, 0);
        wslay_event_shutdown_read(ctx);
        return;
    }
    /* Client frames carry a 4-byte mask (wslay rejects those that do not). */
    mp_ws_reader *rd = ws->rd;
    rd->frame_size = 2 + 4 + len + (len < 126 ? 0 : len <= 0xffff ? 2 : 8);
    if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME || a->opcode == WSLAY_CONTINUATION_FRAME) {
        rd->in_fragment = !a->fin;
        rd->msg_bytes = a->opcode == WSLAY_CONTINUATION_FRAME ? rd->msg_bytes + len : len;
        /* Refuse on the declared length: waiting for the bytes of an
         * oversized message would only let a client make us buffer them. */
        if (rd->msg_bytes > mp.cfg.max_message_bytes && wslay_event_get_read_enabled(ctx)) {
            wslay_event_queue_close(ctx, 1009, NULL, 0);
            wslay_event_shutdown_read(ctx);
        }
    }
}

static void frame_end_cb(wslay_event_context_ptr ctx, void *user)
{
    (void)ctx;
    mp_ws *ws = user;
    ws->rd->framed += ws->rd->frame_size;
    ws->rd->frame_size = 0;
}

/* A text message with RSV1 (wslay allows it only on connections that
 * negotiated deflate): inflated into at most max_message_bytes, so a small
 * message that would inflate past it closes 1009 like a big one does. wslay
 * skipped the UTF-8 check for it; json_loadb in handle_text makes it. */
static void handle_compressed(wslay_event_context_ptr ctx, mp_conn *c, const uint8_t *msg, size_t len)
{
    uint8_t *text = NULL;
    size_t tlen = 0;
    int rc = mp_inflate_message(msg, len, mp.cfg.max_message_bytes, &text, &tlen);
    if (rc == MP_INFLATE_OK) {
        handle_text(c, text, tlen);
        free(text);
    } else if (rc == MP_INFLATE_TOO_BIG) {
        wslay_event_queue_close(ctx, 1009, NULL, 0);
        wslay_event_shutdown_read(ctx);
    } else if (rc == MP_INFLATE_BAD) {
        mp_conn_close_stream(c, 1007, "bad compressed data");
    } else {
        mp_conn_close_stream(c, 1011, "internal error");
    }
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a, void *user)
{
    mp_ws *ws = user;
    mp_conn *c = ws->conn;
    if (ws->detached)
        return;
    /* wslay has validated framing, masking, size and UTF-8 already. A pong
     * it queued for a ping that arrived mid-message must leave before our
     * answer to the message: flush its queue first. */
    if (wslay_event_want_write(ctx))
        wslay_event_send(ctx);
    if (a->opcode == WSLAY_BINARY_FRAME)
        wslay_event_queue_close(ctx, 1003, NULL, 0);
    else if (a->opcode == WSLAY_TEXT_FRAME && c->state == MP_CONN_WS && wslay_get_rsv1(a->rsv))
        handle_compressed(ctx, c, a->msg, a->msg_length);
    else if (a->opcode == WSLAY_TEXT_FRAME && c->state == MP_CONN_WS)
        handle_text(c, a->msg, a->msg_length);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_frame_recv_start_callback = frame_start_cb,
    .on_frame_recv_end_callback = frame_end_cb,
    .on_msg_recv_callback = msg_cb,
};

static void release_reader(mp_ws *ws)
{
    if (ws->rd) {
        wslay_event_context_free(ws->rd->wslay);
        free(ws->rd);
        ws->rd = NULL;
    }
}

void session_destroy(mp_ws *ws)
{
    release_reader(ws);
    free(ws);
}

static size_t str_size(const char *s) { return strlen(s) + 1; }

static char *put_str(char **cursor, const char *s)
{
    char *out = *cursor;
    size_t n = str_size(s);
    memcpy(out, s, n);
    *cursor += n;
    return out;
}

/* A session holding a copy of id's user, device, kind and allow patterns
 * (id itself stays the caller's). NULL if out of memory. */
mp_ws *session_new(const mp_identity *id)
{
    size_t bytes = str_size(id->user) + str_size(id->device) + str_size(id->kind);
    for (int i = 0; i < id->nallow; i++)
        bytes += str_size(id->allow[i]);
    size_t ptrs = sizeof(char *) * (size_t)id->nallow;
    mp_ws *ws = calloc(1, sizeof *ws + ptrs + bytes);
    if (!ws)
        return NULL;
    mp_identity *own = &ws->ident;
    own->allow = (char **)(void *)ws->data;   /* data[] is pointer-aligned: it follows a pointer-aligned struct */
    own->nallow = id->nallow;
    char *cursor = ws->data + ptrs;
    own->user = put_str(&cursor, id->user);
    own->device = put_str(&cursor, id->device);
    own->kind = put_str(&cursor, id->kind);
    ws->device_tag = mp_devices_tag(mp_devices_hash(own->user, own->device));
    for (int i = 0; i < id->nallow; i++)
        own->allow[i] = put_str(&cursor, id->allow[i]);
    return ws;
}

/* wslay reports a frame only once payload bytes arrive, so a client could
 * declare a huge frame and trickle it. When a read starts at a frame
 * boundary, read the declared length off the header and refuse at once. */
static int declares_oversize(const mp_ws *ws, const uint8_t *data, size_t len)
{
    if ((ws->rd && ws->rd->fed != ws->rd->framed) || len < 2)
        return 0;
    int opcode = data[0] & 0x0f;
    if (opcode & 0x8)
        return 0;                       /* control frames: wslay checks them */
    uint64_t n = data[1] & 0x7f;
    if (n == 126 && len >= 4)
        n = (uint64_t)data[2] << 8 | data[3];
    else if (n == 127 && len >= 10)
        for (int i = 0, k = 2; i < 8; i++, k++)
            n = (i == 0 ? 0 : n << 8) | data[k];
    else if (n >= 126)
        return 0;
    uint64_t so_far = opcode == 0 && ws->rd ? ws->rd->msg_bytes : 0;
    return so_far + n > mp.cfg.max_message_bytes;
}

void mp_ws_feed(mp_conn *c, const uint8_t *data, size_t len)
{
    mp_ws *ws = c->ws;
    mp_tlist_touch(&mp_idle_list, &c->tnode);     /* any byte counts as life */
    if (declares_oversize(ws, data, len)) {
        mp_conn_close_stream(c, 1009, "message too big");
        return;
    }
    if (!ws->rd) {
        ws->rd = calloc(1, sizeof *ws->rd);
        if (!ws->rd || wslay_event_context_server_init(&ws->rd->wslay, &callbacks, ws) != 0) {
            free(ws->rd);
            ws->rd = NULL;
            mp_conn_abort(c);
            return;
        }
        wslay_event_config_set_max_recv_msg_length(ws->rd->wslay, mp.cfg.max_message_bytes);
        /* RSV1 (compressed) only where deflate was negotiated; else 1002. */
        if (ws->deflate)
            wslay_event_config_set_allowed_rsv_bits(ws->rd->wslay, WSLAY_RSV1_BIT);
    }
    mp_ws_reader *rd = ws->rd;
    feed_ptr = data;
    feed_left = len;
    ctl_len = 0;
    ws->in_recv = 1;
    int rc = wslay_event_recv(rd->wslay);
    ws->in_recv = 0;
    if (ws->detached) {                         /* a client frame closed it */
        session_destroy(ws);
        return;
    }
    /* Even after an error wslay may have queued a close (1002, 1007, 1009):
     * send it before deciding anything. */
    if (wslay_event_want_write(rd->wslay))
        wslay_event_send(rd->wslay);
    if (wslay_event_get_close_sent(rd->wslay)) {
        uint16_t sent = wslay_event_get_status_code_sent(rd->wslay);
        c->close_code = is_close_echo(rd->wslay, sent) ? 1000 : sent;   /* the echo went out as 1000 */
        mp_conn_close_stream(c, 0, NULL);           /* the close frame is queued */
        return;
    }
    if (rc != 0) {
        mp_warn("wslay failed", "conn=%llu rc=%d", (unsigned long long)c->id, rc);
        mp_conn_close_stream(c, rc == WSLAY_ERR_NOMEM ? 1011 : 1002,
                             rc == WSLAY_ERR_NOMEM ? "internal error" : "protocol error");
        return;
    }
    if (rd->fed == rd->framed && !rd->in_fragment && !wslay_event_want_write(rd->wslay))
        release_reader(ws);
}

void mp_ws_ping(mp_conn *c)
{
    if (!ping_frame)
        ping_frame = mp_frame_ws(MP_WS_PING, NULL, 0);
    if (ping_frame)
        mp_conn_send(c, ping_frame);
}

void mp_ws_session_free(mp_conn *c)
{
    mp_ws *ws = c->ws;
    if (!ws)
        return;
    mp_devices_remove(&devices, c);   /* first: it reads c->ws */
    mp_deadlines_remove(&ws->expiry);
    mp_acks_free(ws->acks);
    ws->acks = NULL;
    mp_hub_unsubscribe_all(&ws->subs);
    if (route_has(ws, MP_HOOK_ON_CLOSE)) {
        mp_conn_info info = conn_info(c);
        uint16_t code = c->close_code ? c->close_code : 1006;
        mp_lua_conn_event(ws->route_index, "on_close", &info, code, close_reason(code));
    }
    c->ws = NULL;
    if (ws->in_recv)
        ws->detached = 1;   /* wslay is on the stack: mp_ws_feed frees it */
    else
        session_destroy(ws);
}
