/* ws.c — a WebSocket connection's state as the rest of the server sees it
 * (see ws.h): sending text and JSON frames, the accessors the hub, delivery
 * and the admin use, the index of connections by device, token expiry.
 *
 * The rest of the module: ws_handshake.c (the upgrade, auth, joining the
 * channels), ws_session.c (the session and the wslay adapter for input),
 * ws_commands.c (the client's frames: subscribe, unsubscribe, ack, refresh,
 * plugin frames); ws_int.h is their private header.
 */
#include "ws_int.h"

#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "deadlines.h"
#include "deflate.h"
#include "delivery.h"
#include "devices.h"
#include "server.h"

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
mp_devices devices = {.view = device_view};

/* ---- helpers ------------------------------------------------------------ */

void mp_ws_send_text(mp_conn *c, const char *text, size_t len)
{
    mp_frame *f = mp_frame_ws(MP_WS_TEXT, text, len);
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

void send_error(mp_conn *c, const char *code, const char *message, const char *channel)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", message);
    if (o && channel)
        json_object_set_new(o, "channel", json_string(channel));
    mp_ws_send_json(c, o);
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
    mp_frame_ws_payload(f, &plen);
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

int route_has(const mp_ws *ws, unsigned hook)
{
    return ws->route_index >= 0 && ws->route_index < mp.cfg.nroutes &&
           (mp.cfg.routes[ws->route_index].hooks & hook);
}

mp_conn_info conn_info(const mp_conn *c)
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
    mp_conn_close_stream(ws->conn, 4005, "token expired");   /* a no-op once it is closing */
}

/* Puts the session's deadline at `expires` (unix seconds; 0: never). */
int set_expiry(mp_ws *ws, double expires)
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
json_int_t expires_in_ms(const mp_ws *ws)
{
    if (!ws->expiry.slot)
        return -1;
    double ms = (ws->expiry.at - ev_time()) * 1000.0;
    return ms > 0 ? (json_int_t)ms : 0;
}
