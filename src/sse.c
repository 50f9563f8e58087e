/* sse.c — see sse.h. The event id format, the resume and what each event
 * looks like on the wire are documented in docs/protocol.md (SSE). */
#include "sse.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cors.h"
#include "delivery.h"
#include "log.h"
#include "lua_host.h"
#include "route_counters.h"
#include "server.h"
#include "store.h"

#define SSE_CHANNELS (MP_SSE_MAX_CHANNELS + 1)   /* with the personal channel */

/* Where the client stands on one channel: what its next event id says. */
typedef struct sse_pos {
    mp_sub *sub;                /* NULL if subscribing failed (out of memory) */
    uint64_t seq;
    uint32_t epoch_hash;        /* of the epoch; 0 with has_epoch 0 for "" */
    uint8_t has_epoch;
} sse_pos;

typedef struct mp_sse {
    mp_conn *conn;
    mp_sub *subs;
    mp_identity *ident;         /* from the auth chain; its subscribe list names the channels */
    int16_t route_index;        /* -1 once a reload dropped the route */
    uint8_t npos;
    uint32_t list_hash;         /* of the channel names, in order */
    sse_pos pos[SSE_CHANNELS];
    char personal[MP_NAME_MAX + 8];
} mp_sse;

static mp_frame *heartbeat_frame;   /* one ": hb" for every stream */

const mp_sse_ops mp_sse_stream = {
    .open = mp_sse_open,
    .session_free = mp_sse_session_free,
    .heartbeat = mp_sse_heartbeat,
    .continue_replays = mp_sse_continue_replays,
    .going_away = mp_sse_going_away,
    .remap_routes = mp_sse_remap_routes,
    .send_live = mp_sse_send_live,
    .send_stored = mp_sse_send_stored,
    .send_reset = mp_sse_send_reset,
    .describe = mp_sse_describe,
    .kind = mp_sse_kind,
    .device = mp_sse_device,
};

/* ---- ids ------------------------------------------------------------------ */

/* FNV-1a: ids carry 32-bit hashes of epochs and of the channel list; a
 * collision (2^-32) would let a stale position pass for a current one. */
static uint32_t fnv1a(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static const char *channel_at(const mp_sse *s, int i)
{
    return s->pos[i].sub ? mp_hub_channel_name(s->pos[i].sub->ch) : "";
}

static void set_epoch(sse_pos *p, const char *epoch)
{
    p->has_epoch = epoch && *epoch;
    p->epoch_hash = p->has_epoch ? fnv1a(2166136261u, epoch) : 0;
}

/* "1.<list hash>" then ".<seq>[-<epoch hash>]" per channel, in list order. */
static size_t format_id(const mp_sse *s, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "1.%08x", s->list_hash);
    for (int i = 0; i < s->npos && n < cap; i++) {
        const sse_pos *p = &s->pos[i];
        if (p->has_epoch)
            n += (size_t)snprintf(out + n, cap - n, ".%llu-%08x", (unsigned long long)p->seq, p->epoch_hash);
        else
            n += (size_t)snprintf(out + n, cap - n, ".%llu", (unsigned long long)p->seq);
    }
    return n < cap ? n : cap - 1;
}

/* Reads a Last-Event-ID into want[] (positions in list order). Returns 0,
 * or -1 with why it cannot be used. */
static int parse_id(const mp_sse *s, const char *text, sse_pos *want, const char **why)
{
    char *end;
    *why = "Last-Event-ID is not an id this server sent";
    if (strlen(text) > MP_SSE_ID_MAX || strncmp(text, "1.", 2) != 0)
        return -1;
    unsigned long lh = strtoul(text + 2, &end, 16);
    if (end != text + 10)
        return -1;
    if ((uint32_t)lh != s->list_hash) {
        *why = "Last-Event-ID was sent for another list of channels: reconnect with the same channels, or without it";
        return -1;
    }
    const char *p = end;
    for (int i = 0; i < s->npos; i++) {
        if (*p != '.' || p[1] < '0' || p[1] > '9')
            return -1;
        want[i].seq = strtoull(p + 1, &end, 10);
        want[i].has_epoch = *end == '-';
        want[i].epoch_hash = 0;
        if (want[i].has_epoch) {
            const char *h = end + 1;
            want[i].epoch_hash = (uint32_t)strtoul(h, &end, 16);
            if (end != h + 8)
                return -1;
        }
        p = end;
    }
    return *p == '\0' ? 0 : -1;
}

/* ---- events --------------------------------------------------------------- */

static sse_pos *pos_of(mp_sse *s, const mp_sub *sub)
{
    for (int i = 0; i < s->npos; i++)
        if (s->pos[i].sub == sub)
            return &s->pos[i];
    return NULL;
}

/* `data: <payload>\n\n` around a WebSocket frame's payload (one line: the
 * envelope is compact JSON, which never holds a raw newline). */
static mp_frame *body_frame(const mp_frame *ws)
{
    size_t len;
    const uint8_t *payload = mp_frame_ws_payload(ws, &len);
    mp_frame *f = mp_frame_new(len + 8);
    if (!f)
        return NULL;
    memcpy(f->data, "data: ", 6);
    memcpy(f->data + 6, payload, len);
    memcpy(f->data + 6 + len, "\n\n", 2);
    f->len = (uint32_t)(len + 8);
    f->published = ws->published;
    return f;
}

/* Queues f (the caller keeps its reference). */
static int send_frame(mp_conn *c, mp_frame *f)
{
    if (!f)
        return -1;
    return mp_conn_send(c, f);
}

static int send_id_line(mp_conn *c)
{
    char line[MP_SSE_ID_MAX + 8];
    memcpy(line, "id: ", 4);
    size_t n = 4 + format_id(c->sse, line + 4, MP_SSE_ID_MAX + 1);
    line[n++] = '\n';
    mp_frame *f = mp_frame_copy(line, n);
    int r = send_frame(c, f);
    mp_frame_unref(f);
    return r;
}

/* `event: <name>` + the current id + `data: <obj>`; takes obj. */
static void send_event(mp_conn *c, const char *name, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text)
        return;
    char head[32];
    int hn = snprintf(head, sizeof head, "event: %s\n", name);
    size_t tn = strlen(text);
    mp_frame *f = mp_frame_new((size_t)hn + tn + 8);
    if (f) {
        memcpy(f->data, head, (size_t)hn);
        memcpy(f->data + hn, "data: ", 6);
        memcpy(f->data + hn + 6, text, tn);
        memcpy(f->data + hn + 6 + tn, "\n\n", 2);
        f->len = (uint32_t)((size_t)hn + tn + 8);
        if (send_id_line(c) == 0)
            send_frame(c, f);
        mp_frame_unref(f);
    }
    free(text);
}

static int send_message(mp_conn *c, mp_sub *sub, uint64_t seq, const char *epoch, mp_frame *body)
{
    sse_pos *p = c->sse ? pos_of(c->sse, sub) : NULL;
    if (!p || !body)
        return -1;
    p->seq = seq;
    set_epoch(p, epoch);
    if (send_id_line(c) < 0)
        return -1;
    return send_frame(c, body);
}

int mp_sse_send_live(mp_conn *c, mp_sub *s, uint64_t seq, const char *epoch, mp_frame *f, mp_frame **body)
{
    if (!*body)
        *body = body_frame(f);
    return send_message(c, s, seq, epoch, *body);
}

int mp_sse_send_stored(mp_conn *c, mp_sub *s, const mp_store_item *item, const char *epoch)
{
    mp_frame *body = body_frame(item->frame);
    int r = send_message(c, s, item->seq, epoch, body);
    mp_frame_unref(body);
    return r;
}

void mp_sse_send_reset(mp_conn *c, mp_sub *s, const mp_store_history *h, const char *reason)
{
    sse_pos *p = c->sse ? pos_of(c->sse, s) : NULL;
    if (!p)
        return;
    /* From here the client holds nothing older than what the replay sends
     * next (from first_seq), or is level with the head (ahead). */
    p->seq = strcmp(reason, "ahead") == 0 || h->first_seq == 0 ? h->last_seq : h->first_seq - 1;
    set_epoch(p, h->epoch);
    send_event(c, "reset", json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "type", "reset",
                                     "channel", mp_hub_channel_name(s->ch), "epoch", h->epoch,
                                     "first_seq", (json_int_t)h->first_seq,
                                     "last_seq", (json_int_t)h->last_seq, "reason", reason));
}

void mp_sse_continue_replays(mp_conn *c)
{
    for (mp_sub *s = c->sse ? c->sse->subs : NULL; s && c->state == MP_CONN_SSE; s = s->conn_next)
        if (s->replaying)
            mp_delivery_continue(c, s);
}

void mp_sse_heartbeat(mp_conn *c)
{
    /* An SSE client cannot send a refresh: a stream whose identity expired
     * ends here, within ping_ms of the expiry; the client reconnects with a
     * new token and its last id (docs/protocol.md, SSE). */
    double expires = c->sse ? c->sse->ident->expires : 0;
    if (expires > 0 && ev_time() >= expires) {
        mp_info("sse token expired", "conn=%llu user=%s", (unsigned long long)c->id, c->sse->ident->user);
        mp_conn_close_stream(c, 4005, "token expired");
        return;
    }
    if (!heartbeat_frame)
        heartbeat_frame = mp_frame_copy(": hb\n\n", 6);
    send_frame(c, heartbeat_frame);
}

void mp_sse_going_away(mp_conn *c, long after_ms)
{
    char text[40];
    int n = snprintf(text, sizeof text, "retry: %ld\n\n", after_ms);
    mp_frame *f = mp_frame_copy(text, (size_t)n);
    send_frame(c, f);
    mp_frame_unref(f);
}

/* ---- accessors ------------------------------------------------------------ */

int mp_sse_describe(const mp_conn *c, mp_ws_desc *d)
{
    if (!c->sse)
        return -1;
    d->user = c->sse->ident->user;
    d->device = c->sse->ident->device;
    d->kind = c->sse->ident->kind;
    d->route_index = c->sse->route_index;
    d->subs = c->sse->subs;
    return 0;
}

const char *mp_sse_kind(const mp_conn *c) { return c->sse ? c->sse->ident->kind : ""; }
const char *mp_sse_device(const mp_conn *c) { return c->sse ? c->sse->ident->device : ""; }

static void remap_one(mp_conn *c, void *arg)
{
    const int *map = arg;
    if (c->sse && c->sse->route_index >= 0)
        c->sse->route_index = (int16_t)map[c->sse->route_index];
}

void mp_sse_remap_routes(const int *map)
{
    mp_net_each_ws(remap_one, (void *)map);
}

static int route_has(const mp_sse *s, unsigned hook)
{
    return s->route_index >= 0 && s->route_index < mp.cfg.nroutes && (mp.cfg.routes[s->route_index].hooks & hook);
}

static void conn_event(mp_conn *c, const char *name, int code, const char *reason)
{
    const mp_identity *id = c->sse->ident;
    mp_conn_info info = {c->id, id->user, id->device, id->kind, mp_conn_remote(c)};
    mp_lua_conn_event(c->sse->route_index, name, &info, code, reason);
}

static const char *close_reason(uint16_t code)
{
    switch (code) {
    case 1001: return "server shutting down";
    case 1006: return "connection lost";
    case 4001: return "slow consumer";
    case 4003: return "kicked";
    case 4005: return "token expired";
    default:   return "";
    }
}

void mp_sse_session_free(mp_conn *c)
{
    mp_sse *s = c->sse;
    if (!s)
        return;
    mp_hub_unsubscribe_all(&s->subs);
    if (route_has(s, MP_HOOK_ON_CLOSE)) {
        uint16_t code = c->close_code ? c->close_code : 1006;
        conn_event(c, "on_close", code, close_reason(code));
    }
    mp_debug("sse closed", "conn=%llu code=%u", (unsigned long long)c->id, c->close_code);
    c->sse = NULL;
    mp.nsse--;
    free(s->ident);
    free(s);
}

/* ---- opening a stream ----------------------------------------------------- */

/* The identity's names must fit channel names (its personal channel too),
 * as for a WebSocket. Returns 0, or answers 500 and returns -1. */
static int check_identity(mp_conn *c, const mp_identity *id, char *personal, size_t len)
{
    int plen = snprintf(personal, len, "user:%s", id->user);
    if (plen < 0 || (size_t)plen >= len || !mp_hub_valid_name(id->user, strlen(id->user)) ||
        !mp_hub_valid_name(personal, (size_t)plen) || !mp_hub_valid_name(id->device, strlen(id->device)) ||
        !mp_hub_valid_name(id->kind, strlen(id->kind))) {
        mp_http_error(c, 500, "plugin_error", "auth plugin returned an invalid user, device or kind");
        return -1;
    }
    if (id->nsubscribe > MP_SSE_MAX_CHANNELS) {
        char msg[120];
        snprintf(msg, sizeof msg, "an SSE stream takes at most %d channels besides its personal one",
                 MP_SSE_MAX_CHANNELS);
        mp_http_error(c, 400, "too_many_subscriptions", msg);
        return -1;
    }
    return mp_ws_check_channels(c, id);
}

/* The channel list: personal first, then the asked ones in order, repeats
 * dropped. Subscribing happens later (join); here only the names. */
static void list_channels(mp_sse *s, const char *names[SSE_CHANNELS])
{
    const mp_identity *id = s->ident;
    uint32_t h = 2166136261u;
    int n = 0;
    names[n++] = s->personal;
    h = fnv1a(h, s->personal);
    for (int i = 0; i < id->nsubscribe && n < SSE_CHANNELS; i++) {
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = strcmp(names[k], id->subscribe[i]) == 0;
        if (seen)
            continue;
        names[n++] = id->subscribe[i];
        h = fnv1a(fnv1a(h, ","), id->subscribe[i]);
    }
    s->npos = (uint8_t)n;
    s->list_hash = h;
}

/* The Last-Event-ID header, else the last_event_id query parameter; NULL
 * if neither (or empty: EventSource sends none before its first id). */
static const char *last_event_id(const mp_http_req *req, char *buf, size_t len)
{
    const char *v = mp_http_header_get(req, "last-event-id");
    if (!v || !*v)
        v = mp_http_query_get(req, "last_event_id", buf, len);
    return v && *v ? v : NULL;
}

static int send_head(mp_conn *c, const mp_http_req *req)
{
    char origin[MP_CORS_ORIGIN_MAX], cors[MP_CORS_ORIGIN_MAX + 128], head[MP_CORS_ORIGIN_MAX + 512];
    mp_cors_request(req, origin, sizeof origin);   /* a GET: only finds the Origin to echo */
    mp_cors_headers(origin, cors, sizeof cors);
    /* No length: the stream ends when the connection does. */
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     "Connection: close\r\nX-Accel-Buffering: no\r\n%s\r\n", cors);
    mp_frame *f = n > 0 && (size_t)n < sizeof head ? mp_frame_copy(head, (size_t)n) : NULL;
    if (!f)
        return -1;
    send_frame(c, f);
    mp_frame_unref(f);
    mp_http_access_log(c, 200, 0);
    return 0;
}

static void send_welcome(mp_conn *c)
{
    mp_sse *s = c->sse;
    json_t *chans = json_array(), *epochs = json_object();
    for (int i = 0; i < s->npos; i++) {
        if (!s->pos[i].sub)
            continue;
        const char *name = channel_at(s, i);
        char epoch[32];
        uint64_t last;
        mp_delivery_position(name, epoch, &last);
        json_array_append_new(chans, json_string(name));
        json_object_set_new(epochs, name, json_string(epoch));
    }
    char conn_id[24];
    snprintf(conn_id, sizeof conn_id, "%llu", (unsigned long long)c->id);
    json_t *w = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:b}", "type", "welcome", "conn", conn_id,
                          "user", s->ident->user, "device", s->ident->device, "kind", s->ident->kind,
                          "channels", chans, "epochs", epochs, "acks", 0);
    if (w && s->ident->expires > 0) {
        double left = (s->ident->expires - ev_time()) * 1000.0;
        json_object_set_new(w, "expires_in_ms", json_integer(left > 0 ? (json_int_t)left : 0));
    }
    send_event(c, "welcome", w);
}

/* Subscribes every listed channel and sets each position: the client's from
 * its Last-Event-ID (want), else the channel's head. */
static void join(mp_conn *c, const char *names[SSE_CHANNELS], const sse_pos *want)
{
    mp_sse *s = c->sse;
    for (int i = 0; i < s->npos; i++) {
        sse_pos *p = &s->pos[i];
        mp_channel *ch = mp_hub_channel(names[i], 1);
        if (!ch || mp_hub_subscribe(&s->subs, c, ch, &p->sub) < 0) {
            p->sub = NULL;
            mp_warn("sse subscribe failed", "conn=%llu channel=%s", (unsigned long long)c->id, names[i]);
            continue;
        }
        char epoch[32];
        uint64_t last;
        mp_delivery_position(names[i], epoch, &last);
        if (want) {
            *p = (sse_pos){p->sub, want[i].seq, want[i].epoch_hash, want[i].has_epoch};
        } else {
            p->seq = last;
            set_epoch(p, epoch);
        }
    }
}

/* Replays what the client missed on each channel. Its epoch is known by
 * hash only: the current epoch if the hash matches, else one that cannot
 * match (a reset `epoch` follows); none if it had seen no epoch at all. */
static void resume(mp_conn *c)
{
    mp_sse *s = c->sse;
    for (int i = 0; i < s->npos && c->state == MP_CONN_SSE; i++) {
        sse_pos *p = &s->pos[i];
        if (!p->sub)
            continue;
        char epoch[32];
        uint64_t last;
        mp_delivery_position(channel_at(s, i), epoch, &last);
        sse_pos now;
        set_epoch(&now, epoch);
        const char *reader = !p->has_epoch ? "" : now.has_epoch && now.epoch_hash == p->epoch_hash ? epoch : "!";
        mp_delivery_replay(c, p->sub, reader, p->seq);
    }
}

void mp_sse_open(mp_http_req *req)
{
    mp_conn *c = req->conn;
    mp_identity *id = NULL;
    if (mp_http_authenticate(req, &id) < 0)
        return;
    mp_sse *s = calloc(1, sizeof *s);
    if (!s) {
        free(id);
        mp_http_error(c, 503, "unavailable", "server out of memory");
        return;
    }
    s->ident = id;
    if (check_identity(c, id, s->personal, sizeof s->personal) < 0) {
        free(id);
        free(s);
        return;
    }
    const char *names[SSE_CHANNELS];
    list_channels(s, names);
    char idbuf[MP_SSE_ID_MAX + 2];
    const char *last = last_event_id(req, idbuf, sizeof idbuf);
    sse_pos want[SSE_CHANNELS];
    const char *why = NULL;
    if (last && parse_id(s, last, want, &why) < 0) {
        free(id);
        free(s);
        mp_http_error(c, 400, "bad_last_event_id", why);
        return;
    }
    if (send_head(c, req) < 0) {
        free(id);
        free(s);
        mp_conn_abort(c);
        return;
    }
    /* Without a cap the kernel grows a stalled client's send buffer to
     * megabytes before max_outbound_bytes even starts counting. */
    int sndbuf = mp.cfg.socket_send_buffer;
    setsockopt(c->io.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    c->state = MP_CONN_SSE;
    c->sse = s;
    mp.nsse++;
    s->conn = c;
    s->route_index = (int16_t)req->route_index;
    mp_route_counters_of(req->route->path)->handshakes++;
    mp_tlist_touch(&mp_idle_list, &c->tnode);   /* heartbeats from now */
    join(c, names, last ? want : NULL);
    send_welcome(c);
    if (last)
        resume(c);
    mp_http_session_free(c);   /* req lives in the HTTP arena: last use above */
    mp_debug("sse connected", "conn=%llu user=%s device=%s resume=%d remote=%s", (unsigned long long)c->id,
             id->user, id->device, last != NULL, mp_conn_remote(c));
    if (c->sse && route_has(s, MP_HOOK_ON_CONNECT))
        conn_event(c, "on_connect", 0, NULL);
}
