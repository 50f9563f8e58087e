/* http.h — HTTP/1.1 requests on a connection, parsed by http_parser.
 *
 * While a connection speaks HTTP it owns an mp_http session: the parser, one
 * arena holding the URL and headers (bounded by limits.max_header_bytes) and
 * the body (bounded by limits.max_body_bytes). A complete request is routed
 * by longest path prefix to the route's handler (health, publish, or the
 * WebSocket upgrade); the answer is queued as one frame. Keep-alive and
 * pipelining work; any answer that ends the connection (parse error, 408,
 * 413, 431, 503) is followed by a close once written.
 */
#ifndef MP_HTTP_H
#define MP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "identity.h"
#include "net.h"
#include "request.h"
#include "server.h"

int mp_http_session_new(mp_conn *c);
void mp_http_session_free(mp_conn *c);

/* Feeds bytes read from the socket; may answer, upgrade or close c. */
void mp_http_feed(mp_conn *c, const uint8_t *data, size_t len);

/* The request timeout fired for c: answer 408 and close. */
void mp_http_timeout(mp_conn *c);

/* Header value by lower-case name, or NULL. */
const char *mp_http_header_get(const mp_http_req *req, const char *name);

/* Value of a query parameter, percent-decoded into out (bounded); NULL if absent. */
const char *mp_http_query_get(const mp_http_req *req, const char *name, char *out, size_t outlen);

/* Queues a complete JSON answer. extra_headers is "" or lines ending in \r\n. */
void mp_http_respond(mp_conn *c, int status, const char *extra_headers,
                     const char *body, size_t body_len);

/* The access log line for an answer given outside mp_http_respond (101). */
void mp_http_access_log(mp_conn *c, int status, size_t bytes);

/* The same with another Content-Type. */
void mp_http_respond_typed(mp_conn *c, int status, const char *content_type, const char *extra_headers,
                           const char *body, size_t body_len);

/* Answers a plugin's denial: its status, code and message (and Retry-After
 * for a 429 that says when). */
void mp_http_deny(mp_conn *c, const mp_denial *d);

struct mp_identity;
/* Runs the route's auth chain (mp_lua_auth). Returns 0 with *out (caller
 * frees), or counts the denial (stats, metrics), answers it and returns -1. */
int mp_http_authenticate(const mp_http_req *req, struct mp_identity **out);

/* Queues {"error":code,"message":message} with the given status. */
void mp_http_error(mp_conn *c, int status, const char *code, const char *message);

#endif
