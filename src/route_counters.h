/* route_counters.h — counters per route path (handshakes, denials, messages
 * published), for /metrics.
 *
 * Keyed by path so they survive config reloads; at most
 * MP_ROUTE_COUNTERS_MAX distinct paths, more share an "other" slot. Kept
 * below the protocols so each handler counts here without including the
 * metrics module that formats them (metrics.c reads them when scraped).
 */
#ifndef MP_ROUTE_COUNTERS_H
#define MP_ROUTE_COUNTERS_H

#include <stdint.h>

#define MP_ROUTE_COUNTERS_MAX 64

typedef struct mp_route_counters {
    uint64_t handshakes;
    uint64_t auth_denials;
    uint64_t ratelimit_denials;
    uint64_t published;
} mp_route_counters;

/* The counters of the route with this path. */
mp_route_counters *mp_route_counters_of(const char *path);

/* A plugin or auth denial answered on a route: counted by its status. */
void mp_route_counters_denied(const char *route_path, int status);

/* How many paths have counters, and the i-th (0 <= i < count) with its path. */
int mp_route_counters_count(void);
const mp_route_counters *mp_route_counters_at(int i, const char **path);

#endif
