/* query.c — see query.h. History answers are built by appending the stored
 * frames' payloads (already the JSON message envelopes) to a bounded body:
 * nothing is parsed or re-encoded. */
#include "query.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "hub.h"
#include "lua_host.h"
#include "route_counters.h"
#include "server.h"
#include "store.h"
#include "ws.h"

#define HISTORY_DEFAULT_LIMIT 100
#define HISTORY_MAX_LIMIT 1000

/* Runs auth and checks the identity may read name. Returns 0, or answers. */
static int authorize(mp_http_req *req, const char *name)
{
    mp_identity *id = NULL;
    if (mp_http_authenticate(req, &id) < 0)
        return -1;
    int ok = mp_identity_allows(id, name);
    free(id);
    if (!ok) {
        char msg[MP_NAME_MAX + 48];
        snprintf(msg, sizeof msg, "this token may not read %s", name);
        mp_http_error(req->conn, 403, "forbidden", msg);
        return -1;
    }
    return 0;
}

/* A query parameter that must be an integer in [min, max]; def if absent.
 * Returns -1 (and answers 400) if present but malformed. */
static int int_param(mp_http_req *req, const char *name, long long min, long long max, long long def,
                     long long *out)
{
    char buf[32];
    const char *v = mp_http_query_get(req, name, buf, sizeof buf);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < min || n > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", name, min, max);
        mp_http_error(req->conn, 400, "bad_request", msg);
        return -1;
    }
    *out = n;
    return 0;
}

static void got_history(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st;
    mp_buf *a = ud;
    if (status < 0 || !h) {
        a->failed = 1;
        return;
    }
    mp_buf_printf(a, "\"epoch\":\"%s\",\"first_seq\":%llu,\"last_seq\":%llu,\"more\":%s,\"messages\":[",
                  h->epoch, (unsigned long long)h->first_seq, (unsigned long long)h->last_seq,
                  h->more ? "true" : "false");
    for (size_t i = 0; i < h->count; i++) {
        size_t plen;
        const uint8_t *p = mp_frame_ws_payload(h->items[i].frame, &plen);
        if (i)
            mp_buf_append(a, ",", 1);
        mp_buf_append(a, p, plen);
    }
    mp_buf_append(a, "]}", 2);
}

void mp_query_history(mp_http_req *req)
{
    char channel[MP_NAME_MAX + 2];   /* one more: a 129-byte name must not pass truncated */
    if (!mp_http_query_get(req, "channel", channel, sizeof channel) ||
        !mp_hub_valid_name(channel, strlen(channel))) {
        mp_http_error(req->conn, 400, "bad_channel", "?channel= must name a channel (1-128 bytes of A-Z a-z 0-9 _ - . : @)");
        return;
    }
    long long since, limit;
    if (int_param(req, "since", 0, (long long)1 << 62, 0, &since) < 0 ||
        int_param(req, "limit", 1, HISTORY_MAX_LIMIT, HISTORY_DEFAULT_LIMIT, &limit) < 0)
        return;
    if (authorize(req, channel) < 0)
        return;
    mp_buf a = {0};
    mp_buf_printf(&a, "{\"channel\":\"%s\",", channel);
    mp_store_read(mp.store, channel, NULL, (uint64_t)since, (size_t)limit, got_history, &a);
    if (a.failed)
        mp_http_error(req->conn, 503, "unavailable", "the history could not be read");
    else
        mp_http_respond(req->conn, 200, "", a.s, a.len);
    mp_buf_free(&a);
}

void mp_query_presence(mp_http_req *req)
{
    char user[MP_NAME_MAX + 2], personal[MP_NAME_MAX + 8];
    if (!mp_http_query_get(req, "user", user, sizeof user) || !mp_hub_valid_name(user, strlen(user)) ||
        strlen(user) + 5 > MP_NAME_MAX) {
        mp_http_error(req->conn, 400, "bad_user", "?user= must name a user (1-128 bytes of A-Z a-z 0-9 _ - . : @)");
        return;
    }
    snprintf(personal, sizeof personal, "user:%s", user);
    if (authorize(req, personal) < 0)
        return;
    mp_channel *ch = mp_hub_channel(personal, 0);
    json_t *devices = json_array();
    for (mp_sub *s = ch ? mp_hub_channel_subs(ch) : NULL; s; s = s->ch_next) {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)s->conn->id);
        json_array_append_new(devices, json_pack("{s:s, s:s, s:s}", "device", mp_ws_device(s->conn),
                                                 "kind", mp_ws_kind(s->conn), "conn", id));
    }
    size_t n = json_array_size(devices);
    json_t *answer = json_pack("{s:s, s:b, s:I, s:o}", "user", user, "online", n > 0, "connections",
                               (json_int_t)n, "devices", devices);
    char *text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
    json_decref(answer);
    if (text)
        mp_http_respond(req->conn, 200, "", text, strlen(text));
    else
        mp_http_error(req->conn, 503, "unavailable", "server out of memory");
    free(text);
}
