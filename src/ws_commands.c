/* ws_commands.c — the frames a client sends on an open WebSocket: subscribe
 * (with a resume), unsubscribe, ack, refresh, and any other type for the
 * route's on_message hooks, after the route's message rate limit.
 */
#include "ws_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery.h"
#include "hub.h"
#include "server.h"
#include "store.h"

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
int epoch_valid(const char *e)
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
            mp_conn_close_stream(c, 1011, "internal error");
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
            mp_conn_close_stream(c, 1011, "internal error");
            return;
        }
        send_error(c, deny.code, deny.message, NULL);
        return;
    }
    if (reply && c->state == MP_CONN_WS)
        mp_ws_send_text(c, reply, strlen(reply));
    free(reply);
}

void handle_text(mp_conn *c, const uint8_t *msg, size_t len)
{
    if (route_has(c->ws, MP_HOOK_RATELIMIT)) {
        mp_conn_info info = conn_info(c);
        mp_denial deny;
        if (mp_lua_message_ratelimit(c->ws->route_index, &info, &deny) < 0) {
            if (deny.status >= 500)
                mp_conn_close_stream(c, 1011, "internal error");
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
