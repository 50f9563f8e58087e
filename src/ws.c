/* ws.c — see ws.h. */
#include "ws.h"

#include <errno.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "deadlines.h"
#include "deflate.h"
#include "delivery.h"
#include "devices.h"
#include "hub.h"
#include "log.h"
#include "lua_host.h"
#include "metrics.h"
#include "server.h"
#include "store.h"

/* Input state, only while a client message is arriving (see ws.h): an idle
 * connection holds neither this nor a wslay context. */
typedef struct mp_ws_reader {
    wslay_event_context_ptr wslay;
    uint64_t fed;                   /* bytes handed to this wslay context */
    uint64_t framed;                /* bytes of frames it completed */
    uint64_t frame_size;            /* header + payload of the frame in progress */
    uint64_t msg_bytes;             /* payload so far of the message in progress */
    uint8_t in_fragment;            /* a fragmented message is not finished */
} mp_ws_reader;

/* One allocation per connection: the session, then the strings of its
 * identity (user, device, kind, allow patterns) copied out of what the auth
 * hook returned. The list of channels asked for at connect is not kept: it is
 * spent once join_channels has run. */
typedef struct mp_ws {
    mp_ws_reader *rd;               /* NULL while idle */
    mp_sub *subs;
    mp_acks *acks;                  /* ack routes only */
    mp_conn *conn;
    uint16_t nsubs;                 /* subscriptions besides user:<id> */
    int16_t route_index;            /* the route it connected through; -1 if gone */
    /* One byte of flags: a byte more would cost 8 per connection (padding). */
    uint8_t in_recv : 1;            /* wslay_event_recv is on the stack */
    uint8_t detached : 1;           /* the connection let go while in_recv */
    uint8_t deflate : 1;            /* permessage-deflate negotiated (deflate.h) */
    uint16_t device_tag;            /* of its (user, device) hash: index probes compare it first */
    mp_deadline expiry;             /* when the identity expires (on the heap only if it does) */
    mp_identity ident;              /* strings in data[] below; no subscribe list */
    char data[];
} mp_ws;

/* The bytes of the current read, handed to wslay by recv_cb. */
static const uint8_t *feed_ptr;
static size_t feed_left;

static mp_frame *ping_frame;        /* one shared ping for every connection */

static void device_view(const mp_conn *c, mp_device_view *v)
{
    const mp_ws *ws = c->ws;
    v->user = ws->ident.user;
    v->device = ws->ident.device;
    v->route_index = ws->route_index;
    v->tag = ws->device_tag;
}

/* Every WebSocket connection by (user, device), for the duplicate check:
 * added with c->ws at the handshake, removed in mp_ws_session_free (the one
 * way every close, abort, replacement, kick and shutdown lets go of it). */
static mp_devices devices = {.view = device_view};

/* ---- helpers ------------------------------------------------------------ */

void mp_ws_send_text(mp_conn *c, const char *text, size_t len)
{
    mp_frame *f = mp_ws_frame(MP_WS_TEXT, text, len);
    if (f) {
        mp_conn_send(c, f);
        mp_frame_unref(f);
    }
}

void mp_ws_send_json(mp_conn *c, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text)
        mp_ws_send_text(c, text, strlen(text));
    free(text);
}

static void send_error(mp_conn *c, const char *code, const char *message, const char *channel)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", message);
    if (o && channel)
        json_object_set_new(o, "channel", json_string(channel));
    mp_ws_send_json(c, o);
}

/* nettle rather than OpenSSL here: OpenSSL 3 sets up its provider machinery
 * on the first digest, faulting about 2 MB of libcrypto into every server
 * process (bench/README.md, "Memory per connection"); nettle's SHA-1 and
 * base64 are plain functions. */
int mp_ws_accept_key(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=')
        return -1;
    uint8_t decoded[BASE64_DECODE_LENGTH(24)];
    size_t dlen = sizeof decoded;
    struct base64_decode_ctx b64;
    base64_decode_init(&b64);
    if (!base64_decode_update(&b64, &dlen, decoded, 24, key) || !base64_decode_final(&b64) || dlen != 16)
        return -1;   /* RFC 6455: the key is 16 random bytes */
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_init(&sha);
    sha1_update(&sha, 24, (const uint8_t *)key);
    sha1_update(&sha, sizeof guid - 1, (const uint8_t *)guid);
    sha1_digest(&sha, sizeof digest, digest);
    base64_encode_raw(out, sizeof digest, digest);
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
    return 0;
}

/* ---- accessors for the hub and events ------------------------------------ */

mp_frame *mp_ws_wire_frame(mp_conn *c, mp_frame *f)
{
    const mp_ws *ws = c->ws;
    if (!ws || !ws->deflate)
        return f;
    /* A route a reload removed, or that no longer sets permessage_deflate,
     * leaves its connections (which negotiated it) with the defaults. */
    int threshold = MP_DEFLATE_THRESHOLD, level = MP_DEFLATE_LEVEL;
    if (ws->route_index >= 0 && ws->route_index < mp.cfg.nroutes && mp.cfg.routes[ws->route_index].deflate) {
        const mp_route *r = &mp.cfg.routes[ws->route_index];
        threshold = r->deflate_threshold;
        level = r->deflate_level;
    }
    size_t plen;
    mp_ws_frame_payload(f, &plen);
    if (plen < (size_t)threshold)
        return f;
    mp_frame *z = mp_deflate_frame(f, level);
    return z ? z : f;
}

const char *mp_ws_kind(const mp_conn *c)
{
    return c->ws ? c->ws->ident.kind : mp_sse_stream.kind(c);
}

int mp_ws_describe(const mp_conn *c, mp_ws_desc *d)
{
    if (!c->ws)
        return mp_sse_stream.describe(c, d);
    d->user = c->ws->ident.user;
    d->device = c->ws->ident.device;
    d->kind = c->ws->ident.kind;
    d->route_index = c->ws->route_index;
    d->subs = c->ws->subs;
    return 0;
}

const char *mp_ws_device(const mp_conn *c)
{
    return c->ws ? c->ws->ident.device : mp_sse_stream.device(c);
}

int mp_ws_format_route(const mp_conn *c)
{
    int r = c->ws ? c->ws->route_index : -1;
    return r >= 0 && r < mp.cfg.nroutes && (mp.cfg.routes[r].hooks & MP_HOOK_FORMAT) ? r : -1;
}

static int route_has(const mp_ws *ws, unsigned hook)
{
    return ws->route_index >= 0 && ws->route_index < mp.cfg.nroutes &&
           (mp.cfg.routes[ws->route_index].hooks & hook);
}

static mp_conn_info conn_info(const mp_conn *c)
{
    const mp_identity *id = &c->ws->ident;
    mp_conn_info info = {c->id, id->user, id->device, id->kind, mp_conn_remote(c)};
    return info;
}

static void remap_one(mp_conn *c, void *arg)
{
    const int *map = arg;
    if (c->ws && c->ws->route_index >= 0)
        c->ws->route_index = (int16_t)map[c->ws->route_index];
}

void mp_ws_awaiting_ack(mp_conn *c)
{
    if (c->ws)
        mp_acks_arm(c->ws->acks);
}

void mp_ws_continue_replays(mp_conn *c)
{
    if (!c->ws)
        return;
    for (mp_sub *s = c->ws->subs; s && c->state == MP_CONN_WS; s = s->conn_next)
        if (s->replaying)
            mp_delivery_continue(c, s);
}

void mp_ws_free_all(void)
{
    mp_devices_free(&devices);
    mp_deadlines_stop();
    mp_deflate_free_all();
}

void mp_ws_remap_routes(const int *map)
{
    mp_net_each_ws(remap_one, (void *)map);
}

/* ---- token expiry --------------------------------------------------------- */

/* Identities that expire (auth_jwt's exp, or a plugin's `expires`) are on
 * one heap of deadlines with one timer (deadlines.h), set at the handshake
 * and moved by a refresh; the timer closes a connection whose identity ran
 * out with 4005. */
static int deadlines_started;

static void on_token_expired(mp_deadline *d)
{
    mp_ws *ws = (mp_ws *)(void *)((char *)d - offsetof(mp_ws, expiry));
    mp_conn_close_ws(ws->conn, 4005, "token expired");   /* a no-op once it is closing */
}

/* Puts the session's deadline at `expires` (unix seconds; 0: never). */
static int set_expiry(mp_ws *ws, double expires)
{
    if (expires <= 0) {
        mp_deadlines_remove(&ws->expiry);
        return 0;
    }
    if (!deadlines_started) {
        mp_deadlines_init(mp.loop, on_token_expired);
        deadlines_started = 1;
    }
    return mp_deadlines_set(&ws->expiry, expires);
}

/* Milliseconds until the session's identity expires, for the welcome and
 * refreshed frames; -1 if it never does. */
static json_int_t expires_in_ms(const mp_ws *ws)
{
    if (!ws->expiry.slot)
        return -1;
    double ms = (ws->expiry.at - ev_time()) * 1000.0;
    return ms > 0 ? (json_int_t)ms : 0;
}

/* ---- client frames ------------------------------------------------------ */

static void send_subscribed(mp_conn *c, const char *name)
{
    char epoch[32];
    uint64_t last = 0;
    mp_delivery_position(name, epoch, &last);
    mp_ws_send_json(c, json_pack("{s:s, s:s, s:s, s:I}", "type", "subscribed", "channel", name, "epoch", epoch,
                           "seq", (json_int_t)last));
}

static void handle_unsubscribe(mp_conn *c, const char *name)
{
    mp_ws *ws = c->ws;
    char personal[MP_NAME_MAX + 8];
    snprintf(personal, sizeof personal, "user:%s", ws->ident.user);
    mp_channel *ch = mp_hub_channel(name, 0);
    if (strcmp(name, personal) == 0) {
        send_error(c, "forbidden", "the personal channel cannot be left", name);
    } else if (!ch || mp_hub_unsubscribe(&ws->subs, ch) == 0) {
        send_error(c, "not_subscribed", "not subscribed to this channel", name);
    } else {
        ws->nsubs--;
        mp_ws_send_json(c, json_pack("{s:s, s:s}", "type", "unsubscribed", "channel", name));
    }
}

/* An epoch a client sends back is one the server gave it (welcome,
 * subscribed, reset): a string of at most 31 bytes. "" is what the server
 * gives for a channel never published; it counts as no epoch (the resume
 * goes by seq alone, docs/protocol.md "Resume"). Anything else is refused,
 * not read as "no epoch": that would replay with no reset. */
static int epoch_valid(const char *e)
{
    return e && strnlen(e, MP_STORE_EPOCH_MAX) < MP_STORE_EPOCH_MAX;
}

/* since: -1 when the frame has none. */
static void handle_subscribe(mp_conn *c, const char *name, long long since, const char *epoch)
{
    mp_ws *ws = c->ws;
    char personal[MP_NAME_MAX + 8];
    snprintf(personal, sizeof personal, "user:%s", ws->ident.user);
    if (!mp_identity_allows_device(&ws->ident, name)) {
        send_error(c, "forbidden", "this connection may not subscribe to that channel", name);
        return;
    }
    mp_channel *ch = mp_hub_channel(name, 0);
    mp_sub *sub = mp_hub_find_sub(ws->subs, ch);
    if (!sub) {
        if (ws->nsubs >= mp.cfg.max_subscriptions) {
            send_error(c, "too_many_subscriptions", "limits.max_subscriptions reached", name);
            return;
        }
        if (!ch)
            ch = mp_hub_channel(name, 1);
        if (!ch || mp_hub_subscribe(&ws->subs, c, ch, &sub) < 0) {
            send_error(c, "unavailable", ch ? "server out of memory" : "the server holds limits.max_channels channels", name);
            return;
        }
        sub->tracks_acks = ws->acks != NULL;
        if (strcmp(name, personal) != 0)
            ws->nsubs++;
    }
    send_subscribed(c, name);
    if (since >= 0)
        mp_delivery_replay(c, sub, epoch, (uint64_t)since);
    else if (ws->acks)
        mp_delivery_resume_device(c, sub, &ws->ident, 0);
}

static void handle_ack(mp_conn *c, json_t *root, const char *name)
{
    mp_ws *ws = c->ws;
    json_t *jseq = json_object_get(root, "seq");
    if (!name || !json_is_integer(jseq) || json_integer_value(jseq) < 1) {
        send_error(c, "bad_frame", "an ack needs a string \"channel\" and an integer \"seq\" >= 1", name);
        return;
    }
    if (!ws->acks) {
        send_error(c, "acks_disabled", "this route does not take acks", name);
        return;
    }
    mp_sub *sub = mp_hub_find_sub(ws->subs, mp_hub_channel(name, 0));
    if (!sub) {
        send_error(c, "not_subscribed", "not subscribed to this channel", name);
        return;
    }
    uint64_t seq = (uint64_t)json_integer_value(jseq);
    uint64_t before = sub->acked_seq;
    if (mp_acks_ack(ws->acks, sub, seq) < 0) {
        send_error(c, "bad_ack", "that seq was never sent on this channel", name);
    } else if (seq > before && route_has(ws, MP_HOOK_ON_ACK)) {
        mp_conn_info info = conn_info(c);
        mp_lua_ack_event(ws->route_index, &info, name, (unsigned long long)seq);
    }
}

/* {"type":"refresh","token":"..."}: the route's auth chain judges the new
 * token as at a handshake; if it is good and for the same user, the
 * connection's deadline moves to the new identity's expiry. The channels
 * stay those of the handshake. A refusal leaves the deadline where it was. */
static void handle_refresh(mp_conn *c, json_t *root)
{
    mp_ws *ws = c->ws;
    const char *token = json_string_value(json_object_get(root, "token"));
    if (!token || !*token) {
        send_error(c, "bad_frame", "a refresh needs a string \"token\"", NULL);
        return;
    }
    if (ws->route_index < 0) {   /* a reload removed its route: no plugin can judge the token */
        send_error(c, "forbidden", "this connection's route is gone: reconnect", NULL);
        return;
    }
    mp_conn_info info = conn_info(c);
    mp_identity *id = NULL;
    mp_denial deny;
    if (mp_lua_refresh(ws->route_index, &info, token, &id, &deny) < 0) {
        if (deny.status >= 500 && deny.status != 503) {
            mp_conn_close_ws(c, 1011, "internal error");
            return;
        }
        send_error(c, deny.code, deny.message, NULL);
        return;
    }
    if (strcmp(id->user, ws->ident.user) != 0) {
        free(id);
        send_error(c, "forbidden", "the new token is for another user", NULL);
        return;
    }
    double expires = id->expires;
    free(id);
    if (set_expiry(ws, expires) < 0) {
        send_error(c, "unavailable", "server out of memory", NULL);
        return;
    }
    json_t *o = json_pack("{s:s}", "type", "refreshed");
    json_int_t left = expires_in_ms(ws);
    if (o && left >= 0)
        json_object_set_new(o, "expires_in_ms", json_integer(left));
    mp_ws_send_json(c, o);
}

/* A frame type the core does not know goes to the route's on_message hooks. */
static void handle_plugin_frame(mp_conn *c, const uint8_t *msg, size_t len)
{
    if (!route_has(c->ws, MP_HOOK_ON_MESSAGE)) {
        send_error(c, "unknown_type", "unknown frame type", NULL);
        return;
    }
    mp_conn_info info = conn_info(c);
    char *reply = NULL;
    mp_denial deny;
    if (mp_lua_on_message(c->ws->route_index, &info, (const char *)msg, len, &reply, &deny) < 0) {
        if (deny.status >= 500) {
            mp_conn_close_ws(c, 1011, "internal error");
            return;
        }
        send_error(c, deny.code, deny.message, NULL);
        return;
    }
    if (reply && c->state == MP_CONN_WS)
        mp_ws_send_text(c, reply, strlen(reply));
    free(reply);
}

static void handle_text(mp_conn *c, const uint8_t *msg, size_t len)
{
    if (route_has(c->ws, MP_HOOK_RATELIMIT)) {
        mp_conn_info info = conn_info(c);
        mp_denial deny;
        if (mp_lua_message_ratelimit(c->ws->route_index, &info, &deny) < 0) {
            if (deny.status >= 500)
                mp_conn_close_ws(c, 1011, "internal error");
            else
                send_error(c, deny.code, deny.message, NULL);
            return;
        }
    }
    json_error_t err;
    json_t *root = json_loadb((const char *)msg, len, 0, &err);
    if (!root || !json_is_object(root)) {
        send_error(c, "bad_frame", "client frames are JSON objects with a \"type\"", NULL);
        json_decref(root);
        return;
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    const char *channel = json_string_value(json_object_get(root, "channel"));
    if (!type) {
        send_error(c, "bad_frame", "client frames are JSON objects with a \"type\"", NULL);
    } else if (strcmp(type, "subscribe") == 0 || strcmp(type, "unsubscribe") == 0) {
        json_t *jsince = json_object_get(root, "since"), *jepoch = json_object_get(root, "epoch");
        const char *epoch = json_string_value(jepoch);
        if (!channel)
            send_error(c, "bad_frame", "subscribe and unsubscribe need a string \"channel\"", NULL);
        else if (!mp_hub_valid_name(channel, strlen(channel)))
            send_error(c, "bad_channel", "channel names are 1-128 bytes of A-Z a-z 0-9 _ - . : @", channel);
        else if (jsince && (!json_is_integer(jsince) || json_integer_value(jsince) < 0))
            send_error(c, "bad_frame", "\"since\" is an integer seq >= 0", channel);
        else if (jepoch && type[0] == 's' && !epoch_valid(epoch))
            send_error(c, "bad_frame", "\"epoch\" is a string: an epoch the server sent, at most 31 bytes", channel);
        else if (type[0] == 'u')
            handle_unsubscribe(c, channel);
        else
            handle_subscribe(c, channel, jsince ? (long long)json_integer_value(jsince) : -1, epoch);
    } else if (strcmp(type, "ack") == 0) {
        handle_ack(c, root, channel);
    } else if (strcmp(type, "refresh") == 0) {
        handle_refresh(c, root);
    } else {
        handle_plugin_frame(c, msg, len);
    }
    json_decref(root);
}

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
        f = mp_ws_close_frame(1002, close_reason(1002));
    } else if ((b[0] & 0x0f) == MP_WS_CLOSE && is_close_echo(ctx, len >= 4 ? (uint16_t)(b[2] << 8 | b[3]) : 0)) {
        /* The answer to a client's close (wslay echoes the client's code, or
         * none): always 1000 "bye", as docs/protocol.md says. RFC 6455 5.5.1
         * lets the answer carry any code; echoing would send the client's
         * 1001 or 4000 back with our reasons ("server shutting down", "idle
         * timeout") for things that did not happen. */
        f = mp_ws_close_frame(1000, close_reason(1000));
    } else if ((b[0] & 0x0f) == MP_WS_CLOSE && len >= 4) {
        /* wslay's own close goes out with the documented reason. */
        uint16_t code = (uint16_t)(b[2] << 8 | b[3]);
        f = mp_ws_close_frame(code, close_reason(code));
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
        mp_conn_close_ws(c, 1007, "bad compressed data");
    } else {
        mp_conn_close_ws(c, 1011, "internal error");
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

static void session_destroy(mp_ws *ws)
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
static mp_ws *session_new(const mp_identity *id)
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
        mp_conn_close_ws(c, 1009, "message too big");
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
        mp_conn_close_ws(c, 0, NULL);           /* the close frame is queued */
        return;
    }
    if (rc != 0) {
        mp_warn("wslay failed", "conn=%llu rc=%d", (unsigned long long)c->id, rc);
        mp_conn_close_ws(c, rc == WSLAY_ERR_NOMEM ? 1011 : 1002,
                         rc == WSLAY_ERR_NOMEM ? "internal error" : "protocol error");
        return;
    }
    if (rd->fed == rd->framed && !rd->in_fragment && !wslay_event_want_write(rd->wslay))
        release_reader(ws);
}

void mp_ws_ping(mp_conn *c)
{
    if (!ping_frame)
        ping_frame = mp_ws_frame(MP_WS_PING, NULL, 0);
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

/* ---- handshake ---------------------------------------------------------- */

static int header_has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    for (const char *p = value; p && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == tlen && strncasecmp(p, token, tlen) == 0)
            return 1;
        p = end;
    }
    return 0;
}

void mp_ws_upgrade_required(mp_conn *c)
{
    static const char body[] =
        "{\"error\":\"upgrade_required\",\"message\":\"this route speaks WebSocket: send Upgrade: websocket\"}";
    mp_http_respond(c, 426, "Upgrade: websocket\r\nConnection: Upgrade\r\n", body, sizeof body - 1);
}

static void bad_handshake(mp_conn *c, const char *why)
{
    mp_http_error(c, 400, "bad_handshake", why);
}

/* Checks the channels asked for at connect: names, permissions, count, room
 * in the hub. Returns 0, or answers the request and returns -1. Nothing is
 * created here: a refused handshake leaves no trace in the hub. */
int mp_ws_check_channels(mp_conn *c, const mp_identity *id)
{
    char msg[200];
    if ((size_t)id->nsubscribe > mp.cfg.max_subscriptions) {
        mp_http_error(c, 400, "too_many_subscriptions", "more channels than limits.max_subscriptions");
        return -1;
    }
    size_t missing = 1;   /* the personal channel, at most */
    for (int i = 0; i < id->nsubscribe; i++) {
        const char *name = id->subscribe[i];
        if (!mp_hub_valid_name(name, strlen(name))) {
            mp_http_error(c, 400, "bad_channel", "channel names are 1-128 bytes of A-Z a-z 0-9 _ - . : @");
            return -1;
        }
        if (!mp_identity_allows_device(id, name)) {
            snprintf(msg, sizeof msg, "this token may not subscribe to channel %s", name);
            mp_http_error(c, 403, "forbidden", msg);
            return -1;
        }
        if (!mp_hub_channel(name, 0))
            missing++;
    }
    if (mp_hub_channel_count() + missing > mp.cfg.max_channels) {
        mp_http_error(c, 503, "unavailable", "the server holds limits.max_channels channels");
        return -1;
    }
    return 0;
}

static void send_welcome(mp_conn *c)
{
    mp_ws *ws = c->ws;
    json_t *chans = json_array(), *epochs = json_object();
    for (mp_sub *s = ws->subs; s; s = s->conn_next) {
        const char *name = mp_hub_channel_name(s->ch);
        char epoch[32];
        uint64_t last;
        mp_delivery_position(name, epoch, &last);
        json_array_insert_new(chans, 0, json_string(name));
        json_object_set_new(epochs, name, json_string(epoch));
    }
    char conn_id[24];
    snprintf(conn_id, sizeof conn_id, "%llu", (unsigned long long)c->id);
    json_t *welcome = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:b}", "type", "welcome", "conn", conn_id,
                                "user", ws->ident.user, "device", ws->ident.device,
                                "kind", ws->ident.kind, "channels", chans, "epochs", epochs,
                                "acks", ws->acks != NULL);
    json_int_t left = expires_in_ms(ws);
    if (welcome && left >= 0)
        json_object_set_new(welcome, "expires_in_ms", json_integer(left));
    mp_ws_send_json(c, welcome);
}

/* Closes the user's other connections with the same device on this route
 * (duplicate login), unless the route allows several. After a reload turned
 * "allow" into "replace" there may be several: all go. */
static void replace_duplicates(const mp_identity *id, int route_index)
{
    mp_conn *other;
    while ((other = mp_devices_find(&devices, id->user, id->device, route_index))) {
        mp.stats.replaced_closes++;
        mp_conn_close_ws(other, 4002, "replaced by a newer connection");   /* leaves the index */
    }
}

/* Subscribes a new connection to its channels and sends what it is owed:
 * `since.<channel>` (with `epoch.<channel>`) from the query, else on an ack
 * route the device's cursor, else nothing old. */
static void join_channels(mp_conn *c, mp_http_req *req, const char *personal, const mp_identity *asked)
{
    mp_ws *ws = c->ws;
    const mp_identity *id = &ws->ident;
    int n = asked->nsubscribe + 1;
    for (int i = 0; i < n; i++) {
        const char *name = i == 0 ? personal : asked->subscribe[i - 1];
        mp_channel *ch = mp_hub_channel(name, 1);
        mp_sub *sub = NULL;
        int added = ch ? mp_hub_subscribe(&ws->subs, c, ch, &sub) : -1;
        if (added < 0) {
            send_error(c, "unavailable", "could not subscribe", name);
            continue;
        }
        sub->tracks_acks = ws->acks != NULL;
        if (added == 1 && i > 0)
            ws->nsubs++;
    }
    send_welcome(c);
    for (mp_sub *s = ws->subs; s; s = s->conn_next) {
        const char *name = mp_hub_channel_name(s->ch);
        char key[MP_NAME_MAX + 16], since_text[32], epoch[64];
        snprintf(key, sizeof key, "since.%s", name);
        const char *since = mp_http_query_get(req, key, since_text, sizeof since_text);
        snprintf(key, sizeof key, "epoch.%s", name);
        const char *ep = mp_http_query_get(req, key, epoch, sizeof epoch);
        char *end = NULL;
        errno = 0;
        unsigned long long seq = since ? strtoull(since, &end, 10) : 0;
        if (since && (!end || *end != '\0' || since[0] < '0' || since[0] > '9' || errno == ERANGE))
            send_error(c, "bad_since", "since.<channel> must be a seq (integer >= 0)", name);
        else if (since && ep && !epoch_valid(ep))
            send_error(c, "bad_epoch", "epoch.<channel> must be an epoch the server sent: at most 31 bytes", name);
        else if (since)
            mp_delivery_replay(c, s, ep, seq);
        else if (ws->acks)
            mp_delivery_resume_device(c, s, id, strcmp(name, personal) == 0);
    }
}

void mp_ws_handshake(mp_http_req *req, const uint8_t *rest, size_t rest_len)
{
    mp_conn *c = req->conn;
    const char *upgrade = mp_http_header_get(req, "upgrade");
    const char *connection = mp_http_header_get(req, "connection");
    const char *version = mp_http_header_get(req, "sec-websocket-version");
    const char *key = mp_http_header_get(req, "sec-websocket-key");
    char accept[29];
    if (!upgrade || !header_has_token(upgrade, "websocket"))
        return mp_ws_upgrade_required(c);
    if (!connection || !header_has_token(connection, "upgrade"))
        return bad_handshake(c, "Connection: Upgrade is missing");
    if (!version || strcmp(version, "13") != 0) {
        static const char body[] = "{\"error\":\"bad_handshake\",\"message\":\"Sec-WebSocket-Version must be 13\"}";
        mp_http_respond(c, 400, "Sec-WebSocket-Version: 13\r\n", body, sizeof body - 1);
        return;
    }
    if (!key || mp_ws_accept_key(key, accept) < 0)
        return bad_handshake(c, "Sec-WebSocket-Key must be 16 bytes in base64");

    mp_identity *id = NULL;
    if (mp_http_authenticate(req, &id) < 0)
        return;
    char personal[MP_NAME_MAX + 8];
    int plen = snprintf(personal, sizeof personal, "user:%s", id->user);
    if (plen < 0 || (size_t)plen >= sizeof personal || !mp_hub_valid_name(id->user, strlen(id->user)) ||
        !mp_hub_valid_name(personal, (size_t)plen) || !mp_hub_valid_name(id->device, strlen(id->device)) ||
        !mp_hub_valid_name(id->kind, strlen(id->kind))) {
        free(id);
        mp_http_error(c, 500, "plugin_error", "auth plugin returned an invalid user, device or kind");
        return;
    }
    if (mp_ws_check_channels(c, id) < 0) {
        free(id);
        return;
    }
    mp_ws *ws = mp_devices_reserve(&devices) == 0 ? session_new(id) : NULL;
    const mp_route *route = req->route;
    if (ws && route->acks && !(ws->acks = mp_acks_new(c, &ws->subs, &ws->ident, route))) {
        free(ws);
        ws = NULL;
    }
    if (ws && set_expiry(ws, id->expires) < 0) {
        mp_acks_free(ws->acks);
        free(ws);
        ws = NULL;
    }
    if (!ws) {
        free(id);
        mp_http_error(c, 503, "unavailable", "server out of memory");
        return;
    }
    char ext[128] = "";
    ws->deflate = route->deflate &&
                  mp_deflate_negotiate(mp_http_header_get(req, "sec-websocket-extensions"), ext, sizeof ext);
    char head[384];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n", accept,
                     ws->deflate ? "Sec-WebSocket-Extensions: " : "", ext, ws->deflate ? "\r\n" : "");
    mp_frame *f = mp_frame_copy(head, (size_t)n);
    if (!f) {
        mp_deadlines_remove(&ws->expiry);
        mp_acks_free(ws->acks);
        free(ws);
        free(id);
        mp_conn_abort(c);
        return;
    }
    mp_conn_send(c, f);
    mp_frame_unref(f);
    mp_http_access_log(c, 101, 0);

    /* Without a cap the kernel grows a stalled client's send buffer to
     * megabytes before our own max_outbound_bytes even starts counting. */
    int sndbuf = mp.cfg.socket_send_buffer;
    setsockopt(c->io.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (!route->allow_duplicates)
        replace_duplicates(id, req->route_index);
    c->state = MP_CONN_WS;
    c->ws = ws;
    ws->conn = c;
    ws->route_index = (int16_t)req->route_index;
    mp_devices_add(&devices, c);   /* room reserved above; replacing only made more */
    mp.nws++;
    mp.stats.ws_handshakes++;
    mp_metrics_route(route->path)->handshakes++;
    mp_tlist_touch(&mp_idle_list, &c->tnode);
    join_channels(c, req, personal, id);
    free(id);                  /* the session holds its own copy; id's subscribe list is spent */
    mp_http_session_free(c);   /* req (and its query) lives in the HTTP arena: last use above */
    mp_debug("ws connected", "conn=%llu user=%s device=%s remote=%s",
             (unsigned long long)c->id, ws->ident.user, ws->ident.device, mp_conn_remote(c));
    if (route_has(ws, MP_HOOK_ON_CONNECT)) {
        mp_conn_info info = conn_info(c);
        mp_lua_conn_event(ws->route_index, "on_connect", &info, 0, NULL);
    }
    if (rest_len && c->state == MP_CONN_WS)
        mp_ws_feed(c, rest, rest_len);
}
