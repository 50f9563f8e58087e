/* metrics.c — see metrics.h. */
#include "metrics.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "deflate.h"
#include "delivery.h"
#include "histogram.h"
#include "hub.h"
#include "lua_host.h"
#include "procstat.h"
#include "route_counters.h"
#include "server.h"
#include "store.h"
#include "ws.h"

/* ---- exposition --------------------------------------------------------- */

static void head(mp_buf *t, const char *name, const char *type, const char *help)
{
    mp_buf_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(mp_buf *t, const char *name, const char *help, uint64_t v)
{
    head(t, name, "counter", help);
    mp_buf_printf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(mp_buf *t, const char *name, const char *help, double v)
{
    head(t, name, "gauge", help);
    mp_buf_printf(t, "%s %.17g\n", name, v);
}

static void histogram_text(mp_buf *t, const char *name, const char *help, const mp_histogram *h)
{
    head(t, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < MP_HISTOGRAM_BUCKETS; i++) {
        cum += h->counts[i];
        mp_buf_printf(t, "%s_bucket{le=\"%g\"} %llu\n", name, mp_histogram_bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[MP_HISTOGRAM_BUCKETS];
    mp_buf_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum, name,
        h->sum, name, (unsigned long long)h->n);
}

/* Connections by route and device kind, and queued bytes: counted at scrape. */
typedef struct conn_census {
    struct { int route; char kind[MP_NAME_MAX + 1]; uint64_t n; } rows[256];
    int nrows;
    uint64_t queued_bytes;
} conn_census;

static void count_conn(mp_conn *c, void *arg)
{
    conn_census *cc = arg;
    mp_ws_desc d;
    cc->queued_bytes += c->out.bytes;
    if (mp_ws_describe(c, &d) < 0)
        return;
    for (int i = 0; i < cc->nrows; i++)
        if (cc->rows[i].route == d.route_index && strcmp(cc->rows[i].kind, d.kind) == 0) {
            cc->rows[i].n++;
            return;
        }
    if (cc->nrows < 256) {
        cc->rows[cc->nrows].route = d.route_index;
        snprintf(cc->rows[cc->nrows].kind, sizeof cc->rows[0].kind, "%s", d.kind);
        cc->rows[cc->nrows++].n = 1;
    }
}

static void route_counters(mp_buf *t)
{
    static const struct { const char *name, *help; size_t off; } rows[] = {
        {"moonpush_handshakes_total", "WebSocket handshakes completed, by route", offsetof(mp_route_counters, handshakes)},
        {"moonpush_auth_denials_total", "requests refused by auth (401/403), by route", offsetof(mp_route_counters, auth_denials)},
        {"moonpush_ratelimit_denials_total", "requests refused by a rate limit (429), by route", offsetof(mp_route_counters, ratelimit_denials)},
        {"moonpush_route_messages_published_total", "messages published, by publish route", offsetof(mp_route_counters, published)},
    };
    int n = mp_route_counters_count();
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        head(t, rows[r].name, "counter", rows[r].help);
        for (int i = 0; i < n; i++) {
            const char *path;
            const mp_route_counters *c = mp_route_counters_at(i, &path);
            uint64_t v = *(const uint64_t *)((const char *)c + rows[r].off);
            mp_buf_printf(t, "%s{route=\"%s\"} %llu\n", rows[r].name, path, (unsigned long long)v);
        }
    }
}

static void plugin_counters(mp_buf *t)
{
    mp_plugin_stat stats[128];
    int n = mp_lua_plugin_stats(stats, 128);
    head(t, "moonpush_plugin_calls_total", "counter", "hook calls, by plugin");
    for (int i = 0; i < n; i++)
        mp_buf_printf(t, "moonpush_plugin_calls_total{plugin=\"%s\"} %llu\n", stats[i].name, (unsigned long long)stats[i].calls);
    head(t, "moonpush_plugin_errors_total", "counter", "hook calls that raised or were denied by the budget, by plugin");
    for (int i = 0; i < n; i++)
        mp_buf_printf(t, "moonpush_plugin_errors_total{plugin=\"%s\"} %llu\n", stats[i].name, (unsigned long long)stats[i].errors);
    head(t, "moonpush_plugin_seconds_total", "counter", "seconds spent in hooks (wall clock, on the single loop), by plugin");
    for (int i = 0; i < n; i++)
        mp_buf_printf(t, "moonpush_plugin_seconds_total{plugin=\"%s\"} %.9g\n", stats[i].name, stats[i].seconds);
}

/* The standard process_* families (names and meanings of the Prometheus
 * client libraries), so the usual dashboards and alerts work as they are.
 * A figure /proc could not give is left out rather than reported as 0. */
static void process_metric(mp_buf *t, const char *name, const char *type, const char *help, double v)
{
    if (v < 0)
        return;
    head(t, name, type, help);
    mp_buf_printf(t, "%s %.15g\n", name, v);   /* 15 digits: no 0.029999999999999999 */
}

static void process_metrics(mp_buf *t)
{
    mp_procstat p;
    mp_procstat_read(&p);
    process_metric(t, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpu_seconds);
    process_metric(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.resident_bytes);
    process_metric(t, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtual_bytes);
    process_metric(t, "process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds);
    process_metric(t, "process_max_fds", "gauge", "Maximum number of open file descriptors.", p.max_fds);
    process_metric(t, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", p.start_time);
}

static void render(mp_buf *t)
{
    const mp_stats *s = &mp.stats;
    conn_census cc = {.nrows = 0};
    mp_net_each_ws(count_conn, &cc);
    head(t, "moonpush_connections", "gauge", "open WebSocket connections, by route and device kind");
    for (int i = 0; i < cc.nrows; i++) {
        int r = cc.rows[i].route;
        mp_buf_printf(t, "moonpush_connections{route=\"%s\",kind=\"%s\"} %llu\n",
            r >= 0 && r < mp.cfg.nroutes ? mp.cfg.routes[r].path : "", cc.rows[i].kind,
            (unsigned long long)cc.rows[i].n);
    }
    gauge(t, "moonpush_http_connections", "open connections still speaking HTTP", mp.nconns - mp.nws - mp.nsse);
    gauge(t, "moonpush_outbound_queue_bytes", "bytes queued to clients and not yet written", (double)cc.queued_bytes);
    gauge(t, "moonpush_channels", "channels with at least one subscriber", (double)mp_hub_channel_count());
    gauge(t, "moonpush_uptime_seconds", "seconds since start", ev_now(mp.loop) - mp.started);
    counter(t, "moonpush_connections_accepted_total", "TCP connections accepted", s->connections_accepted);
    counter(t, "moonpush_connections_rejected_total", "connections refused at max_connections or out of fds", s->connections_rejected);
    counter(t, "moonpush_http_requests_total", "HTTP requests parsed", s->http_requests);
    counter(t, "moonpush_auth_cache_hits_total", "requests on a keep-alive connection answered by its cached identity (no auth hook call)", s->auth_cache_hits);
    counter(t, "moonpush_auth_cache_misses_total", "cacheable requests that ran the auth chain", s->auth_cache_misses);
    route_counters(t);
    counter(t, "moonpush_messages_published_total", "messages published", s->messages_published);
    counter(t, "moonpush_messages_queued_total", "message frames queued to connections (one per recipient)", s->frames_queued);
    counter(t, "moonpush_messages_delivered_total", "message frames completely written to a socket", mp_net_delivered);
    counter(t, "moonpush_messages_replayed_total", "message frames sent from history (resume, resend)", s->messages_replayed);
    counter(t, "moonpush_messages_acked_total", "acks received", s->acks);
    counter(t, "moonpush_messages_resent_total", "message frames resent for want of an ack", s->resends);
    const mp_deflate_stats *z = &mp_deflate_stats_now;
    counter(t, "moonpush_deflate_frames_total", "compressed frames made (permessage-deflate; one per message, shared)", z->frames);
    counter(t, "moonpush_deflate_bytes_in_total", "payload bytes of the messages compressed", z->bytes_in);
    counter(t, "moonpush_deflate_bytes_out_total", "their compressed payload bytes", z->bytes_out);
    counter(t, "moonpush_inflated_messages_total", "compressed client messages inflated", z->inflated);
    head(t, "moonpush_messages_dropped_total", "counter", "message frames not delivered, by reason");
    mp_buf_printf(t, "moonpush_messages_dropped_total{reason=\"slow_consumer\"} %llu\n", (unsigned long long)s->dropped_slow);
    mp_buf_printf(t, "moonpush_messages_dropped_total{reason=\"format_error\"} %llu\n", (unsigned long long)s->dropped_format);
    head(t, "moonpush_closes_total", "counter", "WebSocket connections closed by the server, by reason");
    mp_buf_printf(t, "moonpush_closes_total{reason=\"slow_consumer\"} %llu\n", (unsigned long long)s->slow_consumer_closes);
    mp_buf_printf(t, "moonpush_closes_total{reason=\"idle_timeout\"} %llu\n", (unsigned long long)s->idle_timeout_closes);
    mp_buf_printf(t, "moonpush_closes_total{reason=\"ack_timeout\"} %llu\n", (unsigned long long)s->ack_timeout_closes);
    mp_buf_printf(t, "moonpush_closes_total{reason=\"replaced\"} %llu\n", (unsigned long long)s->replaced_closes);
    mp_buf_printf(t, "moonpush_closes_total{reason=\"kicked\"} %llu\n", (unsigned long long)s->kicks);
    counter(t, "moonpush_writev_calls_total", "writev system calls", s->writev_calls);
    mp_store_stats ss;
    mp_store_get_stats(mp.store, &ss);
    gauge(t, "moonpush_history_messages", "messages retained in channel histories", (double)ss.messages);
    gauge(t, "moonpush_history_bytes", "bytes of retained message frames", (double)ss.bytes);
    gauge(t, "moonpush_device_cursors", "device cursors held", (double)ss.cursors);
    counter(t, "moonpush_history_trimmed_total", "messages dropped from history for their channel's max_messages", ss.trimmed);
    counter(t, "moonpush_publish_refused_total", "messages the store refused (history.max_channels, max_bytes, unreachable): answered 503, sent to nobody", s->publishes_refused);
    counter(t, "moonpush_history_expired_total", "messages aged out of history", ss.expired);
    histogram_text(t, "moonpush_publish_to_deliver_seconds", "from publish until the frame was written to a socket", &mp_net_deliver_latency);
    histogram_text(t, "moonpush_publish_to_ack_seconds", "from publish until the device acked it", &mp_delivery_ack_latency);
    plugin_counters(t);
    head(t, "moonpush_reloads_total", "counter", "config and plugin reloads, by result");
    mp_buf_printf(t, "moonpush_reloads_total{result=\"ok\"} %llu\n", (unsigned long long)s->reloads);
    mp_buf_printf(t, "moonpush_reloads_total{result=\"refused\"} %llu\n", (unsigned long long)s->reload_failures);
    process_metrics(t);
}

void mp_metrics_handle(mp_http_req *req)
{
    if (req->route->hooks & MP_HOOK_AUTH) {
        mp_identity *id = NULL;
        mp_denial deny;
        if (mp_lua_auth(req, &id, &deny) < 0) {
            mp_route_counters_denied(req->route->path, deny.status);
            mp_http_deny(req->conn, &deny);
            return;
        }
        free(id);
    }
    mp_buf t = {0};
    render(&t);
    if (t.failed)
        mp_http_error(req->conn, 503, "unavailable", "server out of memory");
    else
        mp_http_respond_typed(req->conn, 200, "text/plain; version=0.0.4; charset=utf-8", "", t.s, t.len);
    mp_buf_free(&t);
}
