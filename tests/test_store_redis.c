/* Tests of the Redis store (store_redis.c over redis.c) against real
 * redis-server processes that this binary starts on free ports (and unix
 * sockets) in a temporary directory: publish/read/seq/epoch, shards,
 * cursors, watches and live order, two stores as two nodes, and the
 * faults: the pub/sub connection killed, Redis stopped, hung, restarted
 * with and without persistence, SCRIPT FLUSH, a lost last message.
 *
 * Every wait is bounded (run_until); every redis-server started is killed
 * at the end of its test, and also if this process dies (PR_SET_PDEATHSIG,
 * and the exit / signal handlers below). The servers run with --save ""
 * unless a test asks for AOF. */
#include <ev.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "envelope.h"
#include "log.h"
#include "server.h"
#include "store.h"
#include "store_redis.h"

mp_server mp;

/* ---- redis-server processes ------------------------------------------------ */

#define MAX_SERVERS 8

typedef struct rserver {
    pid_t pid;
    int port;
    char dir[128];
    char sock[160];
    char addr[64];              /* "127.0.0.1:<port>" */
    char unix_addr[176];        /* "unix:<sock>" */
    int aof;                    /* appendonly yes + appendfsync always */
    const char *password;
} rserver;

static char tmp_root[64];
static pid_t children[MAX_SERVERS * 4];
static int nchildren;

static void kill_children(void)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0) {
            kill(children[i], SIGCONT);
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
}

static void remove_tmp(void)
{
    if (tmp_root[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_root);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmp_root);
    }
}

static void at_exit(void)
{
    kill_children();
    remove_tmp();
}

static void on_fatal_signal(int sig)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            kill(children[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *control(const rserver *s)
{
    struct timeval tv = { 1, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    if (s->password) {
        redisReply *r = redisCommand(c, "AUTH %s", s->password);
        freeReplyObject(r);
    }
    return c;
}

/* Runs a command on the server (the test's own blocking connection) and
 * returns the reply (free it), or NULL. */
static redisReply *admin(const rserver *s, const char *fmt, ...)
{
    redisContext *c = control(s);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

static int server_ping(const rserver *s)
{
    redisReply *r = admin(s, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return ok;
}

static void track(pid_t pid)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    children[nchildren++] = pid;
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] == pid)
            children[i] = 0;
}

/* Starts (or restarts, same port and directory) s and waits until it answers. */
static int server_run(rserver *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        const char *argv[40];
        int n = 0;
        argv[n++] = "redis-server";
        argv[n++] = "--port"; argv[n++] = port;
        argv[n++] = "--bind"; argv[n++] = "127.0.0.1";
        argv[n++] = "--dir"; argv[n++] = s->dir;
        argv[n++] = "--unixsocket"; argv[n++] = s->sock;
        argv[n++] = "--unixsocketperm"; argv[n++] = "700";
        argv[n++] = "--save"; argv[n++] = "";
        argv[n++] = "--appendonly"; argv[n++] = s->aof ? "yes" : "no";
        argv[n++] = "--appendfsync"; argv[n++] = s->aof ? "always" : "everysec";
        argv[n++] = "--daemonize"; argv[n++] = "no";
        argv[n++] = "--logfile"; argv[n++] = "redis.log";
        if (s->password) {
            argv[n++] = "--requirepass";
            argv[n++] = s->password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    s->pid = pid;
    track(pid);
    for (int i = 0; i < 200; i++) {
        if (server_ping(s))
            return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            untrack(pid);
            s->pid = 0;
            return -1;
        }
        usleep(25000);
    }
    return -1;
}

static int server_start(rserver *s, int aof, const char *password)
{
    static int count;
    memset(s, 0, sizeof *s);
    s->port = free_port();
    s->aof = aof;
    s->password = password;
    snprintf(s->dir, sizeof s->dir, "%s/r%d", tmp_root, count++);
    mkdir(s->dir, 0700);
    snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
    snprintf(s->unix_addr, sizeof s->unix_addr, "unix:%s", s->sock);
    int rc = server_run(s);
    if (rc < 0)
        fprintf(stderr, "cannot start redis-server on port %d\n", s->port);
    return rc;
}

/* Stops s with sig (SIGKILL: a crash; SIGTERM: a clean stop). */
static void server_stop(rserver *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGCONT);
    kill(s->pid, sig);
    waitpid(s->pid, NULL, 0);
    untrack(s->pid);
    s->pid = 0;
}

/* ---- the loop --------------------------------------------------------------- */

static struct ev_loop *loop;

static void on_deadline(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l; (void)revents;
    *(int *)w->data = 1;
}

typedef int (*cond_fn)(void *);

/* Runs the loop until cond(arg) holds or secs passed; returns cond(arg). */
static int run_until(cond_fn cond, void *arg, double secs)
{
    int expired = 0;
    ev_timer t;
    ev_timer_init(&t, on_deadline, secs, 0.);
    t.data = &expired;
    ev_timer_start(loop, &t);
    while (!cond(arg) && !expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return cond(arg);
}

static int never(void *arg) { (void)arg; return 0; }

static void run_for(double secs) { run_until(never, NULL, secs); }

static int int_at_least(void *arg)
{
    int *p = arg;
    return p[0] >= p[1];
}

/* Runs until *counter >= want. */
static int wait_count(int *counter, int want, double secs)
{
    int pair[2];
    int expired = 0;
    ev_timer t;
    ev_timer_init(&t, on_deadline, secs, 0.);
    t.data = &expired;
    ev_timer_start(loop, &t);
    for (;;) {
        pair[0] = *counter;
        pair[1] = want;
        if (int_at_least(pair) || expired)
            break;
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &t);
    return *counter >= want;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- a node: one store and what its live handler saw ------------------------- */

#define MAXEV 2048

typedef struct event {
    char kind;                  /* 'm' message, 'r' reset */
    char channel[32];
    uint64_t seq;               /* message seq; reset: last_seq */
    uint64_t first;             /* reset: first_seq */
    int reason;
    char epoch[MP_STORE_EPOCH_MAX];
    char data[48];
    int envelope_ok;            /* the frame is exactly mp_envelope_frame's */
    char kinds[24];
} event;

typedef struct node {
    mp_store *st;
    int n;
    event ev[MAXEV];
} node;

static void on_message(mp_store *st, const mp_store_live *m, void *ud)
{
    (void)st;
    node *nd = ud;
    if (nd->n >= MAXEV)
        return;
    event *e = &nd->ev[nd->n++];
    e->kind = 'm';
    snprintf(e->channel, sizeof e->channel, "%s", m->channel);
    e->seq = m->seq;
    snprintf(e->epoch, sizeof e->epoch, "%s", m->epoch);
    snprintf(e->data, sizeof e->data, "%.*s", (int)m->data_len, m->data);
    snprintf(e->kinds, sizeof e->kinds, "%s", m->kinds);
    mp_frame *want = mp_envelope_frame(m->channel, m->seq, m->id, m->data, m->data_len, m->published_ms);
    e->envelope_ok = want && mp_frame_size(want) == mp_frame_size(m->frame) &&
                     memcmp(mp_frame_bytes(want), mp_frame_bytes(m->frame), mp_frame_size(want)) == 0 &&
                     m->frame->published == want->published;
    mp_frame_unref(want);
}

static void on_reset(mp_store *st, const char *channel, const char *epoch, uint64_t first_seq, uint64_t last_seq,
                     int reason, void *ud)
{
    (void)st;
    node *nd = ud;
    if (nd->n >= MAXEV)
        return;
    event *e = &nd->ev[nd->n++];
    e->kind = 'r';
    snprintf(e->channel, sizeof e->channel, "%s", channel);
    snprintf(e->epoch, sizeof e->epoch, "%s", epoch);
    e->first = first_seq;
    e->seq = last_seq;
    e->reason = reason;
}

static mp_store_redis_config test_config(const char *const *addrs, size_t n)
{
    mp_store_redis_config cfg;
    mp_store_redis_config_defaults(&cfg);
    cfg.redis.addrs = addrs;
    cfg.redis.naddrs = n;
    cfg.redis.connect_timeout_ms = 1000;
    cfg.redis.command_timeout_ms = 1000;
    cfg.redis.backoff_min_ms = 20;
    cfg.redis.backoff_max_ms = 200;
    cfg.redis.probe_interval_ms = 200;
    cfg.startup_timeout_ms = 3000;
    cfg.quiet_check_ms = 300;
    cfg.store.default_policy.max_messages = 1000;
    cfg.store.default_policy.max_age_ms = 60000;
    return cfg;
}

static int node_open_cfg(node *nd, const mp_store_redis_config *cfg)
{
    memset(nd, 0, sizeof *nd);
    char err[256];
    nd->st = mp_store_redis_new(cfg, loop, err, sizeof err);
    if (!nd->st) {
        fprintf(stderr, "store: %s\n", err);
        return -1;
    }
    mp_store_live_handler h = { on_message, on_reset, nd };
    mp_store_set_live_handler(nd->st, &h);
    return 0;
}

static int node_open(node *nd, const rserver *s)
{
    const char *addrs[1] = { s->addr };
    mp_store_redis_config cfg = test_config(addrs, 1);
    return node_open_cfg(nd, &cfg);
}

static void node_close(node *nd)
{
    mp_store_free(nd->st);
    nd->st = NULL;
}

/* A server (aof: appendonly yes + appendfsync always) and one or two
 * nodes on it (b NULL: one). On failure it records one, stops what it
 * started and returns -1. */
static int setup(rserver *s, int aof, node *a, node *b)
{
    if (server_start(s, aof, NULL) < 0) {
        CHECK(0);
        return -1;
    }
    if (node_open(a, s) < 0) {
        CHECK(0);
        server_stop(s, SIGKILL);
        return -1;
    }
    if (b && node_open(b, s) < 0) {
        CHECK(0);
        node_close(a);
        server_stop(s, SIGKILL);
        return -1;
    }
    return 0;
}

static void teardown(rserver *s, node *a, node *b)
{
    node_close(a);
    if (b)
        node_close(b);
    server_stop(s, SIGKILL);
}

static int count_kind(const node *nd, char kind, const char *channel)
{
    int n = 0;
    for (int i = 0; i < nd->n; i++)
        n += nd->ev[i].kind == kind && (!channel || strcmp(nd->ev[i].channel, channel) == 0);
    return n;
}

/* 1 if the messages of channel are exactly seqs from..to, in order, once
 * each, all in one epoch, each a standard envelope (resets ignored). */
static int messages_are(const node *nd, const char *channel, uint64_t from, uint64_t to)
{
    uint64_t want = from;
    const char *epoch = NULL;
    for (int i = 0; i < nd->n; i++) {
        const event *e = &nd->ev[i];
        if (e->kind != 'm' || strcmp(e->channel, channel) != 0)
            continue;
        if (e->seq != want || !e->envelope_ok || (epoch && strcmp(epoch, e->epoch) != 0)) {
            fprintf(stderr, "  %s: event %d seq %llu (want %llu) envelope_ok %d\n", channel, i,
                    (unsigned long long)e->seq, (unsigned long long)want, e->envelope_ok);
            return 0;
        }
        epoch = e->epoch;
        want++;
    }
    if (want != to + 1)
        fprintf(stderr, "  %s: got up to %llu, want %llu\n", channel, (unsigned long long)want - 1,
                (unsigned long long)to);
    return want == to + 1;
}

/* ---- operations, waited for ------------------------------------------------------ */

typedef struct result {
    int done;
    int status;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];
    int order;                  /* publish: the callback's place among all callbacks */
} result;

static int callbacks_seen;

static void on_seq(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud)
{
    (void)st;
    result *r = ud;
    r->done++;
    r->status = status;
    r->seq = seq;
    r->order = ++callbacks_seen;
    snprintf(r->epoch, sizeof r->epoch, "%s", epoch ? epoch : "");
}

static int result_done(void *arg) { return ((result *)arg)->done > 0; }

static void publish_async(node *nd, const char *channel, const char *data, int store, uint64_t ttl_ms, result *r)
{
    static int counter;
    char id[MP_STORE_ID_MAX];
    snprintf(id, sizeof id, "t-%d", ++counter);
    memset(r, 0, sizeof *r);
    mp_store_msg m = { .id = id, .data = data, .data_len = strlen(data), .store = store, .ttl_ms = ttl_ms,
                       .kinds = "" };
    mp_store_publish(nd->st, channel, &m, on_seq, r);
}

static int publish(node *nd, const char *channel, const char *data, int store, result *r)
{
    result local;
    if (!r)
        r = &local;
    publish_async(nd, channel, data, store, 0, r);
    run_until(result_done, r, 5.0);
    CHECK(r->done == 1);
    return r->status;
}

#define MAXITEMS 256

static struct history {
    int done, status;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t first, last;
    int state, more;
    size_t count;
    uint64_t seqs[MAXITEMS];
    char payload[MAXITEMS][160];
    char ids[MAXITEMS][MP_STORE_ID_MAX];
    uint64_t expires[MAXITEMS];
} hist;

static void on_read(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st; (void)ud;
    memset(&hist, 0, sizeof hist);
    hist.done = 1;
    hist.status = status;
    if (!h)
        return;
    snprintf(hist.epoch, sizeof hist.epoch, "%s", h->epoch);
    hist.first = h->first_seq;
    hist.last = h->last_seq;
    hist.state = h->since_state;
    hist.more = h->more;
    hist.count = h->count;
    for (size_t i = 0; i < h->count && i < MAXITEMS; i++) {
        size_t len;
        const uint8_t *p = mp_frame_ws_payload(h->items[i].frame, &len);
        hist.seqs[i] = h->items[i].seq;
        hist.expires[i] = h->items[i].expires_ms;
        snprintf(hist.payload[i], sizeof hist.payload[i], "%.*s", (int)len, (const char *)p);
        snprintf(hist.ids[i], sizeof hist.ids[i], "%s", h->items[i].id);
    }
}

static int hist_done(void *arg) { (void)arg; return hist.done; }

static int read_since(node *nd, const char *channel, const char *epoch, uint64_t since, size_t max)
{
    hist.done = 0;
    mp_store_read(nd->st, channel, epoch, since, max, on_read, NULL);
    run_until(hist_done, NULL, 5.0);
    CHECK(hist.done);
    return hist.status;
}

static struct watched {
    int done, status;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
} wres;

static void on_watch(mp_store *st, int status, const char *epoch, uint64_t last_seq, void *ud)
{
    (void)st;
    struct watched *w = ud ? ud : &wres;
    w->done++;
    w->status = status;
    snprintf(w->epoch, sizeof w->epoch, "%s", epoch ? epoch : "");
    w->last = last_seq;
}

static int watch_done(void *arg) { return ((struct watched *)arg)->done > 0; }

static int watch(node *nd, const char *channel)
{
    memset(&wres, 0, sizeof wres);
    mp_store_watch(nd->st, channel, on_watch, NULL);
    run_until(watch_done, &wres, 5.0);
    CHECK(wres.done == 1);
    return wres.status;
}

static struct cursor_res {
    int done, status;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];
} cres;

static void on_cursor(mp_store *st, int status, const mp_store_cursor *c, void *ud)
{
    (void)st; (void)ud;
    memset(&cres, 0, sizeof cres);
    cres.done = 1;
    cres.status = status;
    if (c) {
        cres.seq = c->seq;
        snprintf(cres.epoch, sizeof cres.epoch, "%s", c->epoch);
    }
}

static int cursor_done(void *arg) { (void)arg; return cres.done; }

static int cursor_advance(node *nd, const char *user, const char *dev, const char *ch, uint64_t seq,
                          const char *epoch)
{
    cres.done = 0;
    mp_store_cursor_advance(nd->st, user, dev, ch, seq, epoch, on_cursor, NULL);
    run_until(cursor_done, NULL, 5.0);
    CHECK(cres.done);
    return cres.status;
}

static int cursor_get(node *nd, const char *user, const char *dev, const char *ch)
{
    cres.done = 0;
    mp_store_cursor_get(nd->st, user, dev, ch, on_cursor, NULL);
    run_until(cursor_done, NULL, 5.0);
    CHECK(cres.done);
    return cres.status;
}

static int done_status, done_count;

static void on_done(mp_store *st, int status, void *ud)
{
    (void)st; (void)ud;
    done_status = status;
    done_count++;
}

static int wait_done(int before) { return wait_count(&done_count, before + 1, 5.0); }

static mp_store_redis_stats redis_stats(node *nd)
{
    mp_store_redis_stats s;
    memset(&s, 0, sizeof s);
    CHECK(mp_store_redis_get_stats(nd->st, &s) == 0);
    return s;
}

static int redis_up(void *arg)
{
    mp_store_redis_stats s = redis_stats(arg);
    return s.shards_up == s.shards;
}

/* Publishes until one is accepted (the store reconnecting). */
static int publish_until_ok(node *nd, const char *channel, const char *data, result *r, double secs)
{
    double end = now_s() + secs;
    while (now_s() < end) {
        if (publish(nd, channel, data, 1, r) == MP_STORE_OK)
            return MP_STORE_OK;
        run_for(0.05);
    }
    return r->status;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_publish_read_seq_epoch(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    result r1, r2, r3;
    CHECK(publish(&a, "news", "{\"a\":1}", 1, &r1) == MP_STORE_OK && r1.seq == 1 && r1.epoch[0]);
    CHECK(publish(&a, "news", "[2,\"two\"]", 1, &r2) == MP_STORE_OK && r2.seq == 2);
    CHECK(publish(&a, "news", "3", 0, &r3) == MP_STORE_OK && r3.seq == 3);   /* live only */
    CHECK(strcmp(r1.epoch, r2.epoch) == 0 && strcmp(r1.epoch, r3.epoch) == 0);

    CHECK(read_since(&a, "news", NULL, 0, 10) == MP_STORE_OK);
    CHECK(hist.count == 2 && hist.seqs[0] == 1 && hist.seqs[1] == 2 && hist.last == 3 && hist.first == 1);
    CHECK(hist.state == MP_STORE_SINCE_OK && !hist.more && strcmp(hist.epoch, r1.epoch) == 0);
    /* byte for byte the C envelope */
    CHECK(strcmp(hist.payload[1], "{\"type\":\"message\",\"channel\":\"news\",\"seq\":2,\"id\":\"t-2\",\"data\":[2,\"two\"]}") == 0);
    CHECK(strcmp(hist.ids[0], "t-1") == 0 && hist.expires[0] != UINT64_MAX);

    CHECK(read_since(&a, "news", r1.epoch, 1, 10) == MP_STORE_OK && hist.count == 1 && hist.seqs[0] == 2);
    CHECK(read_since(&a, "news", "other-epoch", 2, 10) == MP_STORE_OK && hist.state == MP_STORE_SINCE_EPOCH &&
          hist.count == 2);
    CHECK(read_since(&a, "news", r1.epoch, 9, 10) == MP_STORE_OK && hist.state == MP_STORE_SINCE_AHEAD);
    CHECK(read_since(&a, "news", NULL, 0, 1) == MP_STORE_OK && hist.count == 1 && hist.more);
    CHECK(read_since(&a, "news", NULL, 0, 0) == MP_STORE_OK && hist.count == 0 && hist.more && hist.last == 3);
    CHECK(read_since(&a, "nothing", NULL, 5, 10) == MP_STORE_OK && strcmp(hist.epoch, "") == 0 && hist.last == 0 &&
          hist.first == 1 && hist.count == 0 && hist.state == MP_STORE_SINCE_AHEAD);
    redisReply *rep = admin(&s, "EXISTS mp:{nothing}:m");
    CHECK(rep && rep->integer == 0);   /* a read creates nothing */
    freeReplyObject(rep);

    /* bad input: EINVAL, and next_seq / append are not this store's */
    result bad;
    publish_async(&a, "bad name", "1", 1, 0, &bad);
    CHECK(bad.done == 1 && bad.status == MP_STORE_EINVAL);
    publish_async(&a, "news", "", 1, 0, &bad);
    CHECK(bad.done == 1 && bad.status == MP_STORE_EINVAL);
    bad.done = 0;
    mp_store_next_seq(a.st, "news", on_seq, &bad);
    CHECK(bad.done == 1 && bad.status == MP_STORE_ENOTSUP);
    CHECK(read_since(&a, "{x}", NULL, 0, 1) == MP_STORE_EINVAL);

    teardown(&s, &a, NULL);
}

static void test_channels_spread_over_two_shards(void)
{
    rserver s1, s2;
    node a;
    if (server_start(&s1, 0, NULL) < 0 || server_start(&s2, 0, NULL) < 0) {
        CHECK(0);
        server_stop(&s1, SIGKILL);
        server_stop(&s2, SIGKILL);
        return;
    }
    const char *addrs[2] = { s1.addr, s2.unix_addr };   /* one TCP, one unix socket */
    mp_store_redis_config cfg = test_config(addrs, 2);
    if (node_open_cfg(&a, &cfg) < 0) {
        CHECK(0);
        server_stop(&s1, SIGKILL);
        server_stop(&s2, SIGKILL);
        return;
    }
    int on[2] = { 0, 0 };
    for (int i = 0; i < 20; i++) {
        char ch[16];
        snprintf(ch, sizeof ch, "ch%d", i);
        result r;
        CHECK(publish(&a, ch, "1", 1, &r) == MP_STORE_OK && r.seq == 1);
        CHECK(publish(&a, ch, "2", 1, &r) == MP_STORE_OK && r.seq == 2);
        int found = 0;
        for (int k = 0; k < 2; k++) {
            redisReply *rep = admin(k ? &s2 : &s1, "EXISTS mp:{%s}:m", ch);
            if (rep && rep->integer == 1) {
                on[k]++;
                found++;
            }
            freeReplyObject(rep);
        }
        CHECK(found == 1);
        CHECK(read_since(&a, ch, NULL, 0, 10) == MP_STORE_OK && hist.count == 2);
    }
    CHECK(on[0] > 0 && on[1] > 0 && on[0] + on[1] == 20);
    CHECK(redis_stats(&a).shards == 2);
    node_close(&a);
    server_stop(&s1, SIGKILL);
    server_stop(&s2, SIGKILL);
}

static void test_cursors(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    CHECK(cursor_get(&a, "u", "d", "news") == MP_STORE_ENOENT);
    CHECK(cursor_advance(&a, "u", "d", "news", 1, NULL) == MP_STORE_ERANGE);   /* unknown channel */
    /* seq 0 records a starting position: the channel gets an epoch */
    CHECK(cursor_advance(&a, "u", "d", "news", 0, NULL) == MP_STORE_OK && cres.seq == 0 && cres.epoch[0]);
    char epoch[MP_STORE_EPOCH_MAX];
    strcpy(epoch, cres.epoch);
    result r;
    publish(&a, "news", "1", 1, &r);
    CHECK(strcmp(r.epoch, epoch) == 0 && r.seq == 1);
    publish(&a, "news", "2", 1, NULL);
    CHECK(cursor_advance(&a, "u", "d", "news", 2, epoch) == MP_STORE_OK && cres.seq == 2);
    CHECK(cursor_advance(&a, "u", "d", "news", 1, NULL) == MP_STORE_STALE && cres.seq == 2);
    CHECK(cursor_advance(&a, "u", "d", "news", 3, NULL) == MP_STORE_ERANGE);
    CHECK(cursor_advance(&a, "u", "d", "news", 2, "not-it") == MP_STORE_EEPOCH);
    CHECK(cursor_get(&a, "u", "d", "news") == MP_STORE_OK && cres.seq == 2 && strcmp(cres.epoch, epoch) == 0);
    /* keys never collide: ("u:x", "d") vs ("u", "x:d") */
    CHECK(cursor_advance(&a, "u:x", "d", "news", 1, NULL) == MP_STORE_OK);
    CHECK(cursor_get(&a, "u", "x:d", "news") == MP_STORE_ENOENT);
    CHECK(cursor_get(&a, "u:x", "d", "news") == MP_STORE_OK && cres.seq == 1);
    /* a flush moves the epoch: any seq of the new one replaces the cursor */
    int before = done_count;
    mp_store_flush(a.st, "news", on_done, NULL);
    CHECK(wait_done(before) && done_status == MP_STORE_OK);
    CHECK(cursor_advance(&a, "u", "d", "news", 1, NULL) == MP_STORE_OK && strcmp(cres.epoch, epoch) != 0);
    before = done_count;
    mp_store_cursor_delete_device(a.st, "u", "d", on_done, NULL);
    CHECK(wait_done(before) && done_status == MP_STORE_OK);
    CHECK(cursor_get(&a, "u", "d", "news") == MP_STORE_ENOENT);
    CHECK(cursor_get(&a, "u:x", "d", "news") == MP_STORE_OK);
    CHECK(cursor_advance(&a, "", "d", "news", 1, NULL) == MP_STORE_EINVAL);
    redisReply *rep = admin(&s, "PTTL mp:cur:3:{u:x}:d");
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0);   /* cursor_ttl_ms */
    freeReplyObject(rep);
    teardown(&s, &a, NULL);
}

static void test_watch_and_live_order(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    CHECK(watch(&a, "news") == MP_STORE_OK && strcmp(wres.epoch, "") == 0 && wres.last == 0);
    result r[60];
    for (int i = 0; i < 60; i++) {
        char data[32];
        snprintf(data, sizeof data, "{\"n\":%d}", i + 1);
        publish_async(&a, "news", data, i % 3 != 1, 0, &r[i]);   /* some live only */
    }
    CHECK(wait_count(&a.n, 60, 5.0));
    CHECK(messages_are(&a, "news", 1, 60));
    CHECK(count_kind(&a, 'r', NULL) == 0);
    CHECK(strcmp(a.ev[9].data, "{\"n\":10}") == 0);
    int ordered = 1;
    for (int i = 0; i < 60; i++)
        ordered &= r[i].done == 1 && r[i].status == MP_STORE_OK && r[i].seq == (uint64_t)i + 1 &&
                   (i == 0 || r[i].order > r[i - 1].order);
    CHECK(ordered);
    /* a second watch: the current position, at once */
    CHECK(watch(&a, "news") == MP_STORE_OK && wres.last == 60 && strcmp(wres.epoch, r[0].epoch) == 0);
    /* kinds reach the handler */
    result k;
    mp_store_msg m = { .id = "k1", .data = "1", .data_len = 1, .store = 1, .kinds = "pos,web" };
    mp_store_publish(a.st, "news", &m, on_seq, &k);
    CHECK(wait_count(&a.n, 61, 5.0) && strcmp(a.ev[60].kinds, "pos,web") == 0);
    /* unwatched: nothing more */
    mp_store_unwatch(a.st, "news");
    publish(&a, "news", "1", 1, NULL);
    run_for(0.2);
    CHECK(a.n == 61);
    teardown(&s, &a, NULL);
}

static void test_two_nodes_share_channels(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 0, &a, &b) < 0)
        return;
    CHECK(watch(&b, "room") == MP_STORE_OK);
    CHECK(watch(&a, "room") == MP_STORE_OK);
    static result r[400];
    int sent = 0;
    /* 400 messages, at most 100 in flight */
    while (sent < 400) {
        int inflight = 0;
        for (int i = 0; i < sent; i++)
            inflight += !r[i].done;
        while (inflight < 100 && sent < 400) {
            char data[32];
            snprintf(data, sizeof data, "%d", sent + 1);
            publish_async(sent % 2 ? &a : &b, "room", data, 1, 0, &r[sent]);
            sent++;
            inflight++;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    CHECK(wait_count(&b.n, 400, 10.0) && wait_count(&a.n, 400, 10.0));
    CHECK(messages_are(&a, "room", 1, 400) && messages_are(&b, "room", 1, 400));
    /* both nodes agree on the epoch */
    CHECK(strcmp(a.ev[0].epoch, b.ev[399].epoch) == 0);
    teardown(&s, &a, &b);
}

/* Publishes count messages on channel from a, a few per loop turn, while
 * kill_at[k] (message numbers) trigger CLIENT KILL TYPE pubsub. */
static void publish_stream(node *a, const rserver *s, const char *channel, int count, const int *kill_at, int nkill)
{
    static result r[1000];
    int k = 0;
    for (int i = 0; i < count; i++) {
        char data[32];
        snprintf(data, sizeof data, "%d", i + 1);
        publish_async(a, channel, data, 1, 0, &r[i]);
        if (k < nkill && i + 1 == kill_at[k]) {
            redisReply *rep = admin(s, "CLIENT KILL TYPE pubsub");
            CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 1);
            freeReplyObject(rep);
            k++;
        }
        if (i % 5 == 4)
            run_for(0.002);
    }
    int all = 0;
    for (int tries = 0; tries < 500 && all < count; tries++) {
        all = 0;
        for (int i = 0; i < count; i++)
            all += r[i].done && r[i].status == MP_STORE_OK;
        if (all < count)
            run_for(0.01);
    }
    CHECK(all == count);
}

static void test_pubsub_killed_loses_nothing(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 0, &a, &b) < 0)
        return;
    CHECK(watch(&b, "feed") == MP_STORE_OK);
    int kills[3] = { 60, 150, 240 };
    publish_stream(&a, &s, "feed", 300, kills, 3);
    CHECK(wait_count(&b.n, 300, 10.0));
    CHECK(messages_are(&b, "feed", 1, 300));
    CHECK(count_kind(&b, 'r', NULL) == 0);
    mp_store_redis_stats st = redis_stats(&b);
    CHECK(st.redis.reconnects >= 1 && st.recoveries >= 1);
    teardown(&s, &a, &b);
}

static void test_pubsub_killed_then_a_last_message(void)
{
    rserver s;
    node a, b;
    if (server_start(&s, 0, NULL) < 0 || node_open(&a, &s) < 0) {
        CHECK(0);
        server_stop(&s, SIGKILL);
        return;
    }
    /* b: no quiet check, and a slow first reconnect, so that only its
     * resubscription's recovery can find message 2. */
    const char *addrs[1] = { s.addr };
    mp_store_redis_config cfg = test_config(addrs, 1);
    cfg.quiet_check_ms = 60000;
    cfg.redis.backoff_min_ms = 600;
    cfg.redis.backoff_max_ms = 600;
    if (node_open_cfg(&b, &cfg) < 0) {
        CHECK(0);
        node_close(&a);
        server_stop(&s, SIGKILL);
        return;
    }
    CHECK(watch(&b, "last") == MP_STORE_OK);
    publish(&a, "last", "1", 1, NULL);
    CHECK(wait_count(&b.n, 1, 5.0));
    redisReply *rep = admin(&s, "CLIENT KILL TYPE pubsub");
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 2);
    freeReplyObject(rep);
    result r;
    publish(&a, "last", "2", 1, &r);   /* b is not subscribed now: the bus drops it */
    CHECK(r.status == MP_STORE_OK && r.seq == 2);
    rep = admin(&s, "PUBSUB NUMSUB mp:{last}:p");
    CHECK(rep && rep->elements == 2 && rep->element[1]->integer == 0);
    freeReplyObject(rep);
    CHECK(wait_count(&b.n, 2, 5.0) && messages_are(&b, "last", 1, 2));
    CHECK(redis_stats(&b).recovered == 1);
    teardown(&s, &a, &b);
}

static void test_quiet_check_finds_a_lost_last_message(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 0, &a, &b) < 0)
        return;
    CHECK(watch(&b, "quiet") == MP_STORE_OK);
    result r;
    publish(&a, "quiet", "1", 1, &r);
    publish(&a, "quiet", "2", 1, NULL);
    CHECK(wait_count(&b.n, 2, 5.0));
    /* Message 3 is stored as the publish script would store it, but its
     * PUBLISH never happens: no bus message will announce it. */
    char env[160];
    snprintf(env, sizeof env, "{\"type\":\"message\",\"channel\":\"quiet\",\"seq\":3,\"id\":\"lost-3\",\"data\":\"3\"}");
    redisReply *rep = admin(&s, "HINCRBY mp:{quiet}:m s 1");
    CHECK(rep && rep->integer == 3);
    freeReplyObject(rep);
    rep = admin(&s, "XADD mp:{quiet}:h 3-0 e %s t 1 x 0 k %s i lost-3", env, "");
    CHECK(rep && rep->type == REDIS_REPLY_STRING);
    freeReplyObject(rep);
    uint64_t checks = redis_stats(&b).quiet_checks;
    CHECK(wait_count(&b.n, 3, 5.0) && messages_are(&b, "quiet", 1, 3));
    CHECK(redis_stats(&b).quiet_checks > checks);
    CHECK(strcmp(b.ev[2].data, "\"3\"") == 0);
    teardown(&s, &a, &b);
}

static void test_redis_down_then_back_without_persistence(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 0, &a, &b) < 0)
        return;
    CHECK(watch(&b, "news") == MP_STORE_OK);
    result r1;
    publish(&a, "news", "1", 1, &r1);
    publish(&a, "news", "2", 1, NULL);
    CHECK(wait_count(&b.n, 2, 5.0));
    server_stop(&s, SIGKILL);
    /* Down: refused promptly (the connection loss is seen, then fail fast). */
    double t0 = now_s();
    result r;
    publish(&a, "news", "x", 1, &r);
    CHECK(r.done == 1 && r.status == MP_STORE_EUNAVAIL && now_s() - t0 < 2.0);
    publish(&a, "news", "x", 1, &r);
    CHECK(r.status == MP_STORE_EUNAVAIL);
    memset(&wres, 0, sizeof wres);
    mp_store_watch(a.st, "other", on_watch, NULL);
    run_until(watch_done, &wres, 2.0);
    CHECK(wres.done == 1 && wres.status == MP_STORE_EUNAVAIL);
    /* Back, empty: a new generation, so a new epoch; seqs from 1 */
    CHECK(server_run(&s) == 0);
    CHECK(run_until(redis_up, &a, 5.0) && run_until(redis_up, &b, 5.0));
    CHECK(publish_until_ok(&a, "news", "3", &r, 5.0) == MP_STORE_OK && r.seq == 1 && strcmp(r.epoch, r1.epoch) != 0);
    CHECK(wait_count(&b.n, 4, 5.0));
    /* b: 1, 2, then a reset (to the new epoch, or first to "" when it
     * recovered before the publish), then the new 1 */
    CHECK(b.ev[0].seq == 1 && b.ev[1].seq == 2 && b.ev[2].kind == 'r' && b.ev[2].reason == MP_STORE_SINCE_EPOCH);
    CHECK(b.ev[b.n - 1].kind == 'm' && b.ev[b.n - 1].seq == 1 && strcmp(b.ev[b.n - 1].epoch, r.epoch) == 0);
    int resets = count_kind(&b, 'r', "news");
    CHECK(resets >= 1 && resets <= 2 && b.n == 3 + resets);
    CHECK(redis_stats(&a).redis.reconnects >= 1);
    teardown(&s, &a, &b);
}

static void test_redis_restarted_with_aof_keeps_the_epoch(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 1, &a, &b) < 0)
        return;
    CHECK(watch(&b, "ledger") == MP_STORE_OK);
    result r1, r;
    for (int i = 0; i < 10; i++)
        publish(&a, "ledger", "1", 1, i ? &r : &r1);
    CHECK(r.seq == 10 && wait_count(&b.n, 10, 5.0));
    server_stop(&s, SIGKILL);   /* a crash: appendfsync always lost nothing answered */
    CHECK(server_run(&s) == 0);
    CHECK(run_until(redis_up, &a, 5.0) && run_until(redis_up, &b, 5.0));
    CHECK(publish_until_ok(&a, "ledger", "11", &r, 5.0) == MP_STORE_OK && r.seq == 11 && strcmp(r.epoch, r1.epoch) == 0);
    for (int i = 12; i <= 15; i++)
        publish(&a, "ledger", "x", 1, &r);
    CHECK(wait_count(&b.n, 15, 5.0) && messages_are(&b, "ledger", 1, 15) && count_kind(&b, 'r', NULL) == 0);
    CHECK(read_since(&b, "ledger", r1.epoch, 0, 100) == MP_STORE_OK && hist.count == 15 && hist.last == 15 &&
          hist.state == MP_STORE_SINCE_OK);
    teardown(&s, &a, &b);
}

static void test_redis_hung_then_back(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    CHECK(watch(&a, "h") == MP_STORE_OK);
    publish(&a, "h", "1", 1, NULL);
    kill(s.pid, SIGSTOP);
    double t0 = now_s();
    result r;
    publish_async(&a, "h", "2", 1, 0, &r);
    run_until(result_done, &r, 5.0);
    /* command_timeout_ms is 1 s in these tests */
    CHECK(r.done == 1 && r.status == MP_STORE_EUNAVAIL && now_s() - t0 < 3.0);
    kill(s.pid, SIGCONT);
    CHECK(run_until(redis_up, &a, 5.0));
    CHECK(publish_until_ok(&a, "h", "3", &r, 5.0) == MP_STORE_OK);
    /* The timed-out publish may have been stored (its answer was lost):
     * whatever was stored reaches the watcher, in order, nothing twice. */
    CHECK(wait_count(&a.n, (int)r.seq, 5.0) && messages_are(&a, "h", 1, r.seq));
    CHECK(redis_stats(&a).redis.timeouts >= 1);
    teardown(&s, &a, NULL);
}

static void test_history_trimmed_by_count_and_age(void)
{
    rserver s;
    node a;
    if (server_start(&s, 0, NULL) < 0) {
        CHECK(0);
        return;
    }
    const char *addrs[1] = { s.addr };
    mp_store_redis_config cfg = test_config(addrs, 1);
    mp_store_policy pol[2] = { { "count:*", 5, 0 }, { "age:*", 100, 300 } };
    cfg.store.policies = pol;
    cfg.store.npolicies = 2;
    cfg.store.default_policy = (mp_store_policy){ NULL, 100, 10000 };
    if (node_open_cfg(&a, &cfg) < 0) {
        CHECK(0);
        server_stop(&s, SIGKILL);
        return;
    }
    for (int i = 0; i < 8; i++)
        publish(&a, "count:a", "1", 1, NULL);
    CHECK(read_since(&a, "count:a", NULL, 0, 100) == MP_STORE_OK && hist.count == 5 && hist.seqs[0] == 4 &&
          hist.first == 4 && hist.last == 8 && hist.state == MP_STORE_SINCE_GAP);
    CHECK(read_since(&a, "count:a", NULL, 3, 100) == MP_STORE_OK && hist.state == MP_STORE_SINCE_OK);
    redisReply *rep = admin(&s, "XLEN mp:{count:a}:h");
    CHECK(rep && rep->integer == 5);   /* exact trimming */
    freeReplyObject(rep);
    rep = admin(&s, "PTTL mp:{count:a}:h");
    CHECK(rep && rep->integer == -1);   /* no age limit: the history does not expire */
    freeReplyObject(rep);

    for (int i = 0; i < 3; i++)
        publish(&a, "age:a", "1", 1, NULL);
    CHECK(read_since(&a, "age:a", NULL, 0, 100) == MP_STORE_OK && hist.count == 3);
    run_for(0.45);
    CHECK(read_since(&a, "age:a", NULL, 0, 100) == MP_STORE_OK && hist.count == 0 && hist.first == 4 &&
          hist.last == 3 && hist.state == MP_STORE_SINCE_GAP);

    /* A message's own shorter ttl is no loss: first_seq does not move. */
    result r;
    publish_async(&a, "ttl", "1", 1, 200, &r);
    run_until(result_done, &r, 5.0);
    publish(&a, "ttl", "2", 1, NULL);
    run_for(0.3);
    CHECK(read_since(&a, "ttl", NULL, 0, 100) == MP_STORE_OK && hist.count == 1 && hist.seqs[0] == 2 &&
          hist.first == 1 && hist.state == MP_STORE_SINCE_OK);
    teardown(&s, &a, NULL);
}

static void test_flush_resets_watchers(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 0, &a, &b) < 0)
        return;
    CHECK(watch(&b, "f1") == MP_STORE_OK && watch(&b, "f2") == MP_STORE_OK);
    result r1;
    publish(&a, "f1", "1", 1, &r1);
    publish(&a, "f1", "2", 1, NULL);
    publish(&a, "f1", "3", 1, NULL);
    publish(&a, "f2", "1", 1, NULL);
    CHECK(wait_count(&b.n, 4, 5.0));
    int before = done_count;
    mp_store_flush(a.st, "f1", on_done, NULL);
    CHECK(wait_done(before) && done_status == MP_STORE_OK);
    CHECK(wait_count(&b.n, 5, 5.0));
    event *e = &b.ev[4];
    CHECK(e->kind == 'r' && strcmp(e->channel, "f1") == 0 && e->first == 4 && e->seq == 3 &&
          e->reason == MP_STORE_SINCE_EPOCH && strcmp(e->epoch, r1.epoch) != 0);
    result r;
    publish(&a, "f1", "4", 1, &r);
    CHECK(r.seq == 4 && strcmp(r.epoch, e->epoch) == 0);
    CHECK(wait_count(&b.n, 6, 5.0) && b.ev[5].kind == 'm' && b.ev[5].seq == 4);
    CHECK(read_since(&a, "f1", NULL, 0, 10) == MP_STORE_OK && hist.count == 1 && hist.first == 4);
    before = done_count;
    mp_store_flush(a.st, "nope", on_done, NULL);
    CHECK(wait_done(before) && done_status == MP_STORE_ENOENT);
    /* every channel */
    before = done_count;
    mp_store_flush(a.st, NULL, on_done, NULL);
    CHECK(wait_done(before) && done_status == MP_STORE_OK);
    CHECK(wait_count(&b.n, 8, 5.0) && count_kind(&b, 'r', "f1") == 2 && count_kind(&b, 'r', "f2") == 1);
    teardown(&s, &a, &b);
}

static void test_script_flush_falls_back_to_eval_in_order(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    publish(&a, "s", "1", 1, NULL);
    redisReply *rep = admin(&s, "SCRIPT FLUSH");
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    result r[30];
    for (int i = 0; i < 30; i++)
        publish_async(&a, "s", "1", 1, 0, &r[i]);
    int ok = 1;
    for (int i = 0; i < 30; i++) {
        run_until(result_done, &r[i], 5.0);
        ok &= r[i].done == 1 && r[i].status == MP_STORE_OK && r[i].seq == (uint64_t)i + 2 &&
              (i == 0 || r[i].order > r[i - 1].order);
    }
    CHECK(ok);
    CHECK(redis_stats(&a).redis.noscript >= 1);
    teardown(&s, &a, NULL);
}

static void test_unix_socket_password_and_db(void)
{
    rserver s;
    node a;
    if (server_start(&s, 0, "sekrit") < 0) {
        CHECK(0);
        return;
    }
    const char *addrs[1] = { s.unix_addr };
    mp_store_redis_config cfg = test_config(addrs, 1);
    cfg.redis.password = "wrong";
    char err[256] = "";
    CHECK(mp_store_redis_new(&cfg, loop, err, sizeof err) == NULL && strstr(err, s.unix_addr + 5) && strstr(err, "AUTH"));
    cfg.redis.password = "sekrit";
    cfg.redis.db = 3;
    if (node_open_cfg(&a, &cfg) < 0) {
        CHECK(0);
        server_stop(&s, SIGKILL);
        return;
    }
    CHECK(watch(&a, "u") == MP_STORE_OK);
    CHECK(publish(&a, "u", "1", 1, NULL) == MP_STORE_OK);
    CHECK(wait_count(&a.n, 1, 5.0));
    redisReply *rep = admin(&s, "EXISTS mp:{u}:m");
    CHECK(rep && rep->integer == 0);   /* not in db 0 */
    freeReplyObject(rep);
    rep = admin(&s, "EVAL %s 0", "redis.call('SELECT', 3) return redis.call('EXISTS', 'mp:{u}:m')");
    CHECK(rep && rep->integer == 1);
    freeReplyObject(rep);
    teardown(&s, &a, NULL);
}

static void test_unreachable_at_start_names_the_address(void)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
    const char *addrs[1] = { addr };
    mp_store_redis_config cfg = test_config(addrs, 1);
    cfg.startup_timeout_ms = 300;
    char err[256] = "";
    CHECK(mp_store_redis_new(&cfg, loop, err, sizeof err) == NULL && strstr(err, addr));
    const char *bad[1] = { "no-port" };
    cfg.redis.addrs = bad;
    err[0] = '\0';
    CHECK(mp_store_redis_new(&cfg, loop, err, sizeof err) == NULL && strstr(err, "no-port"));
}

static int cancelled_or_failed;

static void count_status(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud)
{
    (void)st; (void)seq; (void)epoch;
    int *counts = ud;
    counts[status == MP_STORE_OK ? 0 : status == MP_STORE_EUNAVAIL ? 1 : 2]++;
}

static void watch_status(mp_store *st, int status, const char *epoch, uint64_t last, void *ud)
{
    (void)st; (void)epoch; (void)last; (void)ud;
    if (status == MP_STORE_EUNAVAIL || status == MP_STORE_ECANCELED)
        cancelled_or_failed++;
}

static void test_free_answers_everything_pending(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    int counts[3] = { 0, 0, 0 };
    mp_store_msg m = { .id = "x", .data = "1", .data_len = 1, .store = 1 };
    for (int i = 0; i < 50; i++)
        mp_store_publish(a.st, "p", &m, count_status, counts);
    cancelled_or_failed = 0;
    mp_store_watch(a.st, "w1", watch_status, NULL);
    mp_store_watch(a.st, "w2", watch_status, NULL);
    mp_store_unwatch(a.st, "w2");
    CHECK(cancelled_or_failed == 1);
    CHECK(counts[0] + counts[1] + counts[2] == 0);   /* nothing answered from inside the calls */
    node_close(&a);
    CHECK(counts[1] == 50 && counts[0] == 0 && counts[2] == 0 && cancelled_or_failed == 2);
    server_stop(&s, SIGKILL);
}

static void test_max_pending_refuses_the_rest(void)
{
    rserver s;
    node a;
    if (server_start(&s, 0, NULL) < 0) {
        CHECK(0);
        return;
    }
    const char *addrs[1] = { s.addr };
    mp_store_redis_config cfg = test_config(addrs, 1);
    cfg.redis.max_pending = 10;
    if (node_open_cfg(&a, &cfg) < 0) {
        CHECK(0);
        server_stop(&s, SIGKILL);
        return;
    }
    int counts[3] = { 0, 0, 0 };
    mp_store_msg m = { .id = "x", .data = "1", .data_len = 1, .store = 1 };
    for (int i = 0; i < 30; i++)
        mp_store_publish(a.st, "p", &m, count_status, counts);
    int total = 0;
    for (int i = 0; i < 200 && total < 30; i++) {
        run_for(0.01);
        total = counts[0] + counts[1] + counts[2];
    }
    CHECK(counts[0] == 10 && counts[1] == 20);
    CHECK(redis_stats(&a).redis.refused == 20);
    teardown(&s, &a, NULL);
}

static void test_unwatch_before_confirmation_and_rewatch(void)
{
    rserver s;
    node a;
    if (setup(&s, 0, &a, NULL) < 0)
        return;
    struct watched w1 = { 0 }, w2 = { 0 };
    mp_store_watch(a.st, "x", on_watch, &w1);
    mp_store_unwatch(a.st, "x");
    CHECK(w1.done == 1 && w1.status == MP_STORE_ECANCELED);
    mp_store_watch(a.st, "x", on_watch, &w2);   /* before Redis confirmed the first SUBSCRIBE */
    run_until(watch_done, &w2, 5.0);
    CHECK(w2.done == 1 && w2.status == MP_STORE_OK);
    publish(&a, "x", "1", 1, NULL);
    CHECK(wait_count(&a.n, 1, 5.0) && messages_are(&a, "x", 1, 1));
    /* and the subscription really is there after the dance */
    redisReply *rep = admin(&s, "PUBSUB NUMSUB mp:{x}:p");
    CHECK(rep && rep->elements == 2 && rep->element[1]->integer == 1);
    freeReplyObject(rep);
    mp_store_unwatch(a.st, "x");
    run_for(0.1);
    rep = admin(&s, "PUBSUB NUMSUB mp:{x}:p");
    CHECK(rep && rep->elements == 2 && rep->element[1]->integer == 0);
    freeReplyObject(rep);
    teardown(&s, &a, NULL);
}

static void test_generation_is_shared_after_a_restart(void)
{
    rserver s;
    node a, b;
    if (setup(&s, 0, &a, &b) < 0)
        return;
    result ra, rb;
    publish(&a, "g", "1", 1, &ra);
    server_stop(&s, SIGTERM);
    CHECK(server_run(&s) == 0);
    CHECK(run_until(redis_up, &a, 5.0) && run_until(redis_up, &b, 5.0));
    CHECK(publish_until_ok(&b, "g", "1", &rb, 5.0) == MP_STORE_OK && rb.seq == 1);
    CHECK(publish(&a, "g", "2", 1, &ra) == MP_STORE_OK && ra.seq == 2 && strcmp(ra.epoch, rb.epoch) == 0);
    teardown(&s, &a, &b);
}

/* redis.c alone: after SCRIPT FLUSH, scripts in flight come back NOSCRIPT
 * and are sent again as EVAL; a script issued meanwhile (here from a PING's
 * callback, between two NOSCRIPT answers) must not overtake them. */
static struct {
    int n;
    long long values[8];
    int order[8];
} incr;

static mp_redis_script *incr_script;

static void on_incr(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    int i = (int)(intptr_t)ud;
    incr.values[i] = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    incr.order[i] = ++incr.n;
}

static void send_incr(mp_redis *r, int i)
{
    const char *a[1] = { "counter" };
    size_t l[1] = { 7 };
    mp_redis_eval(r, 0, incr_script, on_incr, (void *)(intptr_t)i, 1, 1, a, l);
}

static void on_ping_send_more(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)rep; (void)ud;
    for (int i = 3; i < 6; i++)
        send_incr(r, i);
}

static void test_noscript_retries_keep_their_place(void)
{
    rserver s;
    if (server_start(&s, 0, NULL) < 0) {
        CHECK(0);
        return;
    }
    const char *addrs[1] = { s.addr };
    mp_redis_config cfg = { .addrs = addrs, .naddrs = 1 };
    mp_redis_config_defaults(&cfg);
    char err[200];
    mp_redis *r = mp_redis_new(&cfg, loop, NULL, err, sizeof err);
    CHECK(r != NULL);
    if (!r) {
        server_stop(&s, SIGKILL);
        return;
    }
    incr_script = mp_redis_script_add(r, "incr", "return redis.call('INCR', KEYS[1])");
    mp_redis_start(r);
    CHECK(mp_redis_wait_up(r, 3000, err, sizeof err) == 0);
    redisReply *rep = admin(&s, "SCRIPT FLUSH");
    freeReplyObject(rep);
    memset(&incr, 0, sizeof incr);
    send_incr(r, 0);
    send_incr(r, 1);
    const char *ping[1] = { "PING" };
    size_t pl[1] = { 4 };
    mp_redis_command(r, 0, on_ping_send_more, NULL, 1, ping, pl);
    send_incr(r, 2);
    CHECK(wait_count(&incr.n, 6, 5.0));
    for (int i = 0; i < 6; i++)
        CHECK(incr.values[i] == i + 1 && incr.order[i] == i + 1);
    mp_redis_stats st;
    mp_redis_get_stats(r, &st);
    CHECK(st.noscript == 3);
    mp_redis_free(r);
    server_stop(&s, SIGKILL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(tmp_root, sizeof tmp_root, "/tmp/mp-redis-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 2;
    }
    atexit(at_exit);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGSEGV, on_fatal_signal);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGALRM, on_fatal_signal);
    alarm(300);   /* the whole binary, whatever happens */
    mp_log_level = MP_LOG_ERROR;
    loop = ev_loop_new(EVFLAG_AUTO);

    RUN(test_publish_read_seq_epoch);
    RUN(test_channels_spread_over_two_shards);
    RUN(test_cursors);
    RUN(test_watch_and_live_order);
    RUN(test_two_nodes_share_channels);
    RUN(test_pubsub_killed_loses_nothing);
    RUN(test_pubsub_killed_then_a_last_message);
    RUN(test_quiet_check_finds_a_lost_last_message);
    RUN(test_redis_down_then_back_without_persistence);
    RUN(test_redis_restarted_with_aof_keeps_the_epoch);
    RUN(test_redis_hung_then_back);
    RUN(test_history_trimmed_by_count_and_age);
    RUN(test_flush_resets_watchers);
    RUN(test_script_flush_falls_back_to_eval_in_order);
    RUN(test_noscript_retries_keep_their_place);
    RUN(test_unix_socket_password_and_db);
    RUN(test_unreachable_at_start_names_the_address);
    RUN(test_free_answers_everything_pending);
    RUN(test_max_pending_refuses_the_rest);
    RUN(test_unwatch_before_confirmation_and_rewatch);
    RUN(test_generation_is_shared_after_a_restart);

    ev_loop_destroy(loop);
    return check_report("test_store_redis");
}
