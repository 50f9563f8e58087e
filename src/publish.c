/* publish.c — see publish.h. JSON is parsed with jansson; each item's data
 * is serialised once, compactly, and becomes part of one shared frame. */
#include "publish.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hub.h"
#include "log.h"
#include "lua_host.h"
#include "route_counters.h"
#include "server.h"
#include "store.h"

typedef struct item {
    char name[MP_NAME_MAX + 8];   /* target channel as the publisher named it */
    char *data;                   /* compact JSON text (malloc'd) */
    mp_publish_opts opts;         /* ttl, store */
    mp_routed *routed;            /* set when the route has route hooks */
} item;

static void fail(mp_conn *c, int status, const char *code, const char *prefix, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s%s", prefix, what);
    mp_http_error(c, status, code, msg);
}

/* Checks one item and resolves its channel. Returns 0, or answers and returns -1. */
static int check_item(mp_conn *c, const mp_identity *pub, json_t *obj, const char *where, item *out)
{
    if (!json_is_object(obj)) {
        fail(c, 400, "bad_message", where, "a message is a JSON object");
        return -1;
    }
    json_t *jch = json_object_get(obj, "channel");
    json_t *juser = json_object_get(obj, "user");
    if ((jch && juser) || (!jch && !juser)) {
        fail(c, 400, "missing_target", where, "name exactly one of \"channel\" or \"user\"");
        return -1;
    }
    json_t *target = jch ? jch : juser;
    if (!json_is_string(target)) {
        fail(c, 400, "bad_message", where, jch ? "\"channel\" must be a string" : "\"user\" must be a string");
        return -1;
    }
    json_t *data = json_object_get(obj, "data");
    if (!data) {
        fail(c, 400, "missing_data", where, "missing \"data\"");
        return -1;
    }
    const char *tname = json_string_value(target);
    size_t tlen = json_string_length(target);
    char name[MP_NAME_MAX + 8];
    int n = snprintf(name, sizeof name, "%s%s", juser ? "user:" : "", tname);
    if (!mp_hub_valid_name(tname, tlen) || n < 0 || (size_t)n >= sizeof name ||
        !mp_hub_valid_name(name, (size_t)n)) {
        fail(c, 400, "bad_channel", where, "channel and user names are 1-128 bytes of A-Z a-z 0-9 _ - . : @");
        return -1;
    }
    if (!mp_identity_allows(pub, name)) {
        char msg[MP_NAME_MAX + 64];
        snprintf(msg, sizeof msg, "this publisher may not publish to %s", name);
        fail(c, 403, "forbidden", where, msg);
        return -1;
    }
    json_t *jttl = json_object_get(obj, "ttl"), *jstore = json_object_get(obj, "store");
    if (jttl && (!json_is_number(jttl) || json_number_value(jttl) <= 0 || json_number_value(jttl) > 31536000)) {
        fail(c, 400, "bad_message", where, "\"ttl\" is seconds, a number above 0 and at most a year");
        return -1;
    }
    if (jstore && !json_is_boolean(jstore)) {
        fail(c, 400, "bad_message", where, "\"store\" is true or false");
        return -1;
    }
    out->opts.store = jstore ? json_is_true(jstore) : 1;
    out->opts.ttl_ms = jttl ? (uint64_t)(json_number_value(jttl) * 1000.0) : 0;
    memcpy(out->name, name, (size_t)n + 1);
    out->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    if (!out->data) {
        fail(c, 503, "unavailable", where, "server out of memory");
        return -1;
    }
    return 0;
}

static json_t *result_json(const char *channel, const mp_publish_result *r)
{
    return json_pack("{s:s, s:I, s:s, s:I}", "channel", channel, "seq", (json_int_t)r->seq,
                     "id", r->id, "recipients", (json_int_t)r->recipients);
}

/* The answer for a message the store refused: the error body's shape with
 * the channel, so a batch's answer says which items to retry. */
static json_t *refused_json(const char *channel, int status)
{
    const char *code = status == MP_STORE_ECHANNELS ? "too_many_channels"
                     : status == MP_STORE_EFULL ? "store_full" : "unavailable";
    mp_warn("publish refused", "channel=%s error=\"%s\"", channel, mp_store_strerror(status));
    return json_pack("{s:s, s:s, s:s}", "error", code, "message", mp_store_strerror(status), "channel", channel);
}

static json_t *publish_one(const char *channel, const char *data, size_t len, const mp_publish_opts *opts,
                           int *refused)
{
    mp_publish_result r;
    int status = mp_hub_publish(channel, data, len, opts, &r);
    if (status < 0) {
        *refused = 1;
        return refused_json(channel, status);
    }
    return result_json(channel, &r);
}

/* Publishes one item to its channel, or (after route hooks) to each of its
 * channels: the answer is then an array with one result per channel. Sets
 * *refused if the store refused any of them. */
static json_t *publish_item(const item *it, int *refused)
{
    if (!it->routed)
        return publish_one(it->name, it->data, strlen(it->data), &it->opts, refused);
    const mp_routed *m = it->routed;
    mp_publish_opts opts = it->opts;
    opts.kinds = m->kinds;
    opts.nkinds = m->nkinds;
    if (m->nchannels == 1)
        return publish_one(m->channels[0], m->data, m->data_len, &opts, refused);
    json_t *all = json_array();
    for (int i = 0; i < m->nchannels; i++)
        json_array_append_new(all, publish_one(m->channels[i], m->data, m->data_len, &opts, refused));
    return all;
}

/* Route hooks may retarget: their channels must be valid and creatable. */
static int check_routed(mp_conn *c, item *items, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const mp_routed *m = items[i].routed;
        if (m->nchannels == 0) {
            mp_http_error(c, 500, "plugin_error", "a route plugin left a message without a channel");
            return -1;
        }
        for (int k = 0; k < m->nchannels; k++) {
            if (!mp_hub_valid_name(m->channels[k], strlen(m->channels[k]))) {
                mp_http_error(c, 500, "plugin_error", "a route plugin produced an invalid channel name");
                return -1;
            }
        }
    }
    return 0;
}

static int run_route_hooks(mp_http_req *req, const mp_identity *pub, item *items, size_t count)
{
    const char *names[count], *datas[count];
    mp_routed *routed[count];
    for (size_t i = 0; i < count; i++) {
        names[i] = items[i].name;
        datas[i] = items[i].data;
    }
    mp_denial deny;
    if (mp_lua_route(req, pub->user, (int)count, names, datas, routed, &deny) < 0) {
        mp_http_deny(req->conn, &deny);
        return -1;
    }
    for (size_t i = 0; i < count; i++)
        items[i].routed = routed[i];
    return check_routed(req->conn, items, count);
}

static void free_items(item *items, size_t count)
{
    for (size_t i = 0; items && i < count; i++) {
        free(items[i].data);
        free(items[i].routed);
    }
    free(items);
}

static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* JSON, or no type at all: anything else (a form, text) is refused rather
 * than guessed at. */
static int content_type_ok(const mp_http_req *req)
{
    const char *ct = mp_http_header_get(req, "content-type");
    if (!ct)
        return 1;
    while (*ct == ' ')
        ct++;
    return media_type_is(ct, "application/json");
}

static void respond_json(mp_conn *c, int status, json_t *answer)
{
    char *text = json_dumps(answer, JSON_COMPACT);
    if (!text) {
        mp_http_error(c, 500, "internal", "could not encode the answer");
        return;
    }
    mp_http_respond(c, status, "", text, strlen(text));
    free(text);
}

/* 200 only if every message was stored and sent: any refusal makes it a
 * 503 whose body still says, item by item, what was published. */
static void publish_all(mp_conn *c, item *items, size_t count, int batch)
{
    json_t *answer = batch ? json_array() : NULL;
    int refused = 0;
    for (size_t i = 0; i < count; i++) {
        json_t *r = publish_item(&items[i], &refused);
        if (batch)
            json_array_append_new(answer, r);
        else
            answer = r;
    }
    if (answer) {
        respond_json(c, refused ? 503 : 200, answer);
        json_decref(answer);
    } else {
        mp_http_error(c, 503, "unavailable", "server out of memory");
    }
}

/* During a drain (SIGTERM) WebSockets are closing, so a publish would reach
 * nobody and be lost with the process: refuse it, so that the publisher
 * retries elsewhere or once a new server is up (the drain ends within
 * timeouts.shutdown_ms, hence the Retry-After). */
static int refuse_if_stopping(mp_conn *c)
{
    if (!mp.stopping)
        return 0;
    mp_denial d = {.status = 503, .code = "shutting_down",
                   .message = "the server is shutting down: nothing was published; retry after Retry-After seconds"};
    d.retry_after = (int)ceil(mp.cfg.shutdown_grace);
    if (d.retry_after < 1)
        d.retry_after = 1;
    mp_http_deny(c, &d);
    return -1;
}

void mp_publish_handle(mp_http_req *req)
{
    mp_conn *c = req->conn;
    if (refuse_if_stopping(c) < 0)
        return;
    if (!content_type_ok(req)) {
        mp_http_error(c, 415, "unsupported_media_type", "publish bodies are application/json");
        return;
    }
    mp_identity *pub = NULL;
    if (mp_http_authenticate(req, &pub) < 0)
        return;
    json_error_t jerr;
    json_t *root = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &jerr);
    if (!root) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        mp_http_error(c, 400, "bad_json", msg);
        free(pub);
        return;
    }
    int batch = json_is_array(root);
    size_t count = batch ? json_array_size(root) : 1;
    item *items = NULL;
    if (!json_is_object(root) && !batch) {
        mp_http_error(c, 400, "bad_message", "the body is a message object or an array of them");
    } else if (batch && count == 0) {
        mp_http_error(c, 400, "empty_batch", "a batch needs at least one message");
    } else if (count > mp.cfg.max_batch) {
        mp_http_error(c, 400, "batch_too_large", "more messages than limits.max_batch");
    } else if (!(items = calloc(count, sizeof *items))) {
        mp_http_error(c, 503, "unavailable", "server out of memory");
    } else {
        int ok = 1;
        for (size_t i = 0; ok && i < count; i++) {
            char where[40] = "";
            if (batch)
                snprintf(where, sizeof where, "item %zu: ", i);
            ok = check_item(c, pub, batch ? json_array_get(root, i) : root, where, &items[i]) == 0;
        }
        json_decref(root);
        root = NULL;
        if (ok && (req->route->hooks & MP_HOOK_ROUTE))
            ok = run_route_hooks(req, pub, items, count) == 0;
        if (ok) {
            publish_all(c, items, count, batch);
            mp_route_counters_of(req->route->path)->published += count;
        }
    }
    free_items(items, count);
    json_decref(root);
    free(pub);
}
