/* cors.h — Cross-Origin Resource Sharing for the HTTP routes that set
 * `cors = { origins, max_age, headers }` (publish, history, presence; the
 * config validates it, lua/moonpush/config.lua).
 *
 * A browser page on another origin may call such a route: its OPTIONS
 * preflight gets 204 with the allowed methods and headers, and every answer
 * to a request whose Origin is allowed carries Access-Control-Allow-Origin
 * (that origin, echoed) and Vary: Origin. Routes without `cors`, and origins
 * not allowed, get no CORS headers at all: the browser then refuses to let
 * the page read the answer, which is the point.
 */
#ifndef MP_CORS_H
#define MP_CORS_H

#include <stddef.h>

/* Longest Origin echoed (the config's origins are at most 200 bytes). */
#define MP_CORS_ORIGIN_MAX 256

typedef struct mp_cors {
    char *origins;    /* "*" or " origin1 origin2 " (space-delimited) */
    char *headers;    /* the Access-Control-Allow-Headers value */
    int max_age;      /* seconds a browser may cache a preflight */
} mp_cors;

struct mp_http_req;

/* A route's CORS policy from the config's normalised strings; NULL on OOM. */
mp_cors *mp_cors_new(const char *origins, const char *headers, int max_age);
void mp_cors_free(mp_cors *cors);

/* For every request routed: writes the request's Origin into origin_out
 * when its route allows it, else "" (what mp_cors_headers adds to the
 * answer). Answers an OPTIONS preflight on a CORS route itself and then
 * returns 1; returns 0 when the route's handler should run. */
int mp_cors_request(const struct mp_http_req *req, char *origin_out, size_t outlen);

/* The header lines for an answer to the allowed origin ("" if none);
 * returns the length written, bounded by outlen. */
size_t mp_cors_headers(const char *origin, char *out, size_t outlen);

#endif
