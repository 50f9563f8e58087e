/* request.h — a parsed HTTP request as its handlers see it.
 *
 * http.c fills it (http.h); the handlers above it and the Lua host below
 * them (auth and route hooks get the method, path, headers, remote address)
 * read it. Kept apart from http.h so the Lua host does not depend on the
 * HTTP protocol that calls it.
 */
#ifndef MP_REQUEST_H
#define MP_REQUEST_H

#include <stddef.h>

#include "net.h"
#include "server.h"

#define MP_HTTP_MAX_HEADERS 64

typedef struct mp_http_header {
    const char *name;     /* lower-cased, NUL-terminated, in the arena */
    const char *value;    /* NUL-terminated, in the arena */
} mp_http_header;

/* A parsed request, valid during its handler call only. */
typedef struct mp_http_req {
    const char *method;
    const char *path;     /* decoded? no: raw path, without query */
    const char *query;    /* raw query string without '?', "" if none */
    const mp_http_header *headers;
    int nheaders;
    const char *body;
    size_t body_len;
    const mp_route *route;
    int route_index;
    mp_conn *conn;
} mp_http_req;

#endif
