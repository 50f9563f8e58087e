/* metrics.h — Prometheus metrics: counters kept as integers in structs,
 * formatted only when /metrics is scraped (docs/operations.md lists them).
 *
 * The modules that count own their counters (server.h's mp.stats, per-route
 * counters in route_counters.h, histograms in histogram.h fed by net and
 * delivery); this module only reads and formats them.
 */
#ifndef MP_METRICS_H
#define MP_METRICS_H

#include "http.h"

/* GET on a `metrics` route. */
void mp_metrics_handle(mp_http_req *req);

#endif
