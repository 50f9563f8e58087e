/* cors.c — see cors.h. The policy is two strings the config built: the
 * allowed origins ("*" or space-delimited, so a match is one strstr of
 * " <origin> ") and the allowed request headers. */
#include "cors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

mp_cors *mp_cors_new(const char *origins, const char *headers, int max_age)
{
    mp_cors *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->origins = strdup(origins);
    c->headers = strdup(headers ? headers : "Authorization, Content-Type");
    c->max_age = max_age;
    if (!c->origins || !c->headers) {
        mp_cors_free(c);
        return NULL;
    }
    return c;
}

void mp_cors_free(mp_cors *c)
{
    if (!c)
        return;
    free(c->origins);
    free(c->headers);
    free(c);
}

/* An Origin header is one token: no space (it would match across two
 * listed origins), no control byte (it is echoed into a header line). */
static int origin_allowed(const mp_cors *c, const char *origin)
{
    size_t n = strlen(origin);
    if (n == 0 || n >= MP_CORS_ORIGIN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)origin[i] <= ' ' || origin[i] == 0x7f)
            return 0;
    if (strcmp(c->origins, "*") == 0)
        return 1;
    char needle[MP_CORS_ORIGIN_MAX + 2];
    snprintf(needle, sizeof needle, " %s ", origin);
    return strstr(c->origins, needle) != NULL;
}

static void answer_preflight(const mp_http_req *req, int allowed)
{
    if (!allowed) {
        mp_http_error(req->conn, 403, "origin_not_allowed",
                      "this origin may not call this route (the route's cors.origins)");
        return;
    }
    char extra[512];
    snprintf(extra, sizeof extra,
             "Access-Control-Allow-Methods: %s, OPTIONS\r\n"
             "Access-Control-Allow-Headers: %s\r\n"
             "Access-Control-Max-Age: %d\r\n",
             req->route->type == MP_ROUTE_PUBLISH ? "POST" : "GET", req->route->cors->headers,
             req->route->cors->max_age);
    mp_http_respond(req->conn, 204, extra, "", 0);
}

int mp_cors_request(const mp_http_req *req, char *origin_out, size_t outlen)
{
    origin_out[0] = '\0';
    const mp_cors *c = req->route->cors;
    if (!c)
        return 0;
    const char *origin = mp_http_header_get(req, "origin");
    int allowed = origin && origin_allowed(c, origin);
    if (allowed)
        snprintf(origin_out, outlen, "%s", origin);
    if (strcmp(req->method, "OPTIONS") != 0)
        return 0;
    answer_preflight(req, allowed);
    return 1;
}

size_t mp_cors_headers(const char *origin, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!origin || !origin[0])
        return 0;
    int n = snprintf(out, outlen,
                     "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
                     "Access-Control-Expose-Headers: Retry-After\r\n", origin);
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return 0;
    }
    return (size_t)n;
}
