/* fuzz.c — see fuzz.h. The start-up below follows main() (src/main.c) step
 * by step, minus what a harness does not need: no admin socket, no signal
 * watchers, no plugin file watches, no sweep timer. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hub.h"
#include "log.h"
#include "lua_host.h"
#include "reload.h"
#include "server.h"
#include "store.h"
#include "ws.h"

mp_server mp;

#define MAX_CLIENTS 8
#define SETTLE_ROUNDS 2000   /* loop iterations fuzz_end waits for the server to let go */

static const char *root = ".";
static int clients[MAX_CLIENTS];
static int nclients;

const char *fuzz_root(void)
{
    static int found;
    if (!found) {
        found = 1;
        const char *env = getenv("MOONPUSH_ROOT");
        if (env && env[0])
            root = env;
        char lua_dir[4096];
        snprintf(lua_dir, sizeof lua_dir, "%s/lua", root);
        setenv("MOONPUSH_LUA_DIR", lua_dir, 0);
    }
    return root;
}

void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz harness: %s\n", what);
    abort();
}

/* A port nobody listens on right now (bound to 0, read back, released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        fuzz_fail("cannot find a free port");
    close(fd);
    return ntohs(sa.sin_port);
}

void fuzz_init(int json_logs)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/fuzz/fuzz.lua", fuzz_root());
    char err[512];
    if (mp_lua_init(path, &mp.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz harness: %s: %s\n", path, err);
        abort();
    }
    signal(SIGPIPE, SIG_IGN);
    mp_log_level = mp.cfg.log_level;
    if (mp_log_configure(json_logs, mp.cfg.log_file) < 0)
        fuzz_fail("cannot open the log file");
    snprintf(mp.boot_id, sizeof mp.boot_id, "f0220000");
    mp.loop = ev_default_loop(EVFLAG_AUTO);
    mp.started = ev_now(mp.loop);
    mp.store = mp_reload_open_store();
    if (!mp.store)
        fuzz_fail("cannot create the store");
    int listening = -1;
    for (int i = 0; i < 10 && listening < 0; i++) {
        mp.cfg.listen_port = mp.cfg.listeners[0].port = free_port();
        listening = mp_net_listen();
    }
    if (listening < 0)
        fuzz_fail("cannot listen");
    mp_net_start();
    /* Before the sanitizer's exit-time leak check (registered earlier, so
     * it runs later): what the Lua state holds is freed by closing it, not
     * found by LeakSanitizer, which does not scan LuaJIT's own memory. */
    atexit(fuzz_teardown);
}

static mp_conn *conn_of_tnode(mp_tnode *n)
{
    return (mp_conn *)((char *)n - offsetof(mp_conn, tnode));
}

/* Reads and drops what the server wrote to the clients; with FUZZ_SHOW=1
 * in the environment it goes to stderr instead (to see what an input does). */
static void drain_clients(void)
{
    static uint8_t sink[64 * 1024];
    static int show = -1;
    if (show < 0)
        show = getenv("FUZZ_SHOW") && strcmp(getenv("FUZZ_SHOW"), "1") == 0;
    for (int i = 0; i < nclients; i++) {
        ssize_t n;
        while ((n = read(clients[i], sink, sizeof sink)) > 0)
            if (show) {
                fprintf(stderr, "<< client %d:\n", i);
                fwrite(sink, 1, (size_t)n, stderr);
                fputc('\n', stderr);
            }
    }
}

void fuzz_pump(void)
{
    ev_run(mp.loop, EVRUN_NOWAIT);
    drain_clients();
}

mp_conn *fuzz_connect(void)
{
    if (nclients == MAX_CLIENTS)
        fuzz_fail("too many clients in one input");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* Closing with a reset, not a FIN: an input's connection leaves no
     * TIME_WAIT behind, so millions of inputs do not run out of ports. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mp.cfg.listen_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0 ||
        (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS))
        fuzz_fail("cannot connect to the harness's listener");
    clients[nclients++] = fd;
    int before = mp.nconns;
    for (int i = 0; i < SETTLE_ROUNDS && mp.nconns == before; i++) {
        ev_run(mp.loop, EVRUN_NOWAIT);
        if (mp.nconns == before && i > 10)
            usleep(100);
    }
    if (mp.nconns != before + 1 || !mp_request_list.tail)
        fuzz_fail("the listener did not accept the connection");
    return conn_of_tnode(mp_request_list.tail);   /* on_accept put it last */
}

mp_conn *fuzz_upgrade(const char *target, const char *token)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Authorization: Bearer %s\r\n\r\n", target, token);
    if (n < 0 || (size_t)n >= sizeof req)
        fuzz_fail("upgrade request too long");
    mp_conn *c = fuzz_connect();
    fuzz_feed(c, (const uint8_t *)req, (size_t)n);
    if (c->state != MP_CONN_WS)
        fuzz_fail("the server refused the harness's WebSocket handshake");
    return c;
}

int fuzz_feed(mp_conn *c, const uint8_t *data, size_t len)
{
    /* The same switch as net.c's on_io. Timeouts in fuzz/fuzz.lua are long
     * and the clients stay open until fuzz_end, so a connection that was
     * open before the pump below is not freed by it. */
    if (c->state == MP_CONN_HTTP)
        mp_http_feed(c, data, len);
    else if (c->state == MP_CONN_WS)
        mp_ws_feed(c, data, len);
    else
        return -1;   /* closing or aborted: net.c reads only to see the peer go */
    int open = c->state != MP_CONN_CLOSING;
    fuzz_pump();
    return open ? 0 : -1;
}

size_t fuzz_read_size(uint8_t seed, size_t left, uint32_t *state)
{
    if (seed == 0)
        return left;
    uint32_t x = *state ? *state : 0x9e3779b9u ^ seed;
    x ^= x << 13;   /* xorshift32 */
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    size_t n = 1 + x % ((uint32_t)seed + 1);
    return n < left ? n : left;
}

int fuzz_feed_split(mp_conn *c, const uint8_t *data, size_t len, uint8_t seed)
{
    uint32_t state = 0;
    while (len > 0) {
        size_t n = fuzz_read_size(seed, len, &state);
        if (fuzz_feed(c, data, n) < 0)
            return -1;
        data += n;
        len -= n;
    }
    return 0;
}

void fuzz_end(void)
{
    for (int i = 0; i < nclients; i++)
        close(clients[i]);   /* a reset: see fuzz_connect */
    nclients = 0;
    for (int i = 0; i < SETTLE_ROUNDS && mp.nconns > 0; i++) {
        ev_run(mp.loop, EVRUN_NOWAIT);
        if (mp.nconns > 0 && i > 10)
            usleep(100);
    }
    ev_run(mp.loop, EVRUN_NOWAIT);   /* the prepare pass frees what was aborted */
    if (mp.nconns != 0 || mp.nws != 0)
        fuzz_fail("a connection outlived its client");
    if (mp_hub_channel_count() != 0)
        fuzz_fail("a hub channel outlived its last subscriber");
    mp_store_free(mp.store);
    mp.store = mp_reload_open_store();
    if (!mp.store)
        fuzz_fail("cannot create the store");
}

void fuzz_teardown(void)
{
    if (!mp.loop)
        return;   /* fuzz_init never ran (the config harness) */
    mp_net_free_all();
    mp_ws_free_all();
    mp_hub_free_all();
    mp_store_free(mp.store);
    mp.store = NULL;
    mp_lua_close();
    mp_config_free(&mp.cfg);
    mp.loop = NULL;   /* once: the replay driver calls it, then exit() does */
}
