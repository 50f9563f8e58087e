/*
 * loadgen.c - the moonpush benchmark load generator.
 *
 * Owns everything a benchmark run does on the client side:
 *   - opening N WebSocket device connections (RFC 6455 client: handshake with
 *     a checked Sec-WebSocket-Accept, masked frames, pongs, close replies),
 *     paced by a bound on handshakes in flight and spread over source
 *     addresses 127.0.0.1..127.0.0.x (bind() with IP_BIND_ADDRESS_NO_PORT
 *     before connect) so N can pass the ephemeral port range;
 *   - splitting those connections over K forked worker processes (--procs)
 *     because open files are capped per process; each worker runs its own
 *     libev loop and reports to the parent over a pipe;
 *   - publishing from the parent over HTTP/1.1 keep-alive connections with a
 *     window of pipelined requests, at a fixed rate or at the highest rate the
 *     subscribers keep up with (a bounded backlog, fed by worker progress);
 *   - measuring publish-to-delivery latency: the publish time (CLOCK_MONOTONIC
 *     ns, one clock for every process on the machine) travels in the message
 *     data as {"t":T,"n":N,"pad":"..."}; T is the time the request is written
 *     (libev timers are ~1 ms coarse, so stamping the intended time would add
 *     fake latency); for fixed rates the lag behind the schedule is measured
 *     separately and a warning printed when the target rate was not held;
 *   - spreading connections over several independent servers (--ports: one
 *     port each, connection i to port i % n; idle mode only, since the
 *     publisher talks to one server) and sampling several server pids
 *     (--server-pid A,B,...: RSS and CPU summed);
 *   - sampling the server process(es) (/proc/PID/status, /proc/PID/stat),
 *     kernel socket memory (/proc/net/sockstat buffer pages, /proc/slabinfo
 *     socket objects) and its own CPU (getrusage) so a run says which side
 *     was the bottleneck;
 *   - printing a human summary and one "RESULT k=v ..." line for scripts;
 *   - --tls-port P: the device connections speak TLS to port P (no
 *     certificate check), the publisher stays on the plain --port: the
 *     connect-to-welcome times then include the TLS handshake.
 *
 * Process shape: parent = publisher + aggregator + sampler; workers = device
 * connections. Messages worker->parent: READY (all connections settled),
 * PROGRESS (every 5 ms: deliveries, slowest connection), FINAL (counters and
 * the latency histogram). Commands parent->worker: G(o), S(top), Q(uit).
 *
 * Known limits, on purpose:
 *   - a frame larger than KEEP_MAX is parsed from its first PREFIX_MIN bytes
 *     and the rest is skipped without buffering;
 *   - a fragmented message is counted, only its first fragment is parsed;
 *   - a connection the server closes is not reopened (reconnect storms are a
 *     different scenario);
 *   - the latency histogram is log-linear, 64 sub-buckets per power of two
 *     (~1.6% relative error), values above 2^43 ns are clamped.
 */
#define _GNU_SOURCE
#include <ev.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define KEEP_MAX (64 * 1024)     /* frames up to this are buffered whole */
#define PREFIX_MIN 512           /* bytes of a huge frame parsed before skipping */
#define RBUF_SZ (256 * 1024 + KEEP_MAX + 16)
#define HS_MAX 16384             /* handshake answer size limit */
#define PROGRESS_S 0.005
#define MAX_PORTS 64             /* --ports / --server-pid list length */

enum { MODE_IDLE, MODE_BROADCAST, MODE_UNICAST };
static const char *mode_name[] = {"idle", "broadcast", "unicast"};

/* ------------------------------------------------------------------ */
/* options                                                             */

static struct {
    const char *host;
    int port;
    const char *path, *pub_path, *token, *pub_token, *channel, *label;
    int mode;
    int conns, procs;
    double duration, warmup;
    int size;
    double rate;
    double stall_pct;
    int users;
    int pub_conns, window;
    int open_inflight;
    double open_timeout;
    int src_addrs;
    int max_lag, max_outstanding;
    double drain;
    int server_pid;              /* the first of server_pids (0: none) */
    int server_pids[MAX_PORTS];
    int nserver_pids;
    int ports[MAX_PORTS];        /* --ports; else ports[0] = port */
    int nports;
    int stall_rcvbuf;
    double stall_drain;
    int quiet;
    int tls_port;                /* device connections over TLS to this port (0: plain) */
    int ack_every;
    double ack_flush;
    int deflate;                 /* --deflate: offer permessage-deflate, inflate RSV1 frames */
    int json;                    /* --json: realistic JSON data (an order) instead of an 'x' pad */
} O = {
    .host = "127.0.0.1", .port = 8080, .path = "/ws", .pub_path = "/publish",
    .token = "bench", .pub_token = "publisher-secret", .channel = "bench",
    .label = "", .mode = MODE_BROADCAST, .conns = 100, .procs = 0,
    .duration = 10, .warmup = 0, .size = 100, .rate = 0, .stall_pct = 0,
    .users = 0, .pub_conns = 4, .window = 16, .open_inflight = 500,
    .open_timeout = 15, .src_addrs = 0, .max_lag = 4, .max_outstanding = 10000,
    .drain = 15, .server_pid = 0, .stall_rcvbuf = 4096, .stall_drain = 15,
    .quiet = 0, .ack_every = 1, .ack_flush = 1.0,
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Connection i stalls when its hash falls under the stall percentage; the
 * parent uses the same function to know how many recipients never read. */
static int is_stalled(int i)
{
    if (O.stall_pct <= 0)
        return 0;
    uint32_t h = (uint32_t)i * 2654435761u;
    h ^= h >> 16;
    return (h % 10000) < (uint32_t)(O.stall_pct * 100.0 + 0.5);
}

/* ------------------------------------------------------------------ */
/* histogram: log-linear, bounded memory                               */

#define H_SUBBITS 6
#define H_SUB (1 << H_SUBBITS)         /* 64 */
#define H_MAXMAG 43
#define H_BUCKETS (2 * H_SUB + (H_MAXMAG - H_SUBBITS) * H_SUB)

typedef struct {
    uint64_t c[H_BUCKETS];
    uint64_t n, max, min;
    double sum;
} hist_t;

static int h_idx(uint64_t v)
{
    if (v < 2 * H_SUB)
        return (int)v;
    int mag = 63 - __builtin_clzll(v);
    if (mag > H_MAXMAG) {
        mag = H_MAXMAG;
        v = (1ull << (H_MAXMAG + 1)) - 1;
    }
    int shift = mag - H_SUBBITS;
    return 2 * H_SUB + (mag - H_SUBBITS - 1) * H_SUB + (int)((v >> shift) - H_SUB);
}

static uint64_t h_val(int i)
{
    if (i < 2 * H_SUB)
        return (uint64_t)i;
    int mag = (i - 2 * H_SUB) / H_SUB + H_SUBBITS + 1;
    uint64_t sub = (uint64_t)((i - 2 * H_SUB) % H_SUB + H_SUB);
    int shift = mag - H_SUBBITS;
    return (sub << shift) + ((1ull << shift) >> 1);
}

static void h_add(hist_t *h, uint64_t v)
{
    h->c[h_idx(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += (double)v;
}

static void h_merge(hist_t *d, const hist_t *s)
{
    for (int i = 0; i < H_BUCKETS; i++)
        d->c[i] += s->c[i];
    if (s->n) {
        if (d->n == 0 || s->min < d->min)
            d->min = s->min;
        if (s->max > d->max)
            d->max = s->max;
    }
    d->n += s->n;
    d->sum += s->sum;
}

static uint64_t h_pct(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->n);
    if (want < 1)
        want = 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        acc += h->c[i];
        if (acc >= want) {
            uint64_t v = h_val(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------ */
/* small fixed maps: key -> count (close codes, statuses, errnos)      */

#define KV_MAX 24
typedef struct {
    struct { int32_t key; uint64_t n; } e[KV_MAX];
    uint64_t other;
} kvmap_t;

static void kv_add(kvmap_t *m, int key, uint64_t n)
{
    for (int i = 0; i < KV_MAX; i++) {
        if (m->e[i].n && m->e[i].key == key) {
            m->e[i].n += n;
            return;
        }
        if (m->e[i].n == 0) {
            m->e[i].key = key;
            m->e[i].n = n;
            return;
        }
    }
    m->other += n;
}

static void kv_merge(kvmap_t *d, const kvmap_t *s)
{
    for (int i = 0; i < KV_MAX; i++)
        if (s->e[i].n)
            kv_add(d, s->e[i].key, s->e[i].n);
    d->other += s->other;
}

static uint64_t kv_get(const kvmap_t *m, int key)
{
    for (int i = 0; i < KV_MAX; i++)
        if (m->e[i].n && m->e[i].key == key)
            return m->e[i].n;
    return 0;
}

/* "key:n,key:n" or "-" ; errno maps print names when asked */
static void kv_fmt(const kvmap_t *m, char *buf, size_t sz, int as_errno)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < KV_MAX && off < sz; i++) {
        if (!m->e[i].n)
            continue;
        int w;
        if (as_errno)
            w = snprintf(buf + off, sz - off, "%s%s:%" PRIu64, off ? "," : "",
                         strerrorname_np(m->e[i].key) ? strerrorname_np(m->e[i].key) : "?",
                         m->e[i].n);
        else
            w = snprintf(buf + off, sz - off, "%s%d:%" PRIu64, off ? "," : "",
                         m->e[i].key, m->e[i].n);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (m->other && off < sz)
        off += (size_t)snprintf(buf + off, sz - off, "%sother:%" PRIu64, off ? "," : "", m->other);
    if (off == 0)
        snprintf(buf, sz, "-");
}

/* ------------------------------------------------------------------ */
/* worker <-> parent messages                                          */

enum { M_READY = 1, M_PROGRESS = 2, M_FINAL = 3 };
typedef struct { uint32_t type, len; } mhdr_t;

typedef struct {
    uint64_t welcomed, failed;
} m_ready_t;

typedef struct {
    uint64_t deliveries;      /* message frames on non-stalled connections */
    int64_t min_n;            /* lowest last "n" over open non-stalled connections, -1 if none */
    uint64_t open_nonstalled;
    uint64_t server_closes;
} m_progress_t;

typedef struct {
    char cmd;
    int64_t arg, arg2;
} cmd_t;

typedef struct {
    uint64_t assigned, attempted, welcomed, failed;
    uint64_t connect_fail, open_timeouts, no_welcome, http_fail, bad_accept, bad_http;
    kvmap_t conn_errno, http_status, close_codes;
    uint64_t server_closes, eof_closes, reset_closes, read_errors;
    uint64_t closed_nonstalled, stalled, stalled_closed, stalled_closed_4001, stalled_eof, stalled_reset;
    uint64_t deliveries, deliveries_hist, stalled_deliveries, gaps, reorders, unparsed;
    uint64_t ack_conns, acks_sent, dups, untracked_channels;
    uint64_t welcome, subscribed, error_frames, other_text, continuation, binary;
    uint64_t pings, pongs_rx, proto_err, masked, big_frames;
    uint64_t bytes_in, reads;
    uint64_t text_frames, text_wire_bytes, compressed, inflate_err;  /* server text frames: count, header+payload bytes */
    uint64_t first_deliv_ns, last_deliv_ns;
    uint64_t deliveries_window; /* deliveries received inside [hist_from, publishing end] */
    uint64_t open_end, open_nonstalled_end, behind_conns, behind_msgs;
    double cpu_win_s, cpu_total_s;
    hist_t lat;
    hist_t qdelay;  /* per measured delivery: time from the loop's poll return to our recv */
} wstats_t;

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void send_msg(int fd, uint32_t type, const void *body, uint32_t len)
{
    mhdr_t h = {type, len};
    if (write_all(fd, &h, sizeof h) || write_all(fd, body, len))
        _exit(3); /* parent gone */
}

/* ------------------------------------------------------------------ */
/* worker: WebSocket device connections                                */

enum { CS_IDLE, CS_CONNECTING, CS_TLS, CS_HANDSHAKE, CS_OPEN, CS_CLOSED };

typedef struct wconn {
    ev_io io;               /* first member: the callback casts back */
    int idx;                /* global connection index */
    uint8_t state, stalled, paused, welcomed, in_frag, cur_ev;
    char accept[29];        /* expected Sec-WebSocket-Accept */
    uint8_t *in;            /* unparsed tail (partial frame), malloc'd */
    uint32_t in_len;
    uint8_t *out;           /* unsent bytes (rare: pongs/close under pressure) */
    uint32_t out_len, out_off;
    uint64_t skip;          /* bytes of an oversized frame still to skip */
    uint64_t t_start;
    int64_t last_n;
    uint8_t acks, nch;      /* welcome said "acks":true; channels tracked */
    struct chst *ch;        /* per channel: seq tracking and ack state, malloc'd */
    SSL *ssl;               /* --tls-port */
    uint8_t tls_want;       /* CS_TLS: EV_READ or EV_WRITE the handshake waits for */
} wconn_t;

/* Per channel of a connection: the highest seq received, which of the 64
 * seqs at and below it arrived (bit i = last_seq - i), and the ack state. */
#define CH_MAX 8
typedef struct chst {
    char *name;
    uint64_t last_seq, bits, acked;
    uint32_t unacked;       /* new messages since the last ack */
} chst_t;

static struct {
    struct ev_loop *loop;
    int wid, cmd_fd, res_fd;
    int first, count;
    wconn_t *c;
    int next, inflight, settled, max_inflight;
    int ready_sent, draining, finished;
    uint64_t hist_from;
    ev_io cmd_io;
    ev_timer tick, progress, drain_timer, ack_timer;
    wstats_t st;
    uint8_t *rbuf;
    struct sockaddr_in dst[MAX_PORTS];   /* one per server port */
    int nsrc;
    double cpu_go;
    int64_t final_n;
    char cmdbuf[sizeof(cmd_t)];
    size_t cmdlen;
    uint64_t cur_qdelay;
    uint64_t stalled_activity, drain_start; /* last frame read on a resumed stalled conn */
    uint32_t *bucket;     /* deliveries per BUCKET_NS of receive time since hist_from */
    size_t nbucket;
} W;

#define BUCKET_NS 10000000ull

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents);
static void open_next(void);

static void conn_set_events(wconn_t *c)
{
    int want = 0;
    if (c->state == CS_CONNECTING)
        want = EV_WRITE;
    else if (c->state == CS_TLS)
        want = c->tls_want;
    else if (c->state == CS_HANDSHAKE || c->state == CS_OPEN) {
        if (!c->paused)
            want |= EV_READ;
        if (c->out_len > c->out_off)
            want |= EV_WRITE;
    }
    if (want == c->cur_ev)
        return;
    if (c->cur_ev)
        ev_io_stop(W.loop, &c->io);
    c->cur_ev = (uint8_t)want;
    if (want) {
        ev_io_set(&c->io, c->io.fd, want);
        ev_io_start(W.loop, &c->io);
    }
}

static void settle(wconn_t *c, int ok)
{
    (void)c;
    W.inflight--;
    W.settled++;
    if (ok)
        W.st.welcomed++;
    else
        W.st.failed++;
}

/* One close path. `why` counts are done by the caller. */
static void conn_close(wconn_t *c)
{
    if (c->state == CS_CLOSED || c->state == CS_IDLE)
        return;
    int was_pending = (c->state == CS_CONNECTING || c->state == CS_TLS || c->state == CS_HANDSHAKE ||
                       (c->state == CS_OPEN && !c->welcomed));
    if (c->cur_ev)
        ev_io_stop(W.loop, &c->io);
    c->cur_ev = 0;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->io.fd);
    c->io.fd = -1;
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    for (int i = 0; i < c->nch; i++)
        free(c->ch[i].name);
    free(c->ch);
    c->ch = NULL;
    c->nch = 0;
    if (was_pending) {
        settle(c, 0);
    } else {
        if (c->stalled)
            W.st.stalled_closed++;
        else
            W.st.closed_nonstalled++;
    }
    c->state = CS_CLOSED;
    if (was_pending)
        open_next();
}

/* send() or SSL_write(), with SSL's "wait" outcomes as EAGAIN. */
static ssize_t conn_write(wconn_t *c, const void *p, size_t len)
{
    if (!c->ssl)
        return send(c->io.fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    ERR_clear_error();
    int n = SSL_write(c->ssl, p, (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    errno = (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? EAGAIN : ECONNRESET;
    return -1;
}

/* recv() or SSL_read(); 0 at EOF or close_notify. */
static ssize_t conn_recv(wconn_t *c, void *p, size_t len)
{
    if (!c->ssl)
        return recv(c->io.fd, p, len, 0);
    ERR_clear_error();
    int n = SSL_read(c->ssl, p, (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? EAGAIN : ECONNRESET;
    return -1;
}

static void conn_flush(wconn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = conn_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            kv_add(&W.st.conn_errno, errno, 1);
            if (errno == ECONNRESET || errno == EPIPE)
                W.st.reset_closes++;
            else
                W.st.read_errors++;
            conn_close(c);
            return;
        }
        c->out_off += (uint32_t)n;
    }
    if (c->out_off == c->out_len) {
        free(c->out);
        c->out = NULL;
        c->out_len = c->out_off = 0;
    }
    conn_set_events(c);
}

/* Appends to the connection's unsent bytes without writing: acks produced
 * while one read's frames are parsed go out in one send (conn_read flushes). */
static void conn_queue(wconn_t *c, const void *data, size_t len)
{
    if (c->state == CS_CLOSED)
        return;
    uint32_t pend = c->out_len - c->out_off;
    uint8_t *nb = malloc(pend + len);
    if (!nb)
        die("out of memory");
    if (pend)
        memcpy(nb, c->out + c->out_off, pend);
    memcpy(nb + pend, data, len);
    free(c->out);
    c->out = nb;
    c->out_off = 0;
    c->out_len = pend + (uint32_t)len;
}

static void conn_send(wconn_t *c, const void *data, size_t len)
{
    if (c->state == CS_CLOSED)
        return;
    conn_queue(c, data, len);
    conn_flush(c);
}

/* Client frames are always masked (RFC 6455 5.3). Control payloads <= 125. */
static void ws_send(wconn_t *c, int op, const uint8_t *payload, size_t len)
{
    uint8_t f[2 + 4 + 125];
    if (len > 125)
        len = 125;
    uint32_t m = (uint32_t)rnd();
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(0x80 | len);
    memcpy(f + 2, &m, 4);
    for (size_t i = 0; i < len; i++)
        f[6 + i] = payload[i] ^ f[2 + (i & 3)];
    conn_send(c, f, 6 + len);
}

/* A masked text frame of up to 64 KiB, queued (not yet written). */
static void ws_queue_text(wconn_t *c, const char *payload, size_t len)
{
    uint8_t f[4 + 4 + 512];
    if (len > 512)
        len = 512;
    size_t h = 0;
    f[h++] = 0x81;
    if (len < 126) {
        f[h++] = (uint8_t)(0x80 | len);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(len >> 8);
        f[h++] = (uint8_t)len;
    }
    uint32_t m = (uint32_t)rnd();
    memcpy(f + h, &m, 4);
    for (size_t i = 0; i < len; i++)
        f[h + 4 + i] = (uint8_t)payload[i] ^ f[h + (i & 3)];
    conn_queue(c, f, h + 4 + len);
}

static void send_ack(wconn_t *c, chst_t *ch)
{
    char buf[400];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"ack\",\"channel\":\"%s\",\"seq\":%" PRIu64 "}",
                     ch->name, ch->last_seq);
    if (n <= 0 || (size_t)n >= sizeof buf)
        return;
    ws_queue_text(c, buf, (size_t)n);
    ch->acked = ch->last_seq;
    ch->unacked = 0;
    W.st.acks_sent++;
}

static const uint8_t *find(const uint8_t *p, size_t len, const char *needle)
{
    return memmem(p, len, needle, strlen(needle));
}

static int parse_u64(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    const uint8_t *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p == s)
        return 0;
    *out = v;
    return 1;
}

/* A JSON number at p: an exact integer, or (data re-encoded by lua-cjson
 * after a route hook) a float like 1.2345678901234e+15, rounded. */
static int parse_num(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
    const uint8_t *q = p;
    while (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' ||
                       *q == '+' || *q == '-'))
        q++;
    if (q == p)
        return 0;
    const uint8_t *d = p;
    while (d < q && *d >= '0' && *d <= '9')
        d++;
    if (d == q)
        return parse_u64(p, q, out);
    char tmp[48];
    size_t n = (size_t)(q - p) < sizeof tmp - 1 ? (size_t)(q - p) : sizeof tmp - 1;
    memcpy(tmp, p, n);
    tmp[n] = 0;
    double v = strtod(tmp, NULL);
    if (!(v >= 0) || v > 1.8e19)
        return 0;
    *out = (uint64_t)llround(v);
    return 1;
}

static void on_welcome(wconn_t *c, const uint8_t *p, size_t len)
{
    if (c->welcomed)
        return;
    c->welcomed = 1;
    if (find(p, len, "\"acks\":true") || find(p, len, "\"acks\": true")) {
        c->acks = 1;
        W.st.ack_conns++;
    }
    settle(c, 1);
    if (c->stalled && !W.draining) {
        c->paused = 1;
        conn_set_events(c);
    }
    open_next();
}

/* The state of channel name[0..nlen) on c, created on first sight; NULL past CH_MAX. */
static chst_t *chan_state(wconn_t *c, const uint8_t *name, size_t nlen)
{
    for (int i = 0; i < c->nch; i++)
        if (strlen(c->ch[i].name) == nlen && memcmp(c->ch[i].name, name, nlen) == 0)
            return &c->ch[i];
    if (c->nch >= CH_MAX || nlen > 256)
        return NULL;
    chst_t *nc = realloc(c->ch, (size_t)(c->nch + 1) * sizeof *nc);
    if (!nc)
        die("out of memory");
    c->ch = nc;
    chst_t *ch = &c->ch[c->nch++];
    memset(ch, 0, sizeof *ch);
    ch->name = strndup((const char *)name, nlen);
    if (!ch->name)
        die("out of memory");
    return ch;
}

/* Books seq on its channel. Returns 1 for a frame seen before (a resend:
 * at or below the highest seq and not one a gap left open), else 0. Gaps
 * and reorders are judged within the last 64 seqs of the channel. */
static int track_seq(wconn_t *c, chst_t *ch, uint64_t seq)
{
    if (seq > ch->last_seq) {
        uint64_t shift = seq - ch->last_seq;
        if (ch->last_seq && shift > 1)
            W.st.gaps += shift - 1;
        ch->bits = shift >= 64 ? 1 : (ch->bits << shift) | 1;
        ch->last_seq = seq;
        if (c->acks && O.ack_every > 0 && ++ch->unacked >= (uint32_t)O.ack_every)
            send_ack(c, ch);
        return 0;
    }
    uint64_t d = ch->last_seq - seq;
    if (d < 64 && !((ch->bits >> d) & 1)) {
        ch->bits |= 1ull << d;          /* a gap filled late */
        W.st.reorders++;
        return 0;
    }
    W.st.dups++;
    /* The server resends what it has no ack for: ack what we hold now rather
     * than wait for the next --ack-every boundary. */
    if (c->acks && O.ack_every > 0 && ch->acked < ch->last_seq)
        send_ack(c, ch);
    return 1;
}

static void on_text(wconn_t *c, const uint8_t *p, size_t len, uint64_t now)
{
    size_t head = len < 64 ? len : 64;
    if (find(p, head, "\"type\":\"message\"")) {
        const uint8_t *end = p + len;
        uint64_t seq = 0, t = 0, n = 0;
        if (c->stalled)
            W.stalled_activity = now;
        const uint8_t *q = find(p, len, "\"seq\":");
        int have_seq = q && parse_u64(q + 6, end, &seq);
        /* data keys in any order: a route hook has lua-cjson re-encode data */
        int have_t = 0;
        const uint8_t *dq = find(p, len, "\"data\":{");
        if (dq) {
            dq += 8;
            q = find(dq, (size_t)(end - dq), "\"t\":");
            have_t = q && parse_num(q + 4, end, &t);
            const uint8_t *r = find(dq, (size_t)(end - dq), "\"n\":");
            /* max, not last: with several publisher connections the server may
             * order messages differently from our n */
            if (r && parse_num(r + 4, end, &n) && (int64_t)n > c->last_n)
                c->last_n = (int64_t)n;
        }
        if (have_seq) {
            const uint8_t *cq = find(p, len, "\"channel\":\"");
            const uint8_t *cn = cq ? cq + 11 : NULL;
            const uint8_t *ce = cn ? memchr(cn, '"', (size_t)(end - cn)) : NULL;
            chst_t *ch = ce ? chan_state(c, cn, (size_t)(ce - cn)) : NULL;
            if (!ch)
                W.st.untracked_channels++;
            else if (track_seq(c, ch, seq))
                return;                 /* a resend: counted as dups, not a delivery */
        }
        if (c->stalled) {
            W.st.stalled_deliveries++;
            return;
        }
        W.st.deliveries++;
        if (W.bucket && now >= W.hist_from) { /* throughput: every delivery, by receive time */
            uint64_t b = (now - W.hist_from) / BUCKET_NS;
            if (b < W.nbucket)
                W.bucket[b]++;
        }
        if (!have_t) {
            W.st.unparsed++;
            return;
        }
        if (W.hist_from && t >= W.hist_from) {
            h_add(&W.st.lat, now > t ? now - t : 0);
            h_add(&W.st.qdelay, W.cur_qdelay);
            W.st.deliveries_hist++;
            if (!W.st.first_deliv_ns)
                W.st.first_deliv_ns = now;
            W.st.last_deliv_ns = now;
        }
        return;
    }
    if (find(p, head, "\"type\":\"welcome\"")) {
        W.st.welcome++;
        on_welcome(c, p, len);
    } else if (find(p, head, "\"type\":\"subscribed\"")) {
        W.st.subscribed++;
    } else if (find(p, head, "\"type\":\"error\"")) {
        W.st.error_frames++;
        if (W.st.error_frames <= 3)
            fprintf(stderr, "loadgen[w%d]: server error frame on conn %d: %.*s\n", W.wid,
                    c->idx, (int)(len > 200 ? 200 : len), (const char *)p);
    } else {
        W.st.other_text++;
    }
}

/* Handles one server frame (payload may be a prefix of a huge frame).
 * May close the connection. */
static void on_frame(wconn_t *c, int fin, int op, uint8_t *p, size_t len, uint64_t now)
{
    switch (op) {
    case 0x1:
        c->in_frag = !fin;
        on_text(c, p, len, now);
        break;
    case 0x0:
        W.st.continuation++;
        if (fin)
            c->in_frag = 0;
        break;
    case 0x2:
        W.st.binary++;
        c->in_frag = !fin;
        break;
    case 0x8: {
        int code = len >= 2 ? (p[0] << 8 | p[1]) : 1005;
        W.st.server_closes++;
        kv_add(&W.st.close_codes, code, 1);
        if (c->stalled && code == 4001)
            W.st.stalled_closed_4001++;
        if (!c->welcomed && W.st.server_closes <= 3)
            fprintf(stderr, "loadgen[w%d]: conn %d closed %d before welcome: %.*s\n", W.wid,
                    c->idx, code, (int)(len > 2 ? len - 2 : 0), (const char *)p + 2);
        uint8_t cp[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        if (code != 1005)
            ws_send(c, 0x8, cp, 2);
        else
            ws_send(c, 0x8, NULL, 0);
        conn_close(c);
        break;
    }
    case 0x9:
        W.st.pings++;
        ws_send(c, 0xA, p, len);
        break;
    case 0xA:
        W.st.pongs_rx++;
        break;
    default:
        W.st.proto_err++;
        conn_close(c);
        break;
    }
}

/* --deflate: a compressed message (RFC 7692, no context takeover: a fresh
 * stream per message) inflated into a per-process buffer. NULL if bad. */
static uint8_t *inflate_msg(const uint8_t *p, size_t len, size_t *out_len)
{
    static z_stream z;
    static int ready;
    static uint8_t buf[1 << 20];
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    if (!ready) {
        if (inflateInit2(&z, -15) != Z_OK)
            return NULL;
        ready = 1;
    } else if (inflateReset(&z) != Z_OK) {
        return NULL;
    }
    z.next_out = buf;
    z.avail_out = sizeof buf;
    z.next_in = (Bytef *)p;
    z.avail_in = (uInt)len;
    int rc = inflate(&z, Z_SYNC_FLUSH);
    if (rc == Z_OK && z.avail_in == 0) {
        z.next_in = (Bytef *)tail;
        z.avail_in = sizeof tail;
        rc = inflate(&z, Z_SYNC_FLUSH);
    }
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
        return NULL;
    *out_len = sizeof buf - z.avail_out;
    return buf;
}

/* Parses as many whole frames as `p` holds. Returns bytes consumed. */
static size_t ws_process(wconn_t *c, uint8_t *p, size_t len, uint64_t now)
{
    size_t off = 0;
    while (off < len && c->state == CS_OPEN) {
        if (c->skip) {
            size_t k = (size_t)(c->skip < len - off ? c->skip : len - off);
            c->skip -= k;
            off += k;
            continue;
        }
        uint8_t *f = p + off;
        size_t avail = len - off;
        if (avail < 2)
            break;
        int fin = f[0] & 0x80, op = f[0] & 0x0f, masked = f[1] & 0x80;
        uint64_t plen = f[1] & 0x7f;
        size_t hl = 2;
        int compressed = (f[0] & 0x70) == 0x40 && O.deflate && op == 0x1 && fin;
        if ((f[0] & 0x70) && !compressed)
            W.st.proto_err++;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | f[2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (avail < hl)
            break;
        if (op >= 8 && (plen > 125 || !fin)) {
            W.st.proto_err++;
            conn_close(c);
            break;
        }
        size_t have;
        if (avail - hl >= plen) {
            have = (size_t)plen;
        } else if (plen > KEEP_MAX && avail - hl >= PREFIX_MIN) {
            have = avail - hl;
            W.st.big_frames++;
        } else {
            break;
        }
        uint8_t *pl = f + hl;
        if (masked) {
            W.st.masked++; /* a server must not mask */
            for (size_t i = 0; i < have; i++)
                pl[i] ^= f[hl - 4 + (i & 3)];
        }
        off += hl + have;
        if (have < plen)
            c->skip = plen - have;
        if (op == 0x1) {
            W.st.text_frames++;
            W.st.text_wire_bytes += hl + plen;
        }
        if (compressed) {
            size_t ilen;
            uint8_t *text = have == plen ? inflate_msg(pl, have, &ilen) : NULL;
            W.st.compressed++;
            if (!text) {
                W.st.inflate_err++;
                continue;
            }
            on_frame(c, fin, op, text, ilen, now);
            continue;
        }
        on_frame(c, fin, op, pl, have, now);
    }
    return off;
}

static size_t on_handshake(wconn_t *c, uint8_t *p, size_t len)
{
    uint8_t *he = memmem(p, len, "\r\n\r\n", 4);
    if (!he) {
        if (len > HS_MAX) {
            W.st.bad_http++;
            conn_close(c);
        }
        return 0;
    }
    size_t hlen = (size_t)(he - p) + 4;
    int status = 0;
    if (len >= 12 && memcmp(p, "HTTP/1.", 7) == 0)
        status = atoi((const char *)p + 9);
    if (status != 101) {
        W.st.http_fail++;
        kv_add(&W.st.http_status, status, 1);
        if (W.st.http_fail <= 3) {
            fprintf(stderr, "loadgen[w%d]: conn %d handshake answered: %.*s\n", W.wid, c->idx,
                    (int)(len > 300 ? 300 : len), (const char *)p);
        }
        conn_close(c);
        return len;
    }
    /* find Sec-WebSocket-Accept */
    const char *h = (const char *)p, *end = (const char *)he + 2;
    int ok = 0;
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        if (!eol)
            break;
        static const char name[] = "Sec-WebSocket-Accept:";
        if ((size_t)(eol - h) > sizeof name - 1 && strncasecmp(h, name, sizeof name - 1) == 0) {
            const char *v = h + sizeof name - 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            ok = (ve - v == 28 && memcmp(v, c->accept, 28) == 0);
        }
        h = eol + 2;
    }
    if (!ok) {
        W.st.bad_accept++;
        conn_close(c);
        return len;
    }
    c->state = CS_OPEN;
    return hlen;
}

static void conn_read(wconn_t *c)
{
    for (;;) {
        size_t pend = c->in_len;
        if (pend)
            memcpy(W.rbuf, c->in, pend);
        size_t cap = RBUF_SZ - pend;
        ssize_t n = conn_recv(c, W.rbuf + pend, cap);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            kv_add(&W.st.conn_errno, errno, 1);
            if (errno == ECONNRESET) {
                W.st.reset_closes++;
                if (c->stalled)
                    W.st.stalled_reset++;
            } else
                W.st.read_errors++;
            conn_close(c);
            return;
        }
        if (n == 0) {
            if (c->state == CS_OPEN) {
                W.st.eof_closes++;
                if (c->stalled)
                    W.st.stalled_eof++;
            }
            else
                W.st.bad_http++;
            conn_close(c);
            return;
        }
        W.st.bytes_in += (uint64_t)n;
        W.st.reads++;
        uint64_t now = now_ns();
        double qd = ev_time() - ev_now(W.loop);
        W.cur_qdelay = qd > 0 ? (uint64_t)(qd * 1e9) : 0;
        size_t len = pend + (size_t)n, used = 0;
        if (c->state == CS_HANDSHAKE)
            used = on_handshake(c, W.rbuf, len);
        if (c->state == CS_OPEN && used < len)
            used += ws_process(c, W.rbuf + used, len - used, now);
        if (c->state == CS_CLOSED)
            return;
        if (c->out_len > c->out_off) { /* acks queued while parsing */
            conn_flush(c);
            if (c->state == CS_CLOSED)
                return;
        }
        size_t left = len - used;
        if (left) {
            if (left != c->in_len || !c->in) {
                uint8_t *nb = realloc(c->in, left);
                if (!nb)
                    die("out of memory");
                c->in = nb;
            }
            memcpy(c->in, W.rbuf + used, left);
            c->in_len = (uint32_t)left;
        } else if (c->in) {
            free(c->in);
            c->in = NULL;
            c->in_len = 0;
        }
        if (((size_t)n < cap && !c->ssl) || c->paused)
            return;   /* TLS: one record per read, read until EAGAIN */
    }
}

static SSL_CTX *tls_ctx;   /* per worker, --tls-port */

static void send_upgrade(wconn_t *c);

/* Drives SSL_connect; the upgrade request follows once it is done. */
static void tls_step(wconn_t *c)
{
    ERR_clear_error();
    int rc = SSL_connect(c->ssl);
    if (rc == 1) {
        send_upgrade(c);
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->tls_want = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        conn_set_events(c);
        return;
    }
    W.st.connect_fail++;
    kv_add(&W.st.conn_errno, ECONNREFUSED, 1);
    conn_close(c);
}

static void conn_connected(wconn_t *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        W.st.connect_fail++;
        kv_add(&W.st.conn_errno, err, 1);
        conn_close(c);
        return;
    }
    if (O.tls_port) {
        c->ssl = SSL_new(tls_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->io.fd) != 1)
            die("SSL_new failed");
        c->state = CS_TLS;
        tls_step(c);
        return;
    }
    send_upgrade(c);
}

static void send_upgrade(wconn_t *c)
{
    uint8_t key[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rnd();
        memcpy(key + i, &r, 8);
    }
    char key64[32];
    EVP_EncodeBlock((unsigned char *)key64, key, 16);
    char cat[64];
    int cl = snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key64);
    unsigned char dig[SHA_DIGEST_LENGTH];
    SHA1((unsigned char *)cat, (size_t)cl, dig);
    EVP_EncodeBlock((unsigned char *)c->accept, dig, SHA_DIGEST_LENGTH);

    char tok[256], chans[200] = "";
    if (O.mode == MODE_UNICAST)
        snprintf(tok, sizeof tok, "%s-u%d", O.token, c->idx % O.users);
    else
        snprintf(tok, sizeof tok, "%s", O.token);
    if (O.mode != MODE_UNICAST && O.channel[0])
        snprintf(chans, sizeof chans, "&channels=%s", O.channel);
    char req[1024];
    int rl = snprintf(req, sizeof req,
                      "GET %s?token=%s&device=d%d%s HTTP/1.1\r\n"
                      "Host: %s:%d\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\n%s"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      O.path, tok, c->idx, chans, O.host, O.ports[c->idx % O.nports], key64,
                      O.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    c->state = CS_HANDSHAKE;
    conn_send(c, req, (size_t)rl);
    if (c->state != CS_CLOSED)
        conn_set_events(c);
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    wconn_t *c = (wconn_t *)w;
    if (c->state == CS_CONNECTING) {
        if (revents & EV_WRITE)
            conn_connected(c);
        return;
    }
    if (c->state == CS_TLS) {
        tls_step(c);
        return;
    }
    if (revents & EV_WRITE) {
        conn_flush(c);
        if (c->state == CS_CLOSED)
            return;
    }
    if ((revents & EV_READ) && !c->paused)
        conn_read(c);
}

static void conn_start(wconn_t *c)
{
    W.st.attempted++;
    W.inflight++;
    c->t_start = now_ns();
    c->stalled = (uint8_t)is_stalled(c->idx);
    if (c->stalled)
        W.st.stalled++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        W.st.connect_fail++;
        kv_add(&W.st.conn_errno, errno, 1);
        W.inflight--;
        W.settled++;
        W.st.failed++;
        c->state = CS_CLOSED;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (c->stalled && O.stall_rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &O.stall_rcvbuf, sizeof O.stall_rcvbuf);
    /* Server port i % nports, source address (i / nports) % nsrc: every
     * (source, server port) pair gets its share, and the kernel picks the
     * ephemeral port per 4-tuple at connect (IP_BIND_ADDRESS_NO_PORT), so
     * each pair has the whole ephemeral range. */
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)((c->idx / O.nports) % W.nsrc));
    const struct sockaddr_in *dst = &W.dst[c->idx % O.nports];
    ev_io_init(&c->io, conn_cb, fd, EV_WRITE);
    c->state = CS_CONNECTING;
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS)) {
        W.st.connect_fail++;
        kv_add(&W.st.conn_errno, errno, 1);
        conn_close(c);
        return;
    }
    conn_set_events(c);
}

static void check_ready(void)
{
    if (W.ready_sent || W.settled < W.count)
        return;
    W.ready_sent = 1;
    m_ready_t r = {W.st.welcomed, W.st.failed};
    send_msg(W.res_fd, M_READY, &r, sizeof r);
}

static int in_open_next;
static void open_next(void)
{
    if (in_open_next)
        return;
    in_open_next = 1;
    while (W.inflight < W.max_inflight && W.next < W.count)
        conn_start(&W.c[W.next++]);
    in_open_next = 0;
    check_ready();
}

static void worker_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    if (W.ready_sent) {
        ev_timer_stop(W.loop, t);
        return;
    }
    uint64_t now = now_ns(), lim = (uint64_t)(O.open_timeout * 1e9);
    for (int i = 0; i < W.next; i++) {
        wconn_t *c = &W.c[i];
        int pending = c->state == CS_CONNECTING || c->state == CS_HANDSHAKE ||
                      (c->state == CS_OPEN && !c->welcomed);
        if (pending && now - c->t_start > lim) {
            if (c->state == CS_OPEN)
                W.st.no_welcome++;
            else
                W.st.open_timeouts++;
            conn_close(c);
        }
    }
    open_next();
}

static void worker_progress(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    m_progress_t p = {W.st.deliveries, -1, 0, W.st.server_closes};
    int64_t mn = INT64_MAX;
    for (int i = 0; i < W.count; i++) {
        wconn_t *c = &W.c[i];
        if (c->state != CS_OPEN || c->stalled || !c->welcomed)
            continue;
        p.open_nonstalled++;
        if (c->last_n < mn)
            mn = c->last_n;
    }
    if (p.open_nonstalled)
        p.min_n = mn;
    send_msg(W.res_fd, M_PROGRESS, &p, sizeof p);
}

/* --ack-every N > 1: ack what has waited since the last tick, so the tail of
 * a burst (fewer than N messages) is acked before the server's ack timeout. */
static void worker_ack_flush(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    for (int i = 0; i < W.count; i++) {
        wconn_t *c = &W.c[i];
        if (c->state != CS_OPEN || !c->acks || c->paused)
            continue;
        int queued = 0;
        for (int j = 0; j < c->nch; j++)
            if (c->ch[j].acked < c->ch[j].last_seq) {
                send_ack(c, &c->ch[j]);
                queued = 1;
            }
        if (queued)
            conn_flush(c);
    }
}

static void worker_final(void)
{
    if (W.finished)
        return;
    W.finished = 1;
    ev_timer_stop(W.loop, &W.progress);
    for (int i = 0; i < W.count; i++) {
        wconn_t *c = &W.c[i];
        if (c->state != CS_OPEN)
            continue;
        W.st.open_end++;
        if (c->stalled)
            continue;
        W.st.open_nonstalled_end++;
        if (W.final_n > 0 && c->last_n < W.final_n) {
            W.st.behind_conns++;
            W.st.behind_msgs += (uint64_t)(W.final_n - c->last_n);
        }
    }
    W.st.cpu_total_s = cpu_self_s();
    send_msg(W.res_fd, M_FINAL, &W.st, sizeof W.st);
}

/* Stalled connections read again at the end so their fate is counted. Done
 * when none is open, when none has produced a frame for 1 s, or after
 * --stall-drain seconds. */
static void worker_drain_check(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    uint64_t now = now_ns();
    int open = 0;
    for (int i = 0; i < W.count; i++)
        if (W.c[i].stalled && W.c[i].state == CS_OPEN)
            open++;
    uint64_t last = W.stalled_activity > W.drain_start ? W.stalled_activity : W.drain_start;
    if (open == 0 || now - last > 1000000000ull || now - W.drain_start > (uint64_t)(O.stall_drain * 1e9)) {
        ev_timer_stop(loop, t);
        worker_final();
    }
}

static void worker_cmd(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    ssize_t n = read(w->fd, W.cmdbuf + W.cmdlen, sizeof W.cmdbuf - W.cmdlen);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        _exit(0); /* parent gone */
    }
    W.cmdlen += (size_t)n;
    if (W.cmdlen < sizeof(cmd_t))
        return;
    cmd_t cmd;
    memcpy(&cmd, W.cmdbuf, sizeof cmd);
    W.cmdlen = 0;
    switch (cmd.cmd) {
    case 'G':
        W.hist_from = (uint64_t)cmd.arg;
        W.cpu_go = cpu_self_s();
        W.nbucket = (size_t)((O.duration + 1) * 1e9 / (double)BUCKET_NS) + 1;
        W.bucket = calloc(W.nbucket, sizeof *W.bucket);
        break;
    case 'S':
        W.final_n = cmd.arg;
        if (W.bucket && (uint64_t)cmd.arg2 > W.hist_from) {
            uint64_t nb = ((uint64_t)cmd.arg2 - W.hist_from) / BUCKET_NS;
            for (uint64_t b = 0; b < nb && b < W.nbucket; b++)
                W.st.deliveries_window += W.bucket[b];
        }
        W.st.cpu_win_s = cpu_self_s() - W.cpu_go;
        if (W.st.stalled && O.stall_drain > 0) {
            W.draining = 1;
            W.drain_start = now_ns();
            int big = 1 << 20; /* drain what the server's kernel buffer holds in few round trips */
            for (int i = 0; i < W.count; i++) {
                wconn_t *c = &W.c[i];
                if (c->stalled && c->paused) {
                    if (c->state == CS_OPEN)
                        setsockopt(c->io.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
                    c->paused = 0;
                    conn_set_events(c);
                }
            }
            ev_timer_init(&W.drain_timer, worker_drain_check, 0.1, 0.1);
            ev_timer_start(loop, &W.drain_timer);
        } else {
            worker_final();
        }
        break;
    case 'Q':
        ev_break(loop, EVBREAK_ALL);
        break;
    }
}

static void worker_main(int wid, int first, int count, int cmd_fd, int res_fd)
{
    memset(&W, 0, sizeof W);
    W.wid = wid;
    W.first = first;
    W.count = count;
    W.cmd_fd = cmd_fd;
    W.res_fd = res_fd;
    W.max_inflight = O.open_inflight / (O.procs > 0 ? O.procs : 1);
    if (W.max_inflight < 1)
        W.max_inflight = 1;
    W.nsrc = O.src_addrs;
    W.st.assigned = (uint64_t)count;
    rng_state = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ now_ns();
    if (!rng_state)
        rng_state = 1;
    W.loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (!W.loop)
        die("worker %d: ev_loop_new failed", wid);
    W.c = calloc((size_t)(count ? count : 1), sizeof *W.c);
    W.rbuf = malloc(RBUF_SZ);
    if (!W.c || !W.rbuf)
        die("out of memory");
    for (int i = 0; i < count; i++) {
        W.c[i].idx = first + i;
        W.c[i].io.fd = -1;
    }
    for (int p = 0; p < O.nports; p++) {
        W.dst[p].sin_family = AF_INET;
        W.dst[p].sin_port = htons((uint16_t)(O.tls_port ? O.tls_port : O.ports[p]));
        inet_pton(AF_INET, O.host, &W.dst[p].sin_addr);
    }
    if (O.tls_port) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx)
            die("SSL_CTX_new failed");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);   /* the bench's self-signed certificate */
    }
    ev_io_init(&W.cmd_io, worker_cmd, cmd_fd, EV_READ);
    ev_io_start(W.loop, &W.cmd_io);
    ev_timer_init(&W.tick, worker_tick, 0.1, 0.1);
    ev_timer_start(W.loop, &W.tick);
    ev_timer_init(&W.progress, worker_progress, PROGRESS_S, PROGRESS_S);
    ev_timer_start(W.loop, &W.progress);
    if (O.ack_every > 1 && O.ack_flush > 0) {
        ev_timer_init(&W.ack_timer, worker_ack_flush, O.ack_flush, O.ack_flush);
        ev_timer_start(W.loop, &W.ack_timer);
    }
    open_next();
    ev_run(W.loop, 0);
    _exit(0);
}

/* ------------------------------------------------------------------ */
/* server sampling                                                     */

typedef struct {
    int ok;
    long rss_kb;
    double cpu_s;
    long tcp_mem_pages, tcp_inuse, tcp_tw;
    long sock_slab_kb;      /* socket objects in the kernel's slabs (see kernel_socket_slabs); -1 unreadable */
    double machine_busy_s; /* user+nice+system of all CPUs (/proc/stat; irq/softirq left out) */
    double machine_steal_s; /* time the hypervisor gave our vCPUs to someone else */
    double machine_irq_s;   /* irq+softirq: loopback TCP work lands here, in no process's CPU */
} srv_t;

/* Kernel memory of the socket objects themselves, which /proc/net/sockstat
 * "mem" (buffer pages only) does not count: per TCP socket a struct tcp_sock
 * (slab TCP), its socket inode (sock_inode_cache), file (filp), dentry and
 * epoll registration (eventpoll_epi). Summed as active objects x object size
 * for the whole machine, so only a before/after difference means anything;
 * /proc/slabinfo needs root. Returns kB, or -1 if unreadable. */
static long kernel_socket_slabs(void)
{
    static const char *const caches[] = {"TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi"};
    FILE *f = fopen("/proc/slabinfo", "r");
    if (!f)
        return -1;
    char line[512], name[64];
    long long bytes = 0;
    while (fgets(line, sizeof line, f)) {
        long long active, total, size;
        if (sscanf(line, "%63s %lld %lld %lld", name, &active, &total, &size) != 4)
            continue;
        for (size_t i = 0; i < sizeof caches / sizeof caches[0]; i++)
            if (strcmp(name, caches[i]) == 0)
                bytes += active * size;
    }
    fclose(f);
    return (long)(bytes / 1024);
}

/* RSS and CPU of one server process; 0 if it is gone or exited. */
static int sample_pid(int pid, long *rss_kb, double *cpu_s)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(buf, sizeof buf, f))
        if (strncmp(buf, "VmRSS:", 6) == 0)
            *rss_kb += atol(buf + 6);
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* after ")": state(3) ppid(4) ... utime(14) stime(15) */
    if (p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
        return 0; /* exited, not yet reaped */
    unsigned long ut = 0, st = 0;
    int field = 2;
    char *save = NULL;
    for (char *tk = strtok_r(p + 1, " ", &save); tk; tk = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            ut = strtoul(tk, NULL, 10);
        if (field == 15) {
            st = strtoul(tk, NULL, 10);
            break;
        }
    }
    *cpu_s += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    return 1;
}

static void sample_server(srv_t *s)
{
    memset(s, 0, sizeof *s);
    char buf[4096];
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long u = 0, ni = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0, st = 0;
        int nf = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id, &io, &irq,
                        &sirq, &st);
        double tck = (double)sysconf(_SC_CLK_TCK);
        if (nf >= 3)
            s->machine_busy_s = (double)(u + ni + sy) / tck;
        if (nf >= 8) {
            s->machine_steal_s = (double)st / tck;
            s->machine_irq_s = (double)(irq + sirq) / tck;
        }
        fclose(f);
    }
    f = fopen("/proc/net/sockstat", "r");
    if (f) {
        while (fgets(buf, sizeof buf, f)) {
            if (strncmp(buf, "TCP:", 4) == 0) {
                char *p;
                if ((p = strstr(buf, " inuse ")))
                    s->tcp_inuse = atol(p + 7);
                if ((p = strstr(buf, " tw ")))
                    s->tcp_tw = atol(p + 4);
                if ((p = strstr(buf, " mem ")))
                    s->tcp_mem_pages = atol(p + 5);
            }
        }
        fclose(f);
    }
    s->sock_slab_kb = kernel_socket_slabs();
    if (!O.nserver_pids)
        return;
    int ok = 1;
    for (int i = 0; i < O.nserver_pids; i++)
        ok &= sample_pid(O.server_pids[i], &s->rss_kb, &s->cpu_s);
    s->ok = ok;   /* every server alive: a sum over fewer would look like a drop */
}

/* ------------------------------------------------------------------ */
/* parent: publisher                                                   */

typedef struct {
    uint64_t t_send, t_data;
    int32_t user;
    int64_t n;
} inflight_t;

typedef struct pubconn {
    ev_io io;
    int id, fd, alive, cur_ev;
    char *out;
    size_t out_len, out_off, out_cap;
    char *in;
    size_t in_len, in_cap;
    inflight_t *ring;
    int rhead, rcount;
    uint64_t dead_since;
} pubconn_t;

enum { PH_CONNECT, PH_PUBLISH, PH_DRAIN, PH_FINAL, PH_DONE };

static struct {
    struct ev_loop *loop;
    int K;
    pid_t *pid;
    int *cmd_fd, *res_fd;
    ev_io *res_io;
    char **rbuf;
    size_t *rlen, *rcap;
    int *ready, *final, *dead;
    m_ready_t *rdy;
    m_progress_t *prog;
    wstats_t *fin;
    int nready, nfinal;
    int phase;
    pubconn_t *pc;
    int pc_rr;
    uint64_t t_start, t_ready, t_go, t_pub_end, t_end, hist_from;
    int64_t n_sent, max_ok_n;
    uint64_t pub_ok, pub_err, pub_lost, pub_reconnects, pub_bad_resp;
    kvmap_t pub_status;
    hist_t pub_rtt, sched_lag;
    uint64_t recip_sum, recip_nonstalled_sum, inflight_http;
    int *stalled_per_user;
    uint64_t drain_last_deliv, drain_last_change;
    int drain_timed_out;
    ev_timer pub_tick, dur_timer, drain_timer, report_timer;
    srv_t s_base, s_loaded, s_go, s_end;
    double cpu_go, cpu_end;
    char *body;
    char *json;                 /* --json: the data fields after "t" and "n" */
    int json_len;
    uint64_t last_rep_t, last_rep_deliv, last_rep_pub;
} P;

static void pub_cb(struct ev_loop *loop, ev_io *w, int revents);

static void pc_events(pubconn_t *c)
{
    int want = c->alive ? EV_READ | (c->out_len > c->out_off ? EV_WRITE : 0) : 0;
    if (want == c->cur_ev)
        return;
    if (c->cur_ev)
        ev_io_stop(P.loop, &c->io);
    c->cur_ev = want;
    if (want) {
        ev_io_set(&c->io, c->fd, want);
        ev_io_start(P.loop, &c->io);
    }
}

static int pc_connect(pubconn_t *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, O.host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->alive = 1;
    c->cur_ev = 0;
    c->out_len = c->out_off = 0;
    c->in_len = 0;
    c->rhead = c->rcount = 0;
    ev_io_init(&c->io, pub_cb, fd, EV_READ);
    pc_events(c);
    return 0;
}

static void pc_fail(pubconn_t *c, const char *why)
{
    if (!c->alive)
        return;
    if (P.pub_lost + P.pub_reconnects < 5)
        fprintf(stderr, "loadgen: publisher conn %d: %s (%d requests in flight lost)\n", c->id,
                why, c->rcount);
    if (c->cur_ev)
        ev_io_stop(P.loop, &c->io);
    c->cur_ev = 0;
    close(c->fd);
    c->alive = 0;
    P.pub_lost += (uint64_t)c->rcount;
    P.inflight_http -= (uint64_t)c->rcount;
    c->rcount = 0;
    c->dead_since = now_ns();
}

static void pc_flush(pubconn_t *c)
{
    while (c->alive && c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            pc_fail(c, strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    pc_events(c);
}

static void pc_append(pubconn_t *c, const char *d, size_t len)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        while (c->out_len + len > c->out_cap)
            c->out_cap = c->out_cap ? c->out_cap * 2 : 65536;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out)
            die("out of memory");
    }
    memcpy(c->out + c->out_len, d, len);
    c->out_len += len;
}

static int64_t min_n_all(int *any)
{
    int64_t mn = INT64_MAX;
    *any = 0;
    for (int k = 0; k < P.K; k++) {
        if (P.prog[k].open_nonstalled == 0)
            continue;
        *any = 1;
        if (P.prog[k].min_n < mn)
            mn = P.prog[k].min_n;
    }
    return mn;
}

static uint64_t deliv_all(void)
{
    uint64_t d = 0;
    for (int k = 0; k < P.K; k++)
        d += P.prog[k].deliveries;
    return d;
}

/* May we publish one more message in max-rate mode? */
static int throttle_ok(void)
{
    if (O.rate > 0)
        return 1;
    if (O.mode == MODE_BROADCAST) {
        int any;
        int64_t mn = min_n_all(&any);
        if (!any)
            return P.inflight_http < (uint64_t)O.max_outstanding;
        return P.n_sent - mn < O.max_lag;
    }
    uint64_t d = deliv_all(), exp = P.recip_nonstalled_sum + P.inflight_http;
    return exp <= d || exp - d < (uint64_t)O.max_outstanding;
}

/* --json: the rest of each message's data, an order as a shop's backend
 * would push it (ids, names, prices, line items) to about `size` bytes of
 * data JSON in all. The same for every message: with no context takeover
 * (permessage-deflate as the server speaks it) each message compresses on
 * its own, so what matters is the redundancy inside one message, which
 * this has as real JSON does (repeated keys, similar values), not the
 * 'x' pad's. */
static uint32_t xorshift(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return *r;
}

static void make_json(int size)
{
    static const char *names[] = {"Wireless Mouse", "USB-C Cable 2m", "Mechanical Keyboard", "27\\\" Monitor",
                                  "Laptop Stand", "Webcam 1080p", "Noise Cancelling Headphones", "Desk Lamp"};
    static const char *cities[] = {"Berlin", "Lyon", "Porto", "Krakow"};
    char *j = malloc((size_t)size + 512);
    if (!j)
        die("out of memory");
    uint32_t r = 2463534242u;
#define NEXT() xorshift(&r)
    int n = sprintf(j, "\"event\":\"order.updated\",\"order\":{\"id\":\"ord_%08x%04x\",\"status\":\"shipped\","
                    "\"created_at\":\"2026-11-24T16:%02u:%02uZ\",\"currency\":\"EUR\",\"customer\":{\"id\":\"cus_%06x\","
                    "\"name\":\"Jana Nowak\",\"email\":\"jana.nowak@example.com\",\"city\":\"%s\"},"
                    "\"shipping\":{\"carrier\":\"DHL\",\"tracking\":\"JD%012u\",\"eta_days\":%u},\"items\":[",
                    NEXT(), NEXT() & 0xffff, NEXT() % 60, NEXT() % 60, NEXT() & 0xffffff, cities[NEXT() % 4],
                    NEXT() % 1000000000u, 1 + NEXT() % 5);
    int first = 1;
    /* a line item is ~110 bytes; stop while the rest ("]}" and "t","n") fits */
    while (n + 150 < size - 40 || first) {
        unsigned price = 199 + NEXT() % 40000;
        n += sprintf(j + n, "%s{\"sku\":\"SKU-%05u\",\"name\":\"%s\",\"qty\":%u,\"unit_price\":%u.%02u,\"discount\":%u}",
                     first ? "" : ",", NEXT() % 100000, names[NEXT() % 8], 1 + NEXT() % 4, price / 100, price % 100,
                     NEXT() % 3 ? 0 : 5 + NEXT() % 20);
        first = 0;
    }
#undef NEXT
    n += sprintf(j + n, "],\"total\":%u.%02u}", 100 + (unsigned)size % 900, (unsigned)size % 100);
    P.json = j;
    P.json_len = n;
}

static void publish_one(pubconn_t *c, uint64_t t_data)
{
    int64_t n = ++P.n_sent;
    int user = -1;
    char hdr[512];
    char *b = P.body;
    int pre;
    if (O.mode == MODE_UNICAST) {
        user = (int)(rnd() % (uint64_t)O.users);
        pre = sprintf(b, "{\"user\":\"u%d\",\"data\":", user);
    } else {
        pre = sprintf(b, "{\"channel\":\"%s\",\"data\":", O.channel);
    }
    int bl;
    if (O.json) {
        int dl = sprintf(b + pre, "{\"t\":%" PRIu64 ",\"n\":%" PRId64 ",", t_data, n);
        memcpy(b + pre + dl, P.json, (size_t)P.json_len);
        bl = pre + dl + P.json_len;
        memcpy(b + bl, "}}", 2);
        bl += 2;
    } else {
        int dl = sprintf(b + pre, "{\"t\":%" PRIu64 ",\"n\":%" PRId64 ",\"pad\":\"", t_data, n);
        int pad = O.size - dl - 2; /* data JSON = dl + pad + `"}` */
        if (pad < 0)
            pad = 0;
        memset(b + pre + dl, 'x', (size_t)pad);
        bl = pre + dl + pad;
        memcpy(b + bl, "\"}}", 3);
        bl += 3;
    }
    int hl = snprintf(hdr, sizeof hdr,
                      "POST %s HTTP/1.1\r\n"
                      "Host: %s:%d\r\n"
                      "Authorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n",
                      O.pub_path, O.host, O.port, O.pub_token, bl);
    pc_append(c, hdr, (size_t)hl);
    pc_append(c, b, (size_t)bl);
    int slot = (c->rhead + c->rcount) % O.window;
    c->ring[slot] = (inflight_t){now_ns(), t_data, user, n};
    c->rcount++;
    P.inflight_http++;
}

static void pump(void)
{
    if (P.phase != PH_PUBLISH)
        return;
    uint64_t now = now_ns();
    int64_t budget;
    if (O.rate > 0) {
        double el = (double)(now - P.t_go) / 1e9;
        int64_t target = (int64_t)(el * O.rate) + 1;
        budget = target - P.n_sent;
    } else {
        budget = INT64_MAX;
    }
    if (budget <= 0)
        return;
    int touched = 0;
    for (int rounds = 0; budget > 0; rounds++) {
        int progressed = 0;
        for (int j = 0; j < O.pub_conns && budget > 0; j++) {
            pubconn_t *c = &P.pc[(P.pc_rr + j) % O.pub_conns];
            if (!c->alive || c->rcount >= O.window)
                continue;
            if (!throttle_ok()) {
                budget = 0;
                break;
            }
            uint64_t tn = now_ns();
            if (O.rate > 0) {
                uint64_t due = P.t_go + (uint64_t)((double)P.n_sent * 1e9 / O.rate);
                h_add(&P.sched_lag, tn > due ? tn - due : 0);
            }
            publish_one(c, tn);
            touched = 1;
            progressed = 1;
            budget--;
        }
        P.pc_rr = (P.pc_rr + 1) % O.pub_conns;
        if (!progressed)
            break;
    }
    if (touched)
        for (int j = 0; j < O.pub_conns; j++)
            if (P.pc[j].alive && P.pc[j].out_len > P.pc[j].out_off)
                pc_flush(&P.pc[j]);
}

/* One HTTP response at the head of `p`. Returns its size, 0 if incomplete,
 * -1 if it cannot be framed. */
static long http_resp(const char *p, size_t len, int *status, const char **body, size_t *blen,
                      int *close_after)
{
    const char *he = memmem(p, len, "\r\n\r\n", 4);
    if (!he)
        return len > 65536 ? -1 : 0;
    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(p + 9);
    *close_after = (p[7] == '0');
    size_t hsz = (size_t)(he - p) + 4;
    long cl = -1;
    int chunked = 0;
    const char *h = memchr(p, '\n', hsz) + 1, *end = he + 2;
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        if (!eol)
            break;
        size_t ll = (size_t)(eol - h);
        if (ll > 15 && strncasecmp(h, "Content-Length:", 15) == 0)
            cl = atol(h + 15);
        else if (ll > 18 && strncasecmp(h, "Transfer-Encoding:", 18) == 0 &&
                 memmem(h, ll, "chunked", 7))
            chunked = 1;
        else if (ll > 11 && strncasecmp(h, "Connection:", 11) == 0) {
            if (memmem(h, ll, "close", 5))
                *close_after = 1;
            else if (memmem(h, ll, "keep-alive", 10))
                *close_after = 0;
        }
        h = eol + 2;
    }
    if (cl >= 0) {
        if (len < hsz + (size_t)cl)
            return 0;
        *body = p + hsz;
        *blen = (size_t)cl;
        return (long)(hsz + (size_t)cl);
    }
    if (chunked) {
        size_t off = hsz;
        *body = NULL;
        *blen = 0;
        for (;;) {
            const char *eol = memmem(p + off, len - off, "\r\n", 2);
            if (!eol)
                return 0;
            unsigned long csz = strtoul(p + off, NULL, 16);
            off = (size_t)(eol - p) + 2;
            if (csz == 0) {
                const char *t = memmem(p + off - 2, len - off + 2, "\r\n\r\n", 4);
                if (!t)
                    return 0;
                return (long)((size_t)(t - p) + 4);
            }
            if (len < off + csz + 2)
                return 0;
            if (!*body) {
                *body = p + off;
                *blen = csz;
            }
            off += csz + 2;
        }
    }
    if ((*status >= 100 && *status < 200) || *status == 204 || *status == 304) {
        *body = p + hsz;
        *blen = 0;
        return (long)hsz;
    }
    return -1; /* body delimited by close: not supported */
}

static void pc_read(pubconn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in)
                die("out of memory");
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            pc_fail(c, strerror(errno));
            return;
        }
        if (n == 0) {
            pc_fail(c, "closed by server");
            return;
        }
        c->in_len += (size_t)n;
        if ((size_t)n < c->in_cap - c->in_len + (size_t)n)
            break;
    }
    uint64_t now = now_ns();
    size_t off = 0;
    int close_now = 0;
    while (off < c->in_len) {
        int status = 0, close_after = 0;
        const char *body = NULL;
        size_t blen = 0;
        long r = http_resp(c->in + off, c->in_len - off, &status, &body, &blen, &close_after);
        if (r == 0)
            break;
        if (r < 0 || c->rcount == 0) {
            P.pub_bad_resp++;
            pc_fail(c, r < 0 ? "unparseable response" : "response without request");
            return;
        }
        off += (size_t)r;
        inflight_t *f = &c->ring[c->rhead];
        c->rhead = (c->rhead + 1) % O.window;
        c->rcount--;
        P.inflight_http--;
        h_add(&P.pub_rtt, now - f->t_send);
        if (status == 200) {
            P.pub_ok++;
            if (f->n > P.max_ok_n)
                P.max_ok_n = f->n;
            const char *q = body ? memmem(body, blen, "\"recipients\":", 13) : NULL;
            if (q) {
                uint64_t rc = strtoull(q + 13, NULL, 10);
                P.recip_sum += rc;
                uint64_t st = (f->user >= 0 && P.stalled_per_user)
                                  ? (uint64_t)P.stalled_per_user[f->user] : 0;
                P.recip_nonstalled_sum += rc > st ? rc - st : 0;
            }
        } else {
            P.pub_err++;
            kv_add(&P.pub_status, status, 1);
            if (P.pub_err <= 3)
                fprintf(stderr, "loadgen: publish answered %d: %.*s\n", status,
                        (int)(blen > 200 ? 200 : blen), body ? body : "");
        }
        if (close_after) {
            close_now = 1;
            break;
        }
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    if (close_now)
        pc_fail(c, "server asked to close");
}

static void pub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    pubconn_t *c = (pubconn_t *)w;
    if (revents & EV_WRITE)
        pc_flush(c);
    if (c->alive && (revents & EV_READ))
        pc_read(c);
    pump();
}

static void pub_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    uint64_t now = now_ns();
    if (P.phase == PH_PUBLISH) {
        for (int j = 0; j < O.pub_conns; j++) {
            pubconn_t *c = &P.pc[j];
            if (!c->alive && now - c->dead_since > 100000000ull) {
                P.pub_reconnects++;
                if (pc_connect(c) < 0)
                    c->dead_since = now;
            }
        }
    }
    pump();
}

/* ------------------------------------------------------------------ */
/* parent: phases                                                      */

static void send_cmd(int k, char cmd, int64_t arg, int64_t arg2)
{
    if (P.dead[k])
        return;
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.cmd = cmd;
    c.arg = arg;
    c.arg2 = arg2;
    if (write_all(P.cmd_fd[k], &c, sizeof c) < 0)
        P.dead[k] = 1;
}

static void finish_window(void)
{
    P.t_end = now_ns();
    P.cpu_end = cpu_self_s();
    sample_server(&P.s_end);
    if (O.mode == MODE_IDLE)
        P.s_loaded = P.s_end; /* idle: memory per connection after the idle period */
    ev_timer_stop(P.loop, &P.drain_timer);
    ev_timer_stop(P.loop, &P.pub_tick);
    P.phase = PH_FINAL;
    for (int k = 0; k < P.K; k++)
        send_cmd(k, 'S', O.mode == MODE_BROADCAST ? P.max_ok_n : -1, (int64_t)P.t_pub_end);
}

static void drain_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    uint64_t now = now_ns();
    uint64_t d = deliv_all();
    if (d != P.drain_last_deliv) {
        P.drain_last_deliv = d;
        P.drain_last_change = now;
    }
    int done = 0;
    if (O.mode == MODE_IDLE) {
        done = 1;
    } else if (P.inflight_http == 0) {
        int any;
        int64_t mn = min_n_all(&any);
        if (O.mode == MODE_BROADCAST && (!any || mn >= P.max_ok_n))
            done = 1;
        else if (O.mode == MODE_UNICAST && d >= P.recip_nonstalled_sum)
            done = 1;
        else if (now - P.drain_last_change > 1000000000ull)
            done = 1; /* quiet for 1 s: whatever is missing is not coming */
    }
    if (!done && now - P.t_pub_end > (uint64_t)(O.drain * 1e9)) {
        P.drain_timed_out = 1;
        done = 1;
    }
    if (done)
        finish_window();
}

static void dur_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    P.t_pub_end = now_ns();
    P.phase = PH_DRAIN;
    P.drain_last_deliv = deliv_all();
    P.drain_last_change = P.t_pub_end;
    ev_timer_init(&P.drain_timer, drain_cb, 0.01, 0.01);
    ev_timer_start(loop, &P.drain_timer);
}

static void report_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    if (O.quiet)
        return;
    uint64_t now = now_ns();
    if (P.phase == PH_CONNECT) {
        fprintf(stderr, "[%5.1fs] connecting: %d/%d workers ready\n",
                (double)(now - P.t_start) / 1e9, P.nready, P.K);
        return;
    }
    if (P.phase != PH_PUBLISH && P.phase != PH_DRAIN)
        return;
    uint64_t d = deliv_all(), cl = 0, open = 0;
    for (int k = 0; k < P.K; k++) {
        cl += P.prog[k].server_closes;
        open += P.prog[k].open_nonstalled;
    }
    double dt = (double)(now - P.last_rep_t) / 1e9;
    fprintf(stderr,
            "[%5.1fs] %s pub %" PRId64 " (%.0f/s, in flight %" PRIu64 ") deliv %" PRIu64
            " (%.0f/s) open %" PRIu64 " server-closes %" PRIu64 "\n",
            (double)(now - P.t_go) / 1e9, P.phase == PH_DRAIN ? "drain" : "run  ", P.n_sent,
            (double)((uint64_t)P.n_sent - P.last_rep_pub) / dt, P.inflight_http, d,
            (double)(d - P.last_rep_deliv) / dt, open, cl);
    P.last_rep_t = now;
    P.last_rep_deliv = d;
    P.last_rep_pub = (uint64_t)P.n_sent;
}

static void start_go(void)
{
    P.t_ready = now_ns();
    sample_server(&P.s_loaded);
    uint64_t welcomed = 0, failed = 0;
    for (int k = 0; k < P.K; k++) {
        welcomed += P.rdy[k].welcomed;
        failed += P.rdy[k].failed;
    }
    if (!O.quiet)
        fprintf(stderr, "connected %" PRIu64 "/%d in %.2f s, failed %" PRIu64 "\n", welcomed,
                O.conns, (double)(P.t_ready - P.t_start) / 1e9, failed);
    if (O.mode != MODE_IDLE) {
        for (int j = 0; j < O.pub_conns; j++) {
            if (pc_connect(&P.pc[j]) < 0)
                die("publisher cannot connect to %s:%d: %s", O.host, O.port, strerror(errno));
        }
    }
    P.cpu_go = cpu_self_s();
    sample_server(&P.s_go);
    P.t_go = now_ns();
    P.hist_from = P.t_go + (uint64_t)(O.warmup * 1e9);
    P.last_rep_t = P.t_go;
    for (int k = 0; k < P.K; k++)
        send_cmd(k, 'G', (int64_t)P.hist_from, 0);
    P.phase = PH_PUBLISH;
    ev_timer_init(&P.dur_timer, dur_cb, O.duration, 0);
    ev_timer_start(P.loop, &P.dur_timer);
    if (O.mode != MODE_IDLE) {
        ev_timer_init(&P.pub_tick, pub_tick, 0.001, 0.001);
        ev_timer_start(P.loop, &P.pub_tick);
        pump();
    }
}

static void all_final(void)
{
    P.phase = PH_DONE;
    for (int k = 0; k < P.K; k++)
        send_cmd(k, 'Q', 0, 0);
    ev_break(P.loop, EVBREAK_ALL);
}

static void worker_died(int k)
{
    if (P.dead[k])
        return;
    P.dead[k] = 1;
    ev_io_stop(P.loop, &P.res_io[k]);
    if (P.phase == PH_DONE || P.final[k])
        return;
    fprintf(stderr, "loadgen: worker %d exited early\n", k);
    for (int j = 0; j < P.K; j++)
        if (P.pid[j] > 0)
            kill(P.pid[j], SIGTERM);
    exit(1);
}

static void res_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    int k = (int)(w - P.res_io);
    if (P.rcap[k] - P.rlen[k] < 65536) {
        P.rcap[k] = P.rcap[k] * 2 + 65536;
        P.rbuf[k] = realloc(P.rbuf[k], P.rcap[k]);
        if (!P.rbuf[k])
            die("out of memory");
    }
    ssize_t n = read(w->fd, P.rbuf[k] + P.rlen[k], P.rcap[k] - P.rlen[k]);
    if (n <= 0) {
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        worker_died(k);
        return;
    }
    P.rlen[k] += (size_t)n;
    size_t off = 0;
    int progressed = 0;
    while (P.rlen[k] - off >= sizeof(mhdr_t)) {
        mhdr_t h;
        memcpy(&h, P.rbuf[k] + off, sizeof h);
        if (P.rlen[k] - off < sizeof h + h.len)
            break;
        const char *b = P.rbuf[k] + off + sizeof h;
        switch (h.type) {
        case M_READY:
            memcpy(&P.rdy[k], b, sizeof P.rdy[k]);
            if (!P.ready[k]) {
                P.ready[k] = 1;
                P.nready++;
            }
            break;
        case M_PROGRESS:
            memcpy(&P.prog[k], b, sizeof P.prog[k]);
            progressed = 1;
            break;
        case M_FINAL:
            memcpy(&P.fin[k], b, sizeof P.fin[k]);
            if (!P.final[k]) {
                P.final[k] = 1;
                P.nfinal++;
            }
            break;
        }
        off += sizeof h + h.len;
    }
    memmove(P.rbuf[k], P.rbuf[k] + off, P.rlen[k] - off);
    P.rlen[k] -= off;
    if (P.phase == PH_CONNECT && P.nready == P.K)
        start_go();
    else if (P.phase == PH_FINAL && P.nfinal == P.K)
        all_final();
    else if (progressed)
        pump();
}

/* ------------------------------------------------------------------ */
/* report                                                              */

static void report(void)
{
    wstats_t a;
    memset(&a, 0, sizeof a);
    double lg_max_pct = 0, lg_cpu = 0;
    double win = (double)(P.t_end - P.t_go) / 1e9;
    for (int k = 0; k < P.K; k++) {
        wstats_t *s = &P.fin[k];
#define ADD(f) a.f += s->f
        ADD(assigned); ADD(attempted); ADD(welcomed); ADD(failed); ADD(connect_fail);
        ADD(open_timeouts); ADD(no_welcome); ADD(http_fail); ADD(bad_accept); ADD(bad_http);
        ADD(server_closes); ADD(eof_closes); ADD(reset_closes); ADD(read_errors);
        ADD(closed_nonstalled); ADD(stalled); ADD(stalled_closed); ADD(stalled_closed_4001); ADD(stalled_eof); ADD(stalled_reset);
        ADD(deliveries); ADD(deliveries_hist); ADD(stalled_deliveries); ADD(gaps); ADD(reorders);
        ADD(unparsed); ADD(welcome); ADD(subscribed); ADD(error_frames); ADD(other_text);
        ADD(continuation); ADD(binary); ADD(pings); ADD(pongs_rx); ADD(proto_err); ADD(masked);
        ADD(big_frames); ADD(bytes_in); ADD(reads); ADD(text_frames); ADD(text_wire_bytes);
        ADD(compressed); ADD(inflate_err); ADD(open_end); ADD(open_nonstalled_end);
        ADD(behind_conns); ADD(behind_msgs); ADD(deliveries_window);
        ADD(ack_conns); ADD(acks_sent); ADD(dups); ADD(untracked_channels);
#undef ADD
        kv_merge(&a.conn_errno, &s->conn_errno);
        kv_merge(&a.http_status, &s->http_status);
        kv_merge(&a.close_codes, &s->close_codes);
        h_merge(&a.lat, &s->lat);
        h_merge(&a.qdelay, &s->qdelay);
        if (s->first_deliv_ns && (!a.first_deliv_ns || s->first_deliv_ns < a.first_deliv_ns))
            a.first_deliv_ns = s->first_deliv_ns;
        if (s->last_deliv_ns > a.last_deliv_ns)
            a.last_deliv_ns = s->last_deliv_ns;
        double pct = win > 0 ? s->cpu_win_s / win * 100 : 0;
        if (pct > lg_max_pct)
            lg_max_pct = pct;
        lg_cpu += s->cpu_win_s;
    }
    double parent_cpu = P.cpu_end - P.cpu_go;
    double ppct = win > 0 ? parent_cpu / win * 100 : 0;
    if (ppct > lg_max_pct)
        lg_max_pct = ppct;
    lg_cpu += parent_cpu;
    double lg_pct = win > 0 ? lg_cpu / win * 100 : 0;

    double pub_win = (double)(P.t_pub_end - P.t_go) / 1e9;
    double pub_per_s = pub_win > 0 ? (double)P.pub_ok / pub_win : 0;
    /* deliveries/s: frames received while publishing went on (after the warm-up),
     * counted by receive time in BUCKET_NS buckets, over that window */
    uint64_t whole = P.t_pub_end > P.hist_from ? (P.t_pub_end - P.hist_from) / BUCKET_NS : 0;
    double dwin = (double)(whole * BUCKET_NS) / 1e9;
    double dps = dwin > 0 ? (double)a.deliveries_window / dwin : 0;

    double us = 1e3;
    double p50 = (double)h_pct(&a.lat, 0.50) / us, p90 = (double)h_pct(&a.lat, 0.90) / us;
    double p99 = (double)h_pct(&a.lat, 0.99) / us, p999 = (double)h_pct(&a.lat, 0.999) / us;
    double pmax = (double)a.lat.max / us;
    double pmean = a.lat.n ? a.lat.sum / (double)a.lat.n / us : 0;

    long pkb = sysconf(_SC_PAGESIZE) / 1024;
    int srv = O.server_pid && P.s_base.ok && P.s_loaded.ok && P.s_end.ok;
    int srv_gone = O.server_pid && !P.s_end.ok;
    double rss_per_conn = (srv && a.welcomed)
        ? (double)(P.s_loaded.rss_kb - P.s_base.rss_kb) * 1024.0 / (double)a.welcomed : 0;
    double srv_cpu = srv ? P.s_end.cpu_s - P.s_go.cpu_s : 0;
    double srv_pct = win > 0 ? srv_cpu / win * 100 : 0;
    double srv_cpu_per_m = (srv && a.deliveries > 0) ? srv_cpu / ((double)a.deliveries / 1e6) : 0;
    double connect_s = (double)(P.t_ready - P.t_start) / 1e9;
    double hs_per_s = connect_s > 0 ? (double)a.welcomed / connect_s : 0;
    int ksock_ok = P.s_base.sock_slab_kb >= 0 && P.s_loaded.sock_slab_kb >= 0 && a.welcomed > 0;
    double ksock_per_conn = ksock_ok ? (double)(P.s_loaded.sock_slab_kb - P.s_base.sock_slab_kb) * 1024.0 / (double)a.welcomed : 0;
    double tcpbuf_per_conn = a.welcomed ? (double)(P.s_loaded.tcp_mem_pages - P.s_base.tcp_mem_pages) * (double)pkb * 1024.0 / (double)a.welcomed : 0;

    const char *bottleneck = "none";
    if (srv && srv_pct >= 90)
        bottleneck = "server";
    if (lg_max_pct >= 85)
        bottleneck = srv && srv_pct >= 90 ? "both" : "loadgen";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* CPU used by everything else on the machine during the window */
    double other_pct = win > 0 ? (P.s_end.machine_busy_s - P.s_go.machine_busy_s - srv_cpu - lg_cpu) / win * 100 : 0;
    if (other_pct < 0)
        other_pct = 0;
    double steal_pct = win > 0 ? (P.s_end.machine_steal_s - P.s_go.machine_steal_s) / win * 100 : 0;
    double irq_pct = win > 0 ? (P.s_end.machine_irq_s - P.s_go.machine_irq_s) / win * 100 : 0;
    if (strcmp(bottleneck, "none") == 0 && srv && (srv_pct + lg_pct + irq_pct + other_pct) >= 90.0 * (double)ncpu)
        bottleneck = "machine";

    char errs[512], https[512], closes[512], pubst[256];
    kv_fmt(&a.conn_errno, errs, sizeof errs, 1);
    kv_fmt(&a.http_status, https, sizeof https, 0);
    kv_fmt(&a.close_codes, closes, sizeof closes, 0);
    kv_fmt(&P.pub_status, pubst, sizeof pubst, 0);

    printf("\n== moonpush loadgen %s%s%s ==\n", mode_name[O.mode], O.label[0] ? " / " : "", O.label);
    printf("setup     conns=%d procs=%d src_addrs=%d size=%dB rate=%s duration=%.1fs warmup=%.1fs stall=%.1f%% users=%d\n",
           O.conns, P.K, O.src_addrs, O.size, O.mode == MODE_IDLE ? "-" : O.rate > 0 ? "fixed" : "max", O.duration, O.warmup,
           O.stall_pct, O.users);
    if (O.rate > 0)
        printf("          target rate %.1f msg/s\n", O.rate);
    printf("connect   %" PRIu64 "/%" PRIu64 " welcomed in %.2f s (%.0f/s); failed %" PRIu64
           " [connect %" PRIu64 ", timeout %" PRIu64 ", no-welcome %" PRIu64 ", http %" PRIu64
           " %s, bad-accept %" PRIu64 ", bad-http %" PRIu64 "] errno %s\n",
           a.welcomed, a.assigned, (double)(P.t_ready - P.t_start) / 1e9,
           (double)a.welcomed / ((double)(P.t_ready - P.t_start) / 1e9 + 1e-9), a.failed,
           a.connect_fail, a.open_timeouts, a.no_welcome, a.http_fail, https, a.bad_accept,
           a.bad_http, errs);
    if (O.mode != MODE_IDLE) {
        printf("publish   %" PRIu64 " ok in %.2f s = %.1f msg/s; errors %" PRIu64 " %s, lost %" PRIu64
               ", reconnects %" PRIu64 ", bad responses %" PRIu64 "; rtt p50 %.0f us p99 %.0f us max %.0f us\n",
               P.pub_ok, pub_win, pub_per_s, P.pub_err, pubst, P.pub_lost, P.pub_reconnects,
               P.pub_bad_resp, (double)h_pct(&P.pub_rtt, 0.5) / us, (double)h_pct(&P.pub_rtt, 0.99) / us,
               (double)P.pub_rtt.max / us);
        if (O.rate > 0)
            printf("          schedule lag p50 %.0f us, p99 %.0f us, max %.0f us%s\n",
                   (double)h_pct(&P.sched_lag, 0.5) / us, (double)h_pct(&P.sched_lag, 0.99) / us,
                   (double)P.sched_lag.max / us,
                   (double)h_pct(&P.sched_lag, 0.99) > fmax(10e6, 1e9 / O.rate) ? "  WARNING: target rate not held" : "");
        printf("          recipients reported by server %" PRIu64 " (non-stalled estimate %" PRIu64 ")\n",
               P.recip_sum, P.recip_nonstalled_sum);
        printf("deliver   %" PRIu64 " frames (%" PRIu64 " measured, %" PRIu64 " received in the %.2f s window) = %.0f/s; gaps %" PRIu64
               ", reorders %" PRIu64 ", unparsed %" PRIu64 ", behind at end %" PRIu64 " conns / %" PRIu64
               " msgs%s\n",
               a.deliveries, a.deliveries_hist, a.deliveries_window, dwin, dps, a.gaps, a.reorders, a.unparsed, a.behind_conns,
               a.behind_msgs, P.drain_timed_out ? " (drain timed out)" : "");
        if (a.ack_conns || a.dups)
            printf("acks      %" PRIu64 " connections on an ack route; %" PRIu64 " acks sent (--ack-every %d%s);"
                   " %" PRIu64 " duplicate frames (resends of a seq already received; not counted as deliveries)\n",
                   a.ack_conns, a.acks_sent, O.ack_every, O.ack_every == 0 ? " = never" : "", a.dups);
        if (a.untracked_channels)
            printf("          %" PRIu64 " message frames on channels past %d per connection: seq not checked\n",
                   a.untracked_channels, CH_MAX);
        printf("latency   publish->deliver p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us, mean %.0f us\n",
               p50, p90, p99, p999, pmax, pmean);
        printf("          of which generator read-queue delay (poll return -> our recv) p50 %.0f us, p99 %.0f us, mean %.0f us\n",
               (double)h_pct(&a.qdelay, 0.5) / us, (double)h_pct(&a.qdelay, 0.99) / us,
               a.qdelay.n ? a.qdelay.sum / (double)a.qdelay.n / us : 0);
    }
    printf("frames    welcome %" PRIu64 ", subscribed %" PRIu64 ", error %" PRIu64 ", other %" PRIu64
           ", binary %" PRIu64 ", continuation %" PRIu64 ", pings %" PRIu64 ", protocol errors %" PRIu64
           ", masked %" PRIu64 ", bytes in %.1f MB in %" PRIu64 " reads\n",
           a.welcome, a.subscribed, a.error_frames, a.other_text, a.binary, a.continuation, a.pings,
           a.proto_err, a.masked, (double)a.bytes_in / 1e6, a.reads);
    if (O.deflate || a.compressed)
        printf("deflate   %" PRIu64 " of %" PRIu64 " text frames compressed (RSV1), %" PRIu64 " did not inflate;"
               " %.0f wire bytes per text frame\n", a.compressed, a.text_frames, a.inflate_err,
               a.text_frames ? (double)a.text_wire_bytes / (double)a.text_frames : 0.0);
    printf("closes    by server %" PRIu64 " codes %s; eof without close %" PRIu64 ", reset %" PRIu64
           ", read errors %" PRIu64 "; non-stalled closed %" PRIu64 "; open at end %" PRIu64 "\n",
           a.server_closes, closes, a.eof_closes, a.reset_closes, a.read_errors, a.closed_nonstalled,
           a.open_end);
    if (a.stalled)
        printf("stalled   %" PRIu64 " conns; closed %" PRIu64 " (close frame 4001: %" PRIu64 ", eof without close frame: %" PRIu64
               ", reset: %" PRIu64 "); frames read when they resumed reading at the end %" PRIu64 "\n",
               a.stalled, a.stalled_closed, a.stalled_closed_4001, a.stalled_eof, a.stalled_reset,
               a.stalled_deliveries);
    if (srv) {
        printf("server    %d process(es), pid %d%s RSS base %ld kB, loaded %ld kB, end %ld kB -> %.0f B/conn; cpu %.2f s in %.2f s (%.0f%%)",
               O.nserver_pids, O.server_pid, O.nserver_pids > 1 ? ",..; summed:" : "", P.s_base.rss_kb, P.s_loaded.rss_kb, P.s_end.rss_kb, rss_per_conn, srv_cpu,
               win, srv_pct);
        if (a.deliveries)
            printf(" = %.2f cpu-s per M deliveries", srv_cpu_per_m);
        printf("\n");
    } else if (srv_gone) {
        printf("server    pid %d EXITED during the run (RSS base %ld kB, loaded %ld kB)\n", O.server_pid,
               P.s_base.rss_kb, P.s_loaded.rss_kb);
    }
    printf("kernel    TCP mem (all sockets, /proc/net/sockstat; coarse, per-cpu batched) base %ld kB, loaded %ld kB, end %ld kB;"
           " sockets inuse %ld, time-wait %ld\n",
           P.s_base.tcp_mem_pages * pkb, P.s_loaded.tcp_mem_pages * pkb, P.s_end.tcp_mem_pages * pkb,
           P.s_loaded.tcp_inuse, P.s_end.tcp_tw);
    if (ksock_ok)
        printf("          socket objects (/proc/slabinfo: TCP, sock_inode_cache, filp, dentry, eventpoll_epi; whole machine)"
               " +%ld kB when loaded = %.0f B per connection, both ends (client and server socket) on this machine;"
               " buffers (sockstat mem) %.0f B per connection\n",
               P.s_loaded.sock_slab_kb - P.s_base.sock_slab_kb, ksock_per_conn, tcpbuf_per_conn);
    printf("loadgen   cpu %.2f s in %.2f s (%.0f%% total over %d procs + parent, busiest %.0f%%)\n",
           lg_cpu, win, lg_pct, P.K, lg_max_pct);
    printf("machine   %ld cpus; during the window: softirq/irq (kernel network work, in no process) %.0f%%,"
           " other processes %.0f%%, hypervisor steal %.0f%% (of one cpu)\n",
           ncpu, irq_pct, other_pct, steal_pct);
    if (other_pct >= 15)
        printf("WARNING   other processes used %.0f%% of a cpu during the run: figures are disturbed\n", other_pct);
    if (steal_pct >= 10)
        printf("WARNING   the hypervisor took %.0f%% of a cpu from this VM during the run: figures are disturbed\n", steal_pct);
    if (lg_max_pct >= 85)
        printf("WARNING   a loadgen process was >= 85%% busy: figures may measure the generator, not the server\n");
    if (srv && srv_pct >= 90)
        printf("NOTE      server was >= 90%% of one core: it is the bottleneck\n");
    printf("RESULT label=%s mode=%s conns=%d procs=%d size=%d rate=%.0f duration_s=%.1f stall_pct=%.1f users=%d"
           " welcomed=%" PRIu64 " failed=%" PRIu64 " connect_s=%.2f pub_ok=%" PRIu64 " pub_per_s=%.1f pub_errors=%" PRIu64
           " deliveries=%" PRIu64 " deliveries_per_s=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f"
           " gaps=%" PRIu64 " reorders=%" PRIu64 " behind_msgs=%" PRIu64 " server_closes=%" PRIu64 " close_codes=%s"
           " eof_closes=%" PRIu64 " stalled=%" PRIu64 " stalled_closed=%" PRIu64 " stalled_closed_4001=%" PRIu64
           " rss_base_kb=%ld rss_loaded_kb=%ld rss_end_kb=%ld rss_per_conn_bytes=%.0f tcp_mem_kb_loaded=%ld tcp_mem_kb_end=%ld"
           " srv_cpu_s=%.2f srv_cpu_pct=%.0f srv_cpu_s_per_M=%.2f lg_cpu_pct=%.0f lg_max_proc_pct=%.0f bottleneck=%s"
           " sched_lag_p99_us=%.0f pub_rtt_p99_us=%.0f lg_qdelay_p50_us=%.0f lg_qdelay_p99_us=%.0f server_exited=%d"
           " other_cpu_pct=%.0f steal_pct=%.0f softirq_pct=%.0f path=%s pub_path=%s ack_conns=%" PRIu64
           " ack_every=%d acks=%" PRIu64 " dups=%" PRIu64
           " servers=%d handshakes_per_s=%.0f ksock_slab_kb_delta=%ld ksock_bytes_per_conn=%.0f tcp_buf_bytes_per_conn=%.0f"
           " text_frames=%" PRIu64 " wire_bytes_per_text_frame=%.0f compressed_frames=%" PRIu64 " inflate_errors=%" PRIu64 "\n",
           O.label[0] ? O.label : "-", mode_name[O.mode], O.conns, P.K, O.size, O.rate, O.duration,
           O.stall_pct, O.users, a.welcomed, a.failed, (double)(P.t_ready - P.t_start) / 1e9, P.pub_ok,
           pub_per_s, P.pub_err + P.pub_lost, a.deliveries, dps, p50, p90, p99, p999, pmax, a.gaps,
           a.reorders, a.behind_msgs, a.server_closes, closes, a.eof_closes, a.stalled, a.stalled_closed,
           a.stalled_closed_4001, P.s_base.rss_kb, P.s_loaded.rss_kb, P.s_end.rss_kb, rss_per_conn,
           P.s_loaded.tcp_mem_pages * pkb, P.s_end.tcp_mem_pages * pkb,
           srv_cpu, srv_pct, srv_cpu_per_m, lg_pct, lg_max_pct, bottleneck,
           (double)h_pct(&P.sched_lag, 0.99) / us, (double)h_pct(&P.pub_rtt, 0.99) / us,
           (double)h_pct(&a.qdelay, 0.5) / us, (double)h_pct(&a.qdelay, 0.99) / us, srv_gone,
           other_pct, steal_pct, irq_pct, O.path, O.pub_path, a.ack_conns, O.ack_every, a.acks_sent, a.dups,
           O.nports, hs_per_s, ksock_ok ? P.s_loaded.sock_slab_kb - P.s_base.sock_slab_kb : -1L, ksock_per_conn,
           tcpbuf_per_conn, a.text_frames, a.text_frames ? (double)a.text_wire_bytes / (double)a.text_frames : 0.0,
           a.compressed, a.inflate_err);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* utilities: --free-port, --wait-health                               */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        die("free-port: %s", strerror(errno));
    close(fd);
    printf("%d\n", ntohs(a.sin_port));
    return 0;
}

static int wait_health(double secs)
{
    uint64_t until = now_ns() + (uint64_t)(secs * 1e9);
    do {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
        inet_pton(AF_INET, O.host, &a.sin_addr);
        struct timeval tv = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            char req[256], buf[512];
            int l = snprintf(req, sizeof req, "GET /health HTTP/1.1\r\nHost: %s:%d\r\n\r\n", O.host, O.port);
            if (write_all(fd, req, (size_t)l) == 0) {
                ssize_t n = read(fd, buf, sizeof buf - 1);
                if (n > 12 && memcmp(buf + 9, "200", 3) == 0) {
                    close(fd);
                    return 0;
                }
            }
        }
        close(fd);
        usleep(100000);
    } while (now_ns() < until);
    fprintf(stderr, "loadgen: %s:%d/health not answering 200 after %.0f s\n", O.host, O.port, secs);
    return 1;
}

/* ------------------------------------------------------------------ */
/* main                                                                */

/* ------------------------------------------------------------------ */
/* --self-test: the frame reader against a crafted server stream, fed  */
/* through the real read path over a socketpair in chunks of 1..all    */

static size_t st_frame(uint8_t *o, int b0, const char *payload, size_t len)
{
    size_t h = 0;
    o[h++] = (uint8_t)b0;
    if (len < 126) {
        o[h++] = (uint8_t)len;
    } else if (len < 65536) {
        o[h++] = 126;
        o[h++] = (uint8_t)(len >> 8);
        o[h++] = (uint8_t)len;
    } else {
        o[h++] = 127;
        for (int i = 7; i >= 0; i--)
            o[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(o + h, payload, len);
    return h + len;
}

static size_t st_msg(uint8_t *o, int seq, size_t pad)
{
    static char buf[200000];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\":\"message\",\"channel\":\"bench\",\"seq\":%d,\"id\":\"x-%d\","
                     "\"data\":{\"t\":%" PRIu64 ",\"n\":%d,\"pad\":\"", seq, seq, now_ns(), seq);
    memset(buf + n, 'x', pad);
    memcpy(buf + n + pad, "\"}}", 3);
    return st_frame(o, 0x81, buf, (size_t)n + pad + 3);
}

/* Acks: a welcome with "acks":true, messages 1..5 on user:u1 whose data keys
 * come in lua-cjson's order with t as a float, then resends of 4 and 5.
 * With --ack-every 2 the acks read back must be 2, 4, then 5 (the resend of 4
 * finds 5 unacked); the resends count as dups, not deliveries. */
/* A worker W holding one open connection c on sv[0], as if handshaken;
 * then stream is written to sv[1] in chunks of `chunk` bytes, each read
 * through the real read path. */
static void st_feed(wconn_t *c, int sv[2], const uint8_t *stream, size_t len, size_t chunk)
{
    memset(&W, 0, sizeof W);
    W.loop = ev_loop_new(EVFLAG_AUTO);
    W.rbuf = malloc(RBUF_SZ);
    W.hist_from = 1;
    W.count = 1;
    W.next = 1;        /* nothing left to open */
    W.ready_sent = 1;  /* no parent pipe here */
    W.inflight = 1;
    W.res_fd = -1;
    memset(c, 0, sizeof *c);
    ev_io_init(&c->io, conn_cb, sv[0], EV_READ);
    c->state = CS_OPEN;
    W.c = c;
    for (size_t off = 0; off < len && c->state == CS_OPEN;) {
        size_t k = len - off < chunk ? len - off : chunk;
        if (write_all(sv[1], stream + off, k) < 0)
            die("write: %s", strerror(errno));
        off += k;
        conn_read(c);
    }
}

static void st_done(int sv[2])
{
    close(sv[1]);
    free(W.rbuf);
    ev_loop_destroy(W.loop);
}

static int self_test_acks(void)
{
    static uint8_t stream[8192];
    static char buf[512];
    size_t len = 0;
    const char *welcome = "{\"type\":\"welcome\",\"conn\":\"7\",\"user\":\"u1\",\"device\":\"d1\","
                          "\"kind\":\"bench\",\"channels\":[\"user:u1\"],\"epochs\":{\"user:u1\":\"\"},\"acks\":true}";
    len += st_frame(stream + len, 0x81, welcome, strlen(welcome));
    uint64_t t0 = now_ns();
    int seqs[] = {1, 2, 3, 4, 5, 4, 5};
    for (int i = 0; i < 7; i++) {
        int n = snprintf(buf, sizeof buf,
                         "{\"type\":\"message\",\"channel\":\"user:u1\",\"seq\":%d,\"id\":\"x-%d\","
                         "\"data\":{\"pad\":\"xxxx\",\"n\":%d,\"t\":%.13e}}", seqs[i], seqs[i], seqs[i], (double)t0);
        len += st_frame(stream + len, 0x81, buf, (size_t)n);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair: %s", strerror(errno));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    int save_every = O.ack_every;
    O.ack_every = 2;
    wconn_t c;
    st_feed(&c, sv, stream, len, 37);
    /* read the client's masked ack frames back */
    uint8_t back[2048];
    ssize_t bn = read(sv[1], back, sizeof back);
    char got[256] = "";
    size_t gl = 0;
    for (ssize_t off = 0; bn > 0 && off + 6 <= bn;) {
        size_t pl = back[off + 1] & 0x7f;
        if ((back[off + 1] & 0x80) == 0 || pl > 125 || off + 6 + (ssize_t)pl > bn)
            break;
        char pay[128];
        for (size_t i = 0; i < pl; i++)
            pay[i] = (char)(back[off + 6 + i] ^ back[off + 2 + (i & 3)]);
        pay[pl] = 0;
        const char *q = strstr(pay, "\"seq\":");
        if (back[off] == 0x81 && strstr(pay, "\"type\":\"ack\",\"channel\":\"user:u1\"") && q)
            gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%s", gl ? "," : "", q + 6);
        off += 6 + (ssize_t)pl;
    }
    for (size_t i = 0; i < gl; i++)
        if (got[i] == '}')
            memmove(got + i, got + i + 1, gl - i), gl--;
    int ok = W.st.ack_conns == 1 && W.st.deliveries == 5 && W.st.deliveries_hist == 5 &&
             W.st.unparsed == 0 && W.st.dups == 2 && W.st.gaps == 0 && W.st.reorders == 0 &&
             W.st.acks_sent == 3 && strcmp(got, "2,4,5") == 0 && c.last_n == 5 && W.st.lat.n == 5 &&
             W.st.lat.max < 60000000000ull;
    printf("self-test acks: %s (ack conns %" PRIu64 " deliveries %" PRIu64 " dups %" PRIu64 " acks sent %" PRIu64
           " acks read back [%s])\n", ok ? "ok" : "FAIL", W.st.ack_conns, W.st.deliveries, W.st.dups,
           W.st.acks_sent, got);
    O.ack_every = save_every;
    conn_close(&c);
    st_done(sv);
    return ok ? 0 : 1;
}

static int self_test(void)
{
    static uint8_t stream[400000];
    size_t len = 0;
    const char *welcome = "{\"type\":\"welcome\",\"conn\":1,\"user\":\"bench\",\"device\":\"d0\","
                          "\"kind\":\"bench\",\"channels\":[\"user:bench\",\"bench\"]}";
    len += st_frame(stream + len, 0x81, welcome, strlen(welcome));
    len += st_msg(stream + len, 1, 10);      /* 7-bit length */
    len += st_msg(stream + len, 2, 300);     /* 16-bit length */
    len += st_frame(stream + len, 0x89, "hi", 2);
    len += st_msg(stream + len, 3, 70000);   /* 64-bit length, larger than KEEP_MAX */
    len += st_msg(stream + len, 4, 30000);   /* 16-bit, buffered whole */
    len += st_msg(stream + len, 6, 5);       /* a gap of one */
    len += st_frame(stream + len, 0x81, "{\"type\":\"error\",\"code\":\"bad_frame\"}", 36);
    len += st_frame(stream + len, 0x88, "\x0f\xa1slow consumer", 15); /* 4001 */
    size_t splits[] = {1, 2, 3, 7, 100, 4096, 65536, sizeof stream};
    int fails = 0;
    O.quiet = 1;
    for (size_t si = 0; si < sizeof splits / sizeof splits[0]; si++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
            die("socketpair: %s", strerror(errno));
        int big = 1 << 20;
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        fcntl(sv[0], F_SETFL, O_NONBLOCK);
        wconn_t c;
        st_feed(&c, sv, stream, len, splits[si]);
        uint8_t back[64];
        ssize_t bn = read(sv[1], back, sizeof back);
        uint8_t pong[2] = {0}, code[2] = {0};
        int frames_ok = 0;
        if (bn == 8 + 8) { /* masked pong "hi" (2+4+2) then masked close 4001 (2+4+2) */
            for (int i = 0; i < 2; i++) {
                pong[i] = back[6 + i] ^ back[2 + i];
                code[i] = back[14 + i] ^ back[10 + i];
            }
            frames_ok = back[0] == 0x8A && back[1] == 0x82 && back[8] == 0x88 && back[9] == 0x82 &&
                        memcmp(pong, "hi", 2) == 0 && code[0] == 0x0f && code[1] == 0xa1;
        }
        int ok = W.st.welcome == 1 && W.st.deliveries == 5 && W.st.deliveries_hist == 5 &&
                 W.st.unparsed == 0 && W.st.gaps == 1 && W.st.reorders == 0 && W.st.pings == 1 &&
                 W.st.error_frames == 1 && W.st.server_closes == 1 &&
                 kv_get(&W.st.close_codes, 4001) == 1 && W.st.big_frames <= 1 && W.st.proto_err == 0 &&
                 c.state == CS_CLOSED && frames_ok;
        printf("self-test split %6zu: %s (welcome %" PRIu64 " deliveries %" PRIu64 " gaps %" PRIu64
               " pings %" PRIu64 " closes %" PRIu64 " big %" PRIu64 " reply bytes %zd)\n",
               splits[si], ok ? "ok  " : "FAIL", W.st.welcome, W.st.deliveries, W.st.gaps, W.st.pings,
               W.st.server_closes, W.st.big_frames, bn);
        fails += !ok;
        st_done(sv);
    }
    /* histogram round trip */
    hist_t h;
    memset(&h, 0, sizeof h);
    for (uint64_t v = 1; v <= 1000000; v++)
        h_add(&h, v * 1000);
    double p50 = (double)h_pct(&h, 0.5), p99 = (double)h_pct(&h, 0.99);
    int hok = fabs(p50 - 5e8) / 5e8 < 0.02 && fabs(p99 - 9.9e8) / 9.9e8 < 0.02 && h.max == 1000000000ull;
    printf("self-test histogram: %s (p50 %.0f, p99 %.0f)\n", hok ? "ok" : "FAIL", p50, p99);
    fails += !hok;
    fails += self_test_acks();
    printf("self-test: %s\n", fails ? "FAILED" : "passed");
    return fails ? 1 : 0;
}

static long arg_int(const char *name, const char *v)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end)
        die("--%s wants an integer, got \"%s\"", name, v);
    return x;
}

static double arg_num(const char *name, const char *v)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x))
        die("--%s wants a number, got \"%s\"", name, v);
    return x;
}

/* "A,B,C" -> out[], at most MAX_PORTS positive integers. Returns the count. */
static int int_list(const char *what, const char *text, int *out)
{
    int n = 0;
    for (const char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > 0x7fffffff || (*end && *end != ',') || n == MAX_PORTS)
            die("--%s wants a comma list of at most %d positive integers (got %s)", what, MAX_PORTS, text);
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        die("--%s is empty", what);
    return n;
}

static void usage(void)
{
    fprintf(stderr,
"usage: loadgen [options]\n"
"  --mode idle|broadcast|unicast   scenario (broadcast)\n"
"  --conns N          WebSocket connections (100)\n"
"  --procs K          worker processes holding the connections (0 = as the fd limit needs)\n"
"  --duration S       measured seconds (10)       --warmup S   seconds not in the histogram (0)\n"
"  --size B           bytes of each message's data JSON (100)\n"
"  --json             data is a realistic JSON order of about --size bytes, not an 'x' pad\n"
"  --deflate          offer permessage-deflate; inflate compressed (RSV1) frames\n"
"  --rate R           messages/s, 0 = max the subscribers keep up with (0)\n"
"  --stall PCT        percent of connections that stop reading after the welcome (0)\n"
"  --users U          unicast: users u0..u<U-1>; connection i is user u<i%%U> (default conns)\n"
"  --host H --port P  server (127.0.0.1:8080)   --path /ws  --pub-path /publish\n"
"  --token T          device token (bench); unicast uses T-u<k>\n"
"  --pub-token T      publisher bearer token (publisher-secret)   --channel C (bench)\n"
"  --pub-conns P      publisher keep-alive connections (4)   --window W  pipelined requests per conn (16)\n"
"  --open-inflight N  handshakes in flight (500)   --open-timeout S (15)   --src-addrs X (auto)\n"
"  --max-lag M        max rate, broadcast: messages the slowest subscriber may lag (4)\n"
"  --max-outstanding F  max rate, unicast: frames published but not delivered (10000)\n"
"  --drain S          max wait for deliveries after publishing (15)\n"
"  --stall-rcvbuf B   SO_RCVBUF of stalled connections (4096)\n"
"  --stall-drain S    at the end, stalled connections read again until closed or quiet for 1 s, at most S (15)\n"
"  --ack-every N      on an ack route (welcome \"acks\":true): ack every N messages per channel,\n"
"                     cumulatively (the highest seq); 0 = never ack (1)\n"
"  --ack-flush S      with --ack-every > 1: every S seconds ack what waits below N (1.0; 0 = off)\n"
"  --ports P1,P2,..   several independent servers (idle mode): connection i goes to port i %% n\n"
"  --server-pid PID[,PID..]  sample the server(s)' RSS/CPU from /proc (summed over the list)\n"
"  --label NAME       name in the RESULT line   --quiet\n"
"  --tls-port P       device connections over TLS to port P (publisher stays on --port)\n"
"  --free-port        print a free 127.0.0.1 port and exit\n"
"  --wait-health S    wait until GET /health answers 200 (exit 1 after S seconds)\n"
"  --self-test        check the frame reader and histogram offline, exit 0 if they pass\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static struct option lo[] = {
        {"mode", 1, 0, 'm'}, {"conns", 1, 0, 'n'}, {"procs", 1, 0, 'k'}, {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'W'}, {"size", 1, 0, 's'}, {"rate", 1, 0, 'r'}, {"stall", 1, 0, 'S'},
        {"users", 1, 0, 'u'}, {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"path", 1, 0, 1},
        {"pub-path", 1, 0, 2}, {"token", 1, 0, 3}, {"pub-token", 1, 0, 4}, {"channel", 1, 0, 5},
        {"pub-conns", 1, 0, 6}, {"window", 1, 0, 7}, {"open-inflight", 1, 0, 8},
        {"open-timeout", 1, 0, 9}, {"src-addrs", 1, 0, 10}, {"max-lag", 1, 0, 11},
        {"max-outstanding", 1, 0, 12}, {"drain", 1, 0, 13}, {"stall-rcvbuf", 1, 0, 14},
        {"stall-drain", 1, 0, 15}, {"server-pid", 1, 0, 16}, {"label", 1, 0, 17},
        {"quiet", 0, 0, 'q'}, {"free-port", 0, 0, 18}, {"wait-health", 1, 0, 19},
        {"self-test", 0, 0, 20}, {"ack-every", 1, 0, 21}, {"ack-flush", 1, 0, 22}, {"ports", 1, 0, 23},
        {"tls-port", 1, 0, 26}, {"deflate", 0, 0, 24}, {"json", 0, 0, 25}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    double wait_s = -1;
    int want_free_port = 0;
    while ((o = getopt_long(argc, argv, "m:n:k:d:s:r:S:u:H:p:qh", lo, NULL)) != -1) {
        if (optarg && optarg[0] == '-' && optarg[1] == '-')
            die("option value \"%s\" looks like an option (missing value?)", optarg);
        switch (o) {
        case 'm':
            if (!strcmp(optarg, "idle")) O.mode = MODE_IDLE;
            else if (!strcmp(optarg, "broadcast")) O.mode = MODE_BROADCAST;
            else if (!strcmp(optarg, "unicast")) O.mode = MODE_UNICAST;
            else die("unknown mode %s", optarg);
            break;
        case 'n': O.conns = (int)arg_int("conns", optarg); break;
        case 'k': O.procs = (int)arg_int("procs", optarg); break;
        case 'd': O.duration = arg_num("duration", optarg); break;
        case 'W': O.warmup = arg_num("warmup", optarg); break;
        case 's': O.size = (int)arg_int("size", optarg); break;
        case 'r': O.rate = arg_num("rate", optarg); break;
        case 'S': O.stall_pct = arg_num("stall_pct", optarg); break;
        case 'u': O.users = (int)arg_int("users", optarg); break;
        case 'H': O.host = optarg; break;
        case 'p': O.port = (int)arg_int("port", optarg); break;
        case 1: O.path = optarg; break;
        case 2: O.pub_path = optarg; break;
        case 3: O.token = optarg; break;
        case 4: O.pub_token = optarg; break;
        case 5: O.channel = optarg; break;
        case 6: O.pub_conns = (int)arg_int("pub_conns", optarg); break;
        case 7: O.window = (int)arg_int("window", optarg); break;
        case 8: O.open_inflight = (int)arg_int("open_inflight", optarg); break;
        case 9: O.open_timeout = arg_num("open_timeout", optarg); break;
        case 10: O.src_addrs = (int)arg_int("src_addrs", optarg); break;
        case 11: O.max_lag = (int)arg_int("max_lag", optarg); break;
        case 12: O.max_outstanding = (int)arg_int("max_outstanding", optarg); break;
        case 13: O.drain = arg_num("drain", optarg); break;
        case 14: O.stall_rcvbuf = (int)arg_int("stall_rcvbuf", optarg); break;
        case 15: O.stall_drain = arg_num("stall_drain", optarg); break;
        case 16: O.nserver_pids = int_list("server-pid", optarg, O.server_pids); break;
        case 17: O.label = optarg; break;
        case 'q': O.quiet = 1; break;
        case 18: want_free_port = 1; break;
        case 19: wait_s = arg_num("wait-health", optarg); break;
        case 20: return self_test();
        case 21: O.ack_every = (int)arg_int("ack-every", optarg); break;
        case 22: O.ack_flush = arg_num("ack-flush", optarg); break;
        case 26: O.tls_port = (int)arg_int("tls-port", optarg); break;
        case 23: O.nports = int_list("ports", optarg, O.ports); break;
        case 24: O.deflate = 1; break;
        case 25: O.json = 1; break;
        default: usage();
        }
    }
    if (optind < argc)
        die("unexpected argument \"%s\"", argv[optind]);
    if (O.nports == 0) {
        O.ports[0] = O.port;
        O.nports = 1;
    }
    O.port = O.ports[0];   /* --wait-health, the publisher: the first server */
    O.server_pid = O.nserver_pids ? O.server_pids[0] : 0;
    if (O.nports > 1 && O.mode != MODE_IDLE)
        die("--ports with several ports is for --mode idle: the servers are independent nodes and the"
            " publisher talks to one");
    if (want_free_port)
        return free_port();
    if (wait_s >= 0)
        return wait_health(wait_s);

    struct in_addr tmp;
    if (inet_pton(AF_INET, O.host, &tmp) != 1 || (ntohl(tmp.s_addr) >> 24) != 127)
        die("--host must be an IPv4 address in 127.0.0.0/8 (got %s)", O.host);
    if (O.conns < 0 || O.duration <= 0 || O.pub_conns < 1 || O.window < 1 || O.size < 0 ||
        O.size > 4 * 1024 * 1024 || O.stall_pct < 0 || O.stall_pct > 100 || O.ack_every < 0 ||
        O.ack_flush < 0)
        die("bad arguments (see --help)");
    if (O.users <= 0)
        O.users = O.conns > 0 ? O.conns : 1;
    if (O.warmup >= O.duration)
        die("--warmup must be shorter than --duration");

    /* limits: raise our soft fd limit to the hard one, pick procs and source addresses */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t hard = rl.rlim_max;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    long per_proc = (long)rl.rlim_cur - 64;
    int need = (int)((O.conns + per_proc - 1) / per_proc);
    if (need < 1)
        need = 1;
    if (O.procs <= 0)
        O.procs = need;
    else if (O.procs < need)
        die("%d connections need at least %d worker processes at %ld fds each (hard limit %lu); use --procs %d",
            O.conns, need, per_proc, (unsigned long)hard, need);
    if (O.procs > O.conns && O.conns > 0)
        O.procs = O.conns;
    if (O.procs < 1)
        O.procs = 1;
    int lo_port = 32768, hi_port = 60999;
    FILE *pf = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (pf) {
        if (fscanf(pf, "%d %d", &lo_port, &hi_port) != 2) {
            lo_port = 32768;
            hi_port = 60999;
        }
        fclose(pf);
    }
    int range = hi_port - lo_port + 1;
    int per_port = (O.conns + O.nports - 1) / O.nports;   /* ephemeral ports are per (source, server port) */
    if (O.src_addrs <= 0)
        O.src_addrs = 1 + per_port / (range * 3 / 4 > 1 ? range * 3 / 4 : 1);
    if (O.src_addrs > 254)
        O.src_addrs = 254;
    if (!O.quiet)
        fprintf(stderr,
                "loadgen: fd limit %lu (hard %lu) -> %d worker proc(s) for %d conns; ephemeral ports %d-%d (%d)"
                " -> %d source address(es) 127.0.0.1..127.0.0.%d, ~%d conns each\n",
                (unsigned long)rl.rlim_cur, (unsigned long)hard, O.procs, O.conns, lo_port, hi_port,
                range, O.src_addrs, O.src_addrs, (O.conns + O.src_addrs - 1) / O.src_addrs);
    if ((per_port + O.src_addrs - 1) / O.src_addrs > range)
        fprintf(stderr, "loadgen: WARNING %d conns per (source address, server port) exceed the port range; raise --src-addrs\n",
                (per_port + O.src_addrs - 1) / O.src_addrs);

    signal(SIGPIPE, SIG_IGN);
    memset(&P, 0, sizeof P);
    P.K = O.procs;
    rng_state = now_ns() ^ ((uint64_t)getpid() << 32);
    if (!rng_state)
        rng_state = 1;
    P.t_start = now_ns();
    sample_server(&P.s_base);
    if (O.server_pid && !P.s_base.ok)
        die("cannot read /proc of every --server-pid");

    if (O.mode == MODE_UNICAST && O.stall_pct > 0) {
        P.stalled_per_user = calloc((size_t)O.users, sizeof(int));
        for (int i = 0; i < O.conns; i++)
            if (is_stalled(i))
                P.stalled_per_user[i % O.users]++;
    }

#define ALLOC(f, n) do { P.f = calloc((size_t)(n), sizeof *P.f); if (!P.f) die("out of memory"); } while (0)
    ALLOC(pid, P.K); ALLOC(cmd_fd, P.K); ALLOC(res_fd, P.K); ALLOC(res_io, P.K); ALLOC(rbuf, P.K);
    ALLOC(rlen, P.K); ALLOC(rcap, P.K); ALLOC(ready, P.K); ALLOC(final, P.K); ALLOC(dead, P.K);
    ALLOC(rdy, P.K); ALLOC(prog, P.K); ALLOC(fin, P.K); ALLOC(pc, O.pub_conns);
#undef ALLOC
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < P.K; k++) {
        int cp[2], rp[2];
        if (pipe2(cp, O_CLOEXEC) < 0 || pipe2(rp, O_CLOEXEC) < 0)
            die("pipe: %s", strerror(errno));
        int first = (int)((long)O.conns * k / P.K), last = (int)((long)O.conns * (k + 1) / P.K);
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(cp[1]);
            close(rp[0]);
            for (int j = 0; j < k; j++) {
                close(P.cmd_fd[j]);
                close(P.res_fd[j]);
            }
            worker_main(k, first, last - first, cp[0], rp[1]);
        }
        close(cp[0]);
        close(rp[1]);
        P.pid[k] = pid;
        P.cmd_fd[k] = cp[1];
        P.res_fd[k] = rp[0];
        P.prog[k].min_n = -1;
    }

    P.loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (!P.loop)
        die("ev_loop_new failed");
    for (int k = 0; k < P.K; k++) {
        ev_io_init(&P.res_io[k], res_cb, P.res_fd[k], EV_READ);
        ev_io_start(P.loop, &P.res_io[k]);
    }
    for (int j = 0; j < O.pub_conns; j++) {
        P.pc[j].id = j;
        P.pc[j].ring = calloc((size_t)O.window, sizeof(inflight_t));
    }
    P.body = malloc((size_t)O.size + 512);
    if (O.json)
        make_json(O.size);
    ev_timer_init(&P.report_timer, report_cb, 1.0, 1.0);
    ev_timer_start(P.loop, &P.report_timer);
    P.phase = PH_CONNECT;
    ev_run(P.loop, 0);

    for (int k = 0; k < P.K; k++) {
        int st;
        waitpid(P.pid[k], &st, 0);
    }
    report();
    return 0;
}
