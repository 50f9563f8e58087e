/* ws_handshake.c — a WebSocket upgrade request, start to finish: the
 * headers checked, the route's auth chain run, the channels asked for
 * checked, the session made and indexed by device (replacing duplicates),
 * the 101 answer, then the channels joined and what each is owed sent.
 */
#include "ws_int.h"

#include <errno.h>
#include <jansson.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "deadlines.h"
#include "deflate.h"
#include "delivery.h"
#include "devices.h"
#include "hub.h"
#include "log.h"
#include "route_counters.h"
#include "server.h"

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
        mp_conn_close_stream(other, 4002, "replaced by a newer connection");   /* leaves the index */
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
    mp_route_counters_of(route->path)->handshakes++;
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
