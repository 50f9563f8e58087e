/* http.c — see http.h. http_parser callbacks fill one bounded arena; a
 * complete request is dispatched from on_message_complete (or, for an
 * upgrade, right after the parser stops so the bytes behind the request go to
 * the WebSocket).
 *
 * Trailers (fields after the last chunk of a chunked body) reach the same
 * header callbacks as headers. They are ignored: counted against
 * limits.max_header_bytes, never stored, never seen by a handler or a plugin
 * (a trailer must not authenticate a request whose headers were already
 * judged). docs/protocol.md says so. */
#include "http.h"

#include <ctype.h>
#include <limits.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth_cache.h"
#include "clock.h"
#include "cors.h"
#include "log.h"
#include "lua_host.h"
#include "metrics.h"
#include "publish.h"
#include "query.h"
#include "route_counters.h"
#include "ws.h"

enum { PART_NONE, PART_URL, PART_FIELD, PART_VALUE };

typedef struct mp_http {
    http_parser parser;
    mp_conn *conn;
    char *arena;                 /* URL and headers, NUL-separated */
    size_t arena_len, arena_cap;
    uint32_t url_off;
    uint32_t name_off[MP_HTTP_MAX_HEADERS];
    uint32_t value_off[MP_HTTP_MAX_HEADERS];
    int nhdr;
    int part;                    /* which piece the last callback appended to */
    char *body;
    size_t body_len, body_cap;
    int has_length;              /* Content-Length or chunked */
    int in_trailer;              /* headers are complete: fields now are trailers */
    size_t trailer_len;          /* trailer bytes seen (and dropped), bounded */
    int started;                 /* bytes of a request have arrived */
    int upgrade;                 /* dispatch after the parser stops */
    int in_execute;              /* free is deferred while the parser runs */
    int free_pending;
    int reject_status;           /* set by a callback that refuses the request */
    const char *reject_code, *reject_msg;
    ev_tstamp started_at;        /* for the access log */
    const char *route_path;      /* set at dispatch, for the access log */
    char cors_origin[MP_CORS_ORIGIN_MAX];   /* the allowed Origin to echo, or "" (cors.c) */
    mp_auth_cache *auth_cache;   /* the last allowed request's identity (auth_cache.h) */
} mp_http;

static http_parser_settings settings;

/* ---- arena ------------------------------------------------------------- */

static int reject(mp_http *h, int status, const char *code, const char *msg)
{
    h->reject_status = status;
    h->reject_code = code;
    h->reject_msg = msg;
    return -1;
}

static int arena_append(mp_http *h, const char *p, size_t n)
{
    size_t limit = mp.cfg.max_header_bytes;
    if (h->arena_len + n + 1 > limit)
        return reject(h, 431, "headers_too_large", "request line and headers exceed limits.max_header_bytes");
    if (h->arena_len + n + 1 > h->arena_cap) {
        size_t cap = h->arena_cap ? h->arena_cap : 512;
        while (cap < h->arena_len + n + 1)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        char *a = realloc(h->arena, cap);
        if (!a)
            return reject(h, 503, "out_of_memory", "server out of memory");
        h->arena = a;
        h->arena_cap = cap;
    }
    memcpy(h->arena + h->arena_len, p, n);
    h->arena_len += n;
    return 0;
}

/* Ends the current piece with a NUL and starts `part` at the current offset. */
static int switch_part(mp_http *h, int part)
{
    if (h->part != PART_NONE && arena_append(h, "", 1) < 0)
        return -1;
    h->part = part;
    return 0;
}

/* ---- parser callbacks -------------------------------------------------- */

static int on_message_begin(http_parser *p)
{
    mp_http *h = p->data;
    h->arena_len = 0;
    h->nhdr = 0;
    h->part = PART_NONE;
    h->body_len = 0;
    h->has_length = 0;
    h->in_trailer = 0;
    h->trailer_len = 0;
    h->started = 1;
    h->started_at = mp_clock_mono();   /* ev_now is the iteration's start: see clock.h */
    h->route_path = NULL;
    h->cors_origin[0] = '\0';
    mp_tlist_touch(&mp_request_list, &h->conn->tnode);  /* the whole request within request_ms */
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    mp_http *h = p->data;
    if (h->part != PART_URL) {
        if (switch_part(h, PART_URL) < 0)
            return -1;
        h->url_off = (uint32_t)h->arena_len;
    }
    return arena_append(h, at, n);
}

/* A trailer field or value: dropped, but its size still counts. */
static int skip_trailer(mp_http *h, size_t n)
{
    h->trailer_len += n;
    if (h->trailer_len > mp.cfg.max_header_bytes)
        return reject(h, 431, "headers_too_large", "chunked trailers exceed limits.max_header_bytes");
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    mp_http *h = p->data;
    if (h->in_trailer)
        return skip_trailer(h, n);
    if (h->part != PART_FIELD) {
        if (h->nhdr == MP_HTTP_MAX_HEADERS)
            return reject(h, 431, "headers_too_large", "more than 64 request headers");
        if (switch_part(h, PART_FIELD) < 0)
            return -1;
        h->name_off[h->nhdr] = (uint32_t)h->arena_len;
        h->value_off[h->nhdr] = UINT32_MAX;
        h->nhdr++;
    }
    return arena_append(h, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    mp_http *h = p->data;
    if (h->in_trailer)
        return skip_trailer(h, n);
    if (h->part != PART_VALUE) {
        if (switch_part(h, PART_VALUE) < 0)
            return -1;
        h->value_off[h->nhdr - 1] = (uint32_t)h->arena_len;
    }
    return arena_append(h, at, n);
}

/* curl and others wait (about a second) for "100 Continue" before sending a
 * body when they ask with Expect: 100-continue; the size was accepted above. */
static void send_continue_if_expected(mp_http *h)
{
    for (int i = 0; i < h->nhdr; i++) {
        if (strcmp(h->arena + h->name_off[i], "expect") == 0 &&
            strcasecmp(h->arena + h->value_off[i], "100-continue") == 0) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            mp_frame *f = mp_frame_copy(cont, sizeof cont - 1);
            if (f) {
                mp_conn_send(h->conn, f);
                mp_frame_unref(f);
            }
            return;
        }
    }
}

static int on_headers_complete(http_parser *p)
{
    mp_http *h = p->data;
    if (switch_part(h, PART_NONE) < 0)
        return -1;
    h->in_trailer = 1;   /* any field from now on is a trailer */
    for (int i = 0; i < h->nhdr; i++) {
        for (char *s = h->arena + h->name_off[i]; *s; s++)
            *s = (char)tolower((unsigned char)*s);
        if (h->value_off[i] == UINT32_MAX) {   /* "Name:" with an empty value */
            if (arena_append(h, "", 1) < 0)
                return -1;
            h->value_off[i] = (uint32_t)h->arena_len - 1;
        }
    }
    h->has_length = (p->flags & F_CHUNKED) || p->content_length != ULLONG_MAX;
    if (p->content_length != ULLONG_MAX && p->content_length > mp.cfg.max_body_bytes)
        return reject(h, 413, "body_too_large", "request body exceeds limits.max_body_bytes");
    send_continue_if_expected(h);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    mp_http *h = p->data;
    if (h->body_len + n > mp.cfg.max_body_bytes)
        return reject(h, 413, "body_too_large", "request body exceeds limits.max_body_bytes");
    if (h->body_len + n + 1 > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 1024;
        while (cap < h->body_len + n + 1)
            cap *= 2;
        if (cap > mp.cfg.max_body_bytes + 1)
            cap = mp.cfg.max_body_bytes + 1;
        char *b = realloc(h->body, cap);
        if (!b)
            return reject(h, 503, "out_of_memory", "server out of memory");
        h->body = b;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, at, n);
    h->body_len += n;
    return 0;
}

static void dispatch(mp_http *h, const uint8_t *rest, size_t rest_len);

static int on_message_complete(http_parser *p)
{
    mp_http *h = p->data;
    if (p->upgrade) {
        h->upgrade = 1;   /* the parser stops here; mp_http_feed dispatches */
        return 0;
    }
    dispatch(h, NULL, 0);
    /* A pipelined request behind this one is parsed only while the
     * connection still speaks HTTP. */
    return h->conn->state == MP_CONN_HTTP && !h->free_pending ? 0 : -1;
}

/* ---- request view ------------------------------------------------------ */

const char *mp_http_header_get(const mp_http_req *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

const char *mp_http_query_get(const mp_http_req *req, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *q = req->query;
    while (*q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        if ((size_t)(end - q) >= nlen && strncmp(q, name, nlen) == 0 &&
            (q[nlen] == '=' || q + nlen == end)) {
            const char *v = q + nlen + (q[nlen] == '=' ? 1 : 0);
            size_t o = 0;
            while (v < end && o + 1 < outlen) {
                if (*v == '%' && end - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                    out[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                    v += 3;
                } else {
                    out[o++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            out[o] = '\0';
            return out;
        }
        q = amp ? amp + 1 : end;
    }
    return NULL;
}

/* ---- answers ----------------------------------------------------------- */

static const char *status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Unknown";
    }
}

static int keep_alive(mp_conn *c)
{
    return c->http && http_should_keep_alive(&c->http->parser) && !c->http->reject_status;
}

void mp_http_respond(mp_conn *c, int status, const char *extra_headers, const char *body, size_t body_len)
{
    mp_http_respond_typed(c, status, "application/json", extra_headers, body, body_len);
}

/* One line per answered request. The path only: a query string may carry a
 * token. Bytes that could break the line are replaced. */
void mp_http_access_log(mp_conn *c, int status, size_t bytes)
{
    mp_http *h = c->http;
    if (!mp.cfg.log_access || !h || mp_log_level > MP_LOG_INFO)
        return;
    char path[160] = "-";
    if (h->arena && h->url_off < h->arena_len) {
        /* The URL may be cut short (a timeout mid-request): stop at the
         * arena's end as well as at its NUL. */
        const char *u = h->arena + h->url_off;
        size_t max = h->arena_len - h->url_off, i = 0;
        for (; i < max && u[i] && u[i] != '?' && i < sizeof path - 1; i++)
            path[i] = (u[i] == '"' || u[i] == '\\' || (unsigned char)u[i] < 0x21) ? '_' : u[i];
        path[i ? i : 1] = '\0';
    }
    mp_info("http", "conn=%llu method=%s path=\"%s\" status=%d bytes=%zu ms=%.3f remote=%s route=%s",
            (unsigned long long)c->id, http_method_str(h->parser.method), path, status, bytes,
            (mp_clock_mono() - h->started_at) * 1000.0, mp_conn_remote(c), h->route_path ? h->route_path : "-");
}

void mp_http_respond_typed(mp_conn *c, int status, const char *content_type, const char *extra_headers,
                           const char *body, size_t body_len)
{
    mp_http_access_log(c, status, body_len);
    char head[2048], cors[MP_CORS_ORIGIN_MAX + 128], type[256] = "";
    mp_cors_headers(c->http ? c->http->cors_origin : NULL, cors, sizeof cors);
    if (status != 204)   /* a 204 has neither body nor Content-Length (RFC 9110 8.6) */
        snprintf(type, sizeof type, "Content-Type: %s\r\nContent-Length: %zu\r\n", content_type, body_len);
    int ka = keep_alive(c) && !mp.stopping;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%sConnection: %s\r\n%s%s\r\n",
                     status, status_text(status), type, ka ? "keep-alive" : "close",
                     extra_headers ? extra_headers : "", cors);
    if (n < 0 || (size_t)n >= sizeof head) {
        mp_conn_abort(c);
        return;
    }
    mp_frame *f = mp_frame_new((size_t)n + body_len);
    if (!f) {
        mp_conn_abort(c);
        return;
    }
    memcpy(f->data, head, (size_t)n);
    if (body_len)
        memcpy(f->data + n, body, body_len);
    f->len = (uint32_t)((size_t)n + body_len);
    mp_conn_send(c, f);
    mp_frame_unref(f);
    if (!ka)
        mp_conn_close_after_flush(c);
}

/* {"error":code,"message":message}; a fixed body if the text cannot be
 * encoded (a plugin's message that is not UTF-8). */
static void respond_error(mp_conn *c, int status, const char *extra, const char *code, const char *message)
{
    json_t *obj = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (body)
        mp_http_respond(c, status, extra, body, strlen(body));
    else
        mp_http_respond(c, status, extra, "{\"error\":\"internal\"}", 19);
    free(body);
}

void mp_http_error(mp_conn *c, int status, const char *code, const char *message)
{
    respond_error(c, status, "", code, message);
}

void mp_http_deny(mp_conn *c, const mp_denial *d)
{
    char extra[64] = "";
    if (d->retry_after > 0)
        snprintf(extra, sizeof extra, "Retry-After: %d\r\n", d->retry_after);
    respond_error(c, d->status, extra, d->code, d->message);
}

/* A keep-alive connection repeating its credentials gets its last answer
 * again (auth_cache.h says when that is safe) instead of a Lua call. */
static void auth_key(const mp_http_req *req, mp_auth_key *k)
{
    mp_auth_key_init(k, req->route_index);
    for (int i = 0; i < req->nheaders; i++)
        if (strcmp(req->headers[i].name, "authorization") == 0)
            mp_auth_key_header(k, req->headers[i].value);
    mp_auth_key_query(k, req->query);
}

int mp_http_authenticate(const mp_http_req *req, mp_identity **out)
{
    mp_http *h = req->conn->http;
    int cacheable = h && mp_auth_cache_eligible(req->route);
    mp_auth_key key;
    if (cacheable)
        auth_key(req, &key);
    if (cacheable && (*out = mp_auth_cache_get(h->auth_cache, &key)) != NULL) {
        mp.stats.auth_cache_hits++;
        return 0;
    }
    if (cacheable)
        mp.stats.auth_cache_misses++;
    mp_denial deny;
    if (mp_lua_auth(req, out, &deny) == 0) {
        if (cacheable)
            mp_auth_cache_put(&h->auth_cache, &key, *out);
        return 0;
    }
    mp.stats.auth_denials++;
    mp_route_counters_denied(req->route->path, deny.status);
    mp_http_deny(req->conn, &deny);
    return -1;
}

static void method_not_allowed(mp_conn *c, const char *allow)
{
    char extra[64], body[160];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    int n = snprintf(body, sizeof body,
                     "{\"error\":\"method_not_allowed\",\"message\":\"this route accepts %s only\"}", allow);
    mp_http_respond(c, 405, extra, body, (size_t)n);
}

/* ---- routing ----------------------------------------------------------- */

static int route_for(const char *path)
{
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < mp.cfg.nroutes; i++) {
        const mp_route *r = &mp.cfg.routes[i];
        int root = r->path_len == 1 && r->path[0] == '/';
        int hit = root || (strncmp(path, r->path, r->path_len) == 0 &&
                           (path[r->path_len] == '\0' || path[r->path_len] == '/'));
        if (hit && (best < 0 || r->path_len > best_len)) {
            best = i;
            best_len = r->path_len;
        }
    }
    return best;
}

static void handle_health(mp_http_req *req)
{
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        method_not_allowed(req->conn, "GET");
        return;
    }
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"connections\":%d,\"uptime_ms\":%.0f}",
                     mp.stopping ? "stopping" : "ok", mp.nconns, (ev_now(mp.loop) - mp.started) * 1000.0);
    mp_http_respond(req->conn, 200, "", body, (size_t)n);
}

static void dispatch(mp_http *h, const uint8_t *rest, size_t rest_len)
{
    mp_conn *c = h->conn;
    mp.stats.http_requests++;
    /* on_headers_complete ended every piece with a NUL. A request that
     * comes here otherwise is answered, never read past its arena. */
    if (!h->arena || h->part != PART_NONE || h->arena[h->arena_len - 1] != '\0') {
        h->started = 0;
        h->reject_status = 400;   /* no keep-alive after this */
        mp_http_error(c, 400, "bad_request", "malformed HTTP request");
        mp_conn_close_after_flush(c);
        return;
    }
    mp_http_header headers[MP_HTTP_MAX_HEADERS];
    for (int i = 0; i < h->nhdr; i++) {
        headers[i].name = h->arena + h->name_off[i];
        headers[i].value = h->arena + h->value_off[i];
    }
    /* Split the URL (NUL-terminated in the arena) into path and query. */
    char *url = h->arena + h->url_off;
    char *qmark = strchr(url, '?');
    if (qmark)
        *qmark = '\0';
    char *hash = strchr(qmark ? qmark + 1 : url, '#');
    if (hash)
        *hash = '\0';
    if (h->body)
        h->body[h->body_len] = '\0';
    mp_http_req req = {
        .method = http_method_str(h->parser.method),
        .path = url,
        .query = qmark ? qmark + 1 : "",
        .headers = headers,
        .nheaders = h->nhdr,
        .body = h->body ? h->body : "",
        .body_len = h->body_len,
        .conn = c,
    };
    h->started = 0;
    mp_tlist_touch(&mp_request_list, &c->tnode);   /* keep-alive idle from now */

    int ri = route_for(req.path);
    if (ri < 0 || url[0] != '/') {
        mp_http_error(c, 404, "not_found", "no route for this path");
        return;
    }
    req.route = &mp.cfg.routes[ri];
    req.route_index = ri;
    h->route_path = req.route->path;
    if (mp_cors_request(&req, h->cors_origin, sizeof h->cors_origin))
        return;   /* a CORS preflight, answered */
    switch (req.route->type) {
    case MP_ROUTE_HEALTH:
        handle_health(&req);
        break;
    case MP_ROUTE_PUBLISH:
        if (strcmp(req.method, "POST") != 0) {
            method_not_allowed(c, "POST");
        } else if (!h->has_length) {
            mp_http_error(c, 411, "length_required", "a publish body needs Content-Length or chunked encoding");
        } else {
            mp_publish_handle(&req);
        }
        break;
    case MP_ROUTE_METRICS:
        if (strcmp(req.method, "GET") != 0)
            method_not_allowed(c, "GET");
        else
            mp_metrics_handle(&req);
        break;
    case MP_ROUTE_HISTORY:
    case MP_ROUTE_PRESENCE:
        if (strcmp(req.method, "GET") != 0)
            method_not_allowed(c, "GET");
        else if (req.route->type == MP_ROUTE_HISTORY)
            mp_query_history(&req);
        else
            mp_query_presence(&req);
        break;
    case MP_ROUTE_SSE:
        if (strcmp(req.method, "GET") != 0)
            method_not_allowed(c, "GET");
        else
            mp_sse_stream.open(&req);
        break;
    case MP_ROUTE_WEBSOCKET:
        if (strcmp(req.method, "GET") != 0)
            method_not_allowed(c, "GET");
        else if (!h->upgrade)
            mp_ws_upgrade_required(c);
        else
            mp_ws_handshake(&req, rest, rest_len);
        break;
    }
}

/* ---- session ----------------------------------------------------------- */

int mp_http_session_new(mp_conn *c)
{
    if (!settings.on_message_complete) {
        settings.on_message_begin = on_message_begin;
        settings.on_url = on_url;
        settings.on_header_field = on_header_field;
        settings.on_header_value = on_header_value;
        settings.on_headers_complete = on_headers_complete;
        settings.on_body = on_body;
        settings.on_message_complete = on_message_complete;
    }
    mp_http *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->conn = c;
    c->http = h;
    return 0;
}

static void http_free(mp_http *h)
{
    mp_auth_cache_free(h->auth_cache);
    free(h->arena);
    free(h->body);
    free(h);
}

void mp_http_session_free(mp_conn *c)
{
    mp_http *h = c->http;
    if (!h)
        return;
    c->http = NULL;
    if (h->in_execute)
        h->free_pending = 1;    /* the parser is on the stack: mp_http_feed frees */
    else
        http_free(h);
}

void mp_http_feed(mp_conn *c, const uint8_t *data, size_t len)
{
    mp_http *h = c->http;
    for (;;) {
        h->in_execute = 1;
        size_t used = http_parser_execute(&h->parser, &settings, (const char *)data, len);
        h->in_execute = 0;
        if (h->free_pending) {
            http_free(h);
            return;
        }
        if (!h->upgrade)
            break;
        /* The parser stopped behind an upgrade request. Accepted, the rest
         * belongs to the WebSocket and h is freed; refused (answered as
         * HTTP on a live connection), the rest is the next request. */
        dispatch(h, data + used, len - used);
        if (c->http != h || c->state != MP_CONN_HTTP)
            return;   /* h may be freed: touch nothing */
        h->upgrade = 0;
        data += used;
        len -= used;
        if (len == 0)
            return;
    }
    if (h->reject_status) {
        mp_http_error(c, h->reject_status, h->reject_code, h->reject_msg);
        mp_conn_close_after_flush(c);
        return;
    }
    enum http_errno err = HTTP_PARSER_ERRNO(&h->parser);
    if (err != HPE_OK && c->state == MP_CONN_HTTP) {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(err));
        h->reject_status = 400;   /* no keep-alive after this */
        mp_http_error(c, 400, "bad_request", msg);
        mp_conn_close_after_flush(c);
    }
}

void mp_http_timeout(mp_conn *c)
{
    if (c->state != MP_CONN_HTTP || !c->http) {
        mp_conn_abort(c);
        return;
    }
    if (!c->http->started) {    /* idle keep-alive connection: just close */
        mp_conn_abort(c);
        return;
    }
    c->http->reject_status = 408;
    mp_http_error(c, 408, "request_timeout", "the request did not arrive within timeouts.request_ms");
    mp_conn_close_after_flush(c);
}
