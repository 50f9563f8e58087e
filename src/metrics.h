/* metrics.h — Prometheus metrics: counters kept as integers in structs,
 * formatted only when /metrics is scraped (docs/operations.md lists them).
 *
 * Per-route counters are keyed by route path and survive config reloads
 * (at most MP_METRICS_MAX_ROUTES distinct paths; more share an "other"
 * slot). Latency histograms have fixed buckets; observing is O(buckets).
 */
#ifndef MP_METRICS_H
#define MP_METRICS_H

#include <stdint.h>

#include "frame.h"
#include "http.h"

#define MP_METRICS_MAX_ROUTES 64

typedef struct mp_route_counters {
    uint64_t handshakes;
    uint64_t auth_denials;
    uint64_t ratelimit_denials;
    uint64_t published;
} mp_route_counters;

/* The counters of the route with this path. */
mp_route_counters *mp_metrics_route(const char *path);

/* A plugin or auth denial answered on a route: counted by its status. */
void mp_metrics_denied(const char *route_path, int status);

/* GET on a `metrics` route. */
void mp_metrics_handle(mp_http_req *req);

#endif
