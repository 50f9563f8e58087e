/* bench/redis_store.c — throughput of the Redis store alone (no HTTP, no
 * WebSocket): one process, two store instances on one libev loop acting
 * as two nodes. Node A publishes (pipelined: --inflight requests in
 * flight), node B watches the channels and counts what its live handler
 * receives. Prints publishes/s (A: from the first publish to the last
 * answer) and live messages/s (B: from the first to the last on_message),
 * and checks B got every seq in order.
 *
 *   make bench/redis_store
 *   bench/redis_store [--addr 127.0.0.1:6379] [--messages 200000]
 *                     [--inflight 100] [--size 100] [--channels 1]
 *
 * Without --addr it starts its own redis-server (no persistence) on a free
 * port in a temporary directory and stops it at the end. Not part of
 * make test: a benchmark, its figure depends on the machine. */
#include <ev.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "store_redis.h"

mp_server mp;

static struct ev_loop *loop;
static long total, inflight_max, sent, answered, failed, size;
static int nchannels;
static double t_first_pub, t_last_answer, t_first_live, t_last_live;
static long received, out_of_order;
static uint64_t *next_seq;      /* per channel: the seq B expects next */
static char data[65536];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void channel_name(int i, char *out, size_t n) { snprintf(out, n, "bench:%d", i); }

static void on_live(mp_store *st, const mp_store_live *m, void *ud)
{
    (void)st; (void)ud;
    int ch = atoi(m->channel + 6);
    if (!received)
        t_first_live = now();
    t_last_live = now();
    received++;
    if (m->seq != next_seq[ch])
        out_of_order++;
    next_seq[ch] = m->seq + 1;
}

static void publish_one(mp_store *a);

static void on_answer(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud)
{
    (void)seq; (void)epoch; (void)ud;
    answered++;
    failed += status != MP_STORE_OK;
    t_last_answer = now();
    if (sent < total)
        publish_one(st);
}

static void publish_one(mp_store *a)
{
    char ch[32], id[32];
    channel_name((int)(sent % nchannels), ch, sizeof ch);
    snprintf(id, sizeof id, "b-%ld", sent);
    mp_store_msg m = { .id = id, .data = data, .data_len = (size_t)size, .store = 1 };
    sent++;
    mp_store_publish(a, ch, &m, on_answer, NULL);
}

static void on_watched(mp_store *st, int status, const char *epoch, uint64_t last, void *ud)
{
    (void)st; (void)epoch;
    next_seq[(intptr_t)ud] = last + 1;
    if (status != MP_STORE_OK)
        fprintf(stderr, "watch failed: %s\n", mp_store_strerror(status));
}

static pid_t spawn_redis(int port, char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--dir", dir, (char *)NULL);
        _exit(127);
    }
    struct timeval tv = { 1, 0 };
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        int ok = c && !c->err;
        if (c)
            redisFree(c);
        if (ok)
            return pid;
        usleep(25000);
    }
    kill(pid, SIGKILL);
    return -1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static mp_store *open_node(const char *addr, const char *name)
{
    const char *addrs[1] = { addr };
    mp_store_redis_config cfg;
    mp_store_redis_config_defaults(&cfg);
    cfg.redis.addrs = addrs;
    cfg.redis.naddrs = 1;
    char err[256];
    mp_store *st = mp_store_redis_new(&cfg, loop, err, sizeof err);
    if (!st)
        fprintf(stderr, "node %s: %s\n", name, err);
    return st;
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    total = 200000;
    inflight_max = 100;
    size = 100;
    nchannels = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0) addr = argv[i + 1];
        else if (strcmp(argv[i], "--messages") == 0) total = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--inflight") == 0) inflight_max = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--size") == 0) size = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--channels") == 0) nchannels = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (size < 2 || size > (long)sizeof data || nchannels < 1 || total < 1 || inflight_max < 1) {
        fprintf(stderr, "bad option value\n");
        return 2;
    }
    /* data: a JSON string of size bytes */
    memset(data, 'x', (size_t)size);
    data[0] = data[size - 1] = '"';
    signal(SIGPIPE, SIG_IGN);
    loop = ev_default_loop(EVFLAG_AUTO);
    char own[64], dir[] = "/tmp/mp-bench-XXXXXX";
    pid_t redis = 0;
    if (!addr) {
        int port = free_port();
        if (!mkdtemp(dir) || port < 0 || (redis = spawn_redis(port, dir)) < 0) {
            fprintf(stderr, "cannot start redis-server\n");
            return 1;
        }
        snprintf(own, sizeof own, "127.0.0.1:%d", port);
        addr = own;
    }
    mp_store *a = open_node(addr, "A"), *b = open_node(addr, "B");
    int rc = 1;
    if (a && b) {
        next_seq = calloc((size_t)nchannels, sizeof *next_seq);
        mp_store_live_handler h = { on_live, NULL, NULL };
        mp_store_set_live_handler(b, &h);
        for (int i = 0; i < nchannels; i++) {
            char ch[32];
            channel_name(i, ch, sizeof ch);
            mp_store_watch(b, ch, on_watched, (void *)(intptr_t)i);
        }
        ev_run(loop, EVRUN_NOWAIT);
        for (int i = 0; i < 50; i++)
            ev_run(loop, EVRUN_ONCE);   /* the watches become active */
        t_first_pub = now();
        for (long i = 0; i < inflight_max && sent < total; i++)
            publish_one(a);
        double deadline = now() + 120;
        while ((answered < total || received < total - failed) && now() < deadline)
            ev_run(loop, EVRUN_ONCE);
        double pub_s = t_last_answer - t_first_pub, live_s = t_last_live - t_first_live;
        printf("redis %s, %ld messages of %ld bytes on %d channel(s), %ld in flight\n", addr, total, size,
               nchannels, inflight_max);
        printf("publishes: %ld answered (%ld failed) in %.2f s = %.0f/s\n", answered, failed, pub_s,
               (double)answered / pub_s);
        printf("live (node B): %ld received in %.2f s = %.0f/s, %ld out of order\n", received, live_s,
               live_s > 0 ? (double)received / live_s : 0.0, out_of_order);
        rc = failed || received != total || out_of_order ? 1 : 0;
        free(next_seq);
    }
    mp_store_free(a);
    mp_store_free(b);
    if (redis > 0) {
        kill(redis, SIGKILL);
        waitpid(redis, NULL, 0);
        char cmd[64];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    return rc;
}
