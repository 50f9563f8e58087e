/* main.c — start here.
 *
 * moonpush: publishers POST messages over HTTP, devices receive them over
 * WebSocket. Reading order for a newcomer (src/README.md maps every file
 * and the layers they sit in):
 *   main()            loads the config through Lua (lua_host*.c), opens the
 *                     store (store.h; the memory store, store_mem.c),
 *                     listens (net.c)
 *   net.c on_accept   a connection starts as HTTP
 *   http.c dispatch   routes a request: health, publish, or WebSocket upgrade
 *   ws.c handshake    auth plugin decides who it is; joins user:<id> in the hub
 *   publish.c         POST /publish -> hub.c mp_hub_publish: the store hands
 *                     out the seq and keeps the message; envelope.c encodes
 *                     it once into a refcounted frame (frame.h); fanout
 *                     pushes a reference into each subscriber's queue
 *                     (outq.h): one frame, N refs
 *   delivery.c        what a connection is owed beyond live fanout: history
 *                     replay from the store on subscribe with `since` or a
 *                     device cursor, acks and resend
 *   net.c on_prepare  once per loop iteration, writev every dirty queue
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>

#include "admin.h"
#include "admin_client.h"
#include "hub.h"
#include "log.h"
#include "lua_host.h"
#include "net.h"
#include "pidfile.h"
#include "reload.h"
#include "server.h"
#include "store.h"
#include "tls.h"
#include "ws.h"

#define MOONPUSH_VERSION "0.1.0"
#define RECONNECT_SPREAD_MS 5000   /* clients told to come back within this */
#define FD_MARGIN 100              /* fds besides connections: listeners, admin, logs, Redis, watches */

mp_server mp;

static ev_signal sigint_watcher, sigterm_watcher, sighup_watcher, sigusr1_watcher;

/* SIGUSR1: logrotate moved the log file; write to a fresh one. */
static void on_reopen_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    if (mp_log_reopen() < 0)
        mp_error("cannot reopen the log file", "file=%s", mp.cfg.log_file);
    else
        mp_info("log file reopened", NULL);
}
static ev_timer shutdown_timer;
static ev_prepare shutdown_check;   /* before the loop blocks: after this iteration's closes */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moonpush [-c CONFIG]            run the server (default examples/moonpush.lua)\n"
            "       moonpush --check-config CONFIG  validate a config and its plugins, then exit\n"
            "       moonpush --version\n");
}

/* A reconnect hint, then close 1001. Each client gets its own delay so a
 * restart is not followed by every device reconnecting in the same second. */
static void close_going_away(mp_conn *c, void *arg)
{
    (void)arg;
    char hint[64];
    long after_ms = 500 + random() % RECONNECT_SPREAD_MS;
    int n = snprintf(hint, sizeof hint, "{\"type\":\"reconnect\",\"after_ms\":%ld}", after_ms);
    if (c->sse)
        mp_sse_stream.going_away(c, after_ms);   /* an SSE `retry:` line instead */
    else
        mp_ws_send_text(c, hint, (size_t)n);
    mp_conn_close_stream(c, 1001, "server shutting down");
}

/* Exits the loop once every connection has said goodbye, or at the grace limit. */
static void on_shutdown_check(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)w; (void)revents;
    if (mp.nconns == 0)
        ev_break(loop, EVBREAK_ALL);
}

static void on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    mp_warn("shutdown grace period over", "open_connections=%d", mp.nconns);
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    if (mp.stopping) {
        ev_break(loop, EVBREAK_ALL);   /* second signal: do not wait */
        return;
    }
    mp.stopping = 1;
    mp_info("shutting down", "signal=%d connections=%d", w->signum, mp.nconns);
    mp_net_stop_accepting();
    mp_net_each_ws(close_going_away, NULL);
    ev_timer_init(&shutdown_timer, on_shutdown_timeout, mp.cfg.shutdown_grace, 0.);
    ev_timer_start(loop, &shutdown_timer);
    ev_prepare_init(&shutdown_check, on_shutdown_check);
    ev_prepare_start(loop, &shutdown_check);
    if (mp.nconns == 0)
        ev_break(loop, EVBREAK_ALL);
}

static ev_timer sweep_timer;

/* A start that stops short: what the config load made is let go (the Lua
 * state holds lua-cjson's buffer, malloc'd, which LeakSanitizer reported
 * once per refused config). Returns the exit code. */
static int refuse_start(void)
{
    if (mp.store)
        mp_store_free(mp.store);
    mp.store = NULL;
    mp_tls_free_all();
    mp_lua_close();
    mp_config_free(&mp.cfg);
    return 1;
}

/* Each connection is a file descriptor: past the open-files limit accept()
 * fails long before max_connections (docs/operations.md, "Limits you will
 * meet"). The server does not raise its own limit; it says so at start. */
static void warn_if_few_fds(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    if ((rlim_t)mp.cfg.max_connections + FD_MARGIN > rl.rlim_cur)
        mp_warn("max_connections exceeds the open-files limit: connections past it will be refused; raise "
                "ulimit -n (LimitNOFILE=) or lower max_connections", "max_connections=%d nofile=%llu margin=%d",
                mp.cfg.max_connections, (unsigned long long)rl.rlim_cur, FD_MARGIN);
}

/* Expired history and cursors go once a second: work is what is due. */
static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    mp_store_sweep(mp.store);
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    char summary[1024], err[512];
    mp_server_reload(summary, sizeof summary, err, sizeof err);
}

static void make_boot_id(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r)
        r = (uint32_t)time(NULL);
    snprintf(mp.boot_id, sizeof mp.boot_id, "%08x", r);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "admin") == 0)
        return mp_admin_client_main(argc - 1, argv + 1);
    const char *config_path = "examples/moonpush.lua";
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
            check_only = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("moonpush %s\n", MOONPUSH_VERSION);
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    char err[512];
    if (mp_lua_init(config_path, &mp.cfg, err, sizeof err) < 0) {
        mp_error("invalid config", "file=%s error=\"%s\"", config_path, mp_log_q(err));
        return refuse_start();
    }
    if (mp_tls_load(&mp.cfg, err, sizeof err) < 0) {   /* --check-config checks the TLS files too */
        mp_error("invalid config", "file=%s error=\"%s\"", config_path, mp_log_q(err));
        return refuse_start();
    }
    if (check_only) {
        mp_tls_free_all();
        printf("%s: ok (%d routes)\n", config_path, mp.cfg.nroutes);
        mp_lua_close();
        mp_config_free(&mp.cfg);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    mp_log_level = mp.cfg.log_level;
    if (mp_log_configure(mp.cfg.log_json, mp.cfg.log_file) < 0) {
        mp_error("cannot open the log file", "file=%s", mp.cfg.log_file);
        return refuse_start();
    }
    make_boot_id();
    srandom((unsigned)strtoul(mp.boot_id, NULL, 16));
    mp.loop = ev_default_loop(EVFLAG_AUTO);
    mp.started = ev_now(mp.loop);
    mp.store = mp_reload_open_store();
    if (!mp.store) {
        mp_error("cannot create the store (invalid history policy?)", NULL);
        return refuse_start();
    }
    ev_timer_init(&sweep_timer, on_sweep, 1., 1.);
    ev_timer_start(mp.loop, &sweep_timer);
    /* The pid file and the admin socket first: when another server runs
     * with this config, say so before touching anything of its. */
    if (mp_pidfile_check(mp.cfg.pid_file) < 0)
        return refuse_start();
    if (mp_admin_start() < 0 || mp_net_listen() < 0) {
        mp_admin_stop();
        return refuse_start();
    }
    if (mp_pidfile_write(mp.cfg.pid_file) < 0) {
        mp_error("cannot write the pid file", "file=%s error=\"%s\"", mp.cfg.pid_file, strerror(errno));
        mp_admin_stop();
        return refuse_start();
    }
    warn_if_few_fds();
    mp_net_start();
    ev_signal_init(&sigint_watcher, on_stop_signal, SIGINT);
    ev_signal_init(&sigterm_watcher, on_stop_signal, SIGTERM);
    ev_signal_init(&sighup_watcher, on_reload_signal, SIGHUP);
    ev_signal_start(mp.loop, &sigint_watcher);
    ev_signal_start(mp.loop, &sigterm_watcher);
    ev_signal_start(mp.loop, &sighup_watcher);
    ev_signal_init(&sigusr1_watcher, on_reopen_signal, SIGUSR1);
    ev_signal_start(mp.loop, &sigusr1_watcher);
    mp_lua_watch_plugins(mp.loop);
    mp_info("moonpush started", "version=%s boot_id=%s config=%s", MOONPUSH_VERSION, mp.boot_id, config_path);

    ev_run(mp.loop, 0);

    mp_admin_stop();
    mp_net_free_all();
    mp_ws_free_all();
    mp_hub_free_all();
    ev_timer_stop(mp.loop, &sweep_timer);
    mp_store_free(mp.store);
    mp_tls_free_all();
    mp_lua_close();
    mp_config_free(&mp.cfg);
    mp_pidfile_remove();
    mp_info("moonpush stopped", NULL);
    return 0;
}
