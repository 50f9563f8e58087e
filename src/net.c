/* net.c — see net.h. From accept() to the last byte written. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "tls.h"
#include "ws.h"

#define LINGER_SECONDS 2.0   /* a closing peer's FIN, at most; shutdown waits no longer */
#define ACCEPTS_PER_WAKEUP 64
#define FLUSH_IOV 64
#define FLUSH_ROUNDS 4      /* writev calls per connection per iteration */
#define TLS_RECORD 16384    /* plaintext per SSL_write: one full TLS record */
#define TLS_READS 4         /* SSL_read calls per wakeup (each a record at most) */

mp_tlist mp_request_list, mp_idle_list, mp_pong_list, mp_linger_list;

/* One per cfg.listeners entry; index is the entry's (tls.h listener i). */
typedef struct listener {
    ev_io w;
    int fd;
    int index;
} listener;
static listener listeners[MP_MAX_LISTENERS];
static int nlisteners;
static ev_timer accept_pause;       /* out of file descriptors: retry shortly */
static int spare_fd = -1;           /* given up to answer 503 when out of fds */
static ev_tstamp last_emfile_log;
static ev_prepare flush_watcher;
static mp_conn *dirty_head;         /* connections to flush in this iteration */
static mp_conn *dead_head;          /* connections to free in this iteration */
static uint64_t next_conn_id = 1;

/* One read buffer for the whole process: data is handed to the HTTP parser or
 * wslay, which keep what they need, before the next read. */
static uint8_t read_buf[64 * 1024];

_Static_assert(offsetof(mp_conn, io) == 0, "on_io casts the watcher to its connection");

/* The connection's SSL (TLS listener) or NULL, kept in io.data (net.h). */
static inline SSL *conn_ssl(const mp_conn *c)
{
    return c->io.data;
}

static mp_conn *conn_of_tnode(mp_tnode *n)
{
    return (mp_conn *)((char *)n - offsetof(mp_conn, tnode));
}

static void mark_dirty(mp_conn *c)
{
    if (c->flags & (MP_CONN_DIRTY | MP_CONN_DEAD))
        return;
    c->flags |= MP_CONN_DIRTY;
    c->dirty_next = dirty_head;
    dirty_head = c;
}

/* ---- closing ------------------------------------------------------------ */

static void detach_session(mp_conn *c)
{
    if (c->ws) {
        mp_ws_session_free(c);
        mp.nws--;
    }
    if (c->sse)
        mp_sse_stream.session_free(c);
    if (c->http)
        mp_http_session_free(c);
}

void mp_conn_abort(mp_conn *c)
{
    if (c->flags & MP_CONN_DEAD)
        return;
    detach_session(c);
    ev_io_stop(mp.loop, &c->io);
    mp_tlist_remove(&c->tnode);
    if (conn_ssl(c)) {
        mp_tls_free(conn_ssl(c));
        c->io.data = NULL;
    }
    close(c->io.fd);
    mp.nconns--;
    c->state = MP_CONN_CLOSING;
    /* Off the dirty list first if it is there: it is singly linked, so the
     * flush pass skips dead entries instead of unlinking. */
    c->flags |= MP_CONN_DEAD;
    if (!(c->flags & MP_CONN_DIRTY)) {
        c->dirty_next = dead_head;
        dead_head = c;
    }
}

static void enter_closing(mp_conn *c)
{
    detach_session(c);
    c->state = MP_CONN_CLOSING;
    c->flags |= MP_CONN_CLOSE_AFTER;
    mp_tlist_touch(&mp_linger_list, &c->tnode);
    mark_dirty(c);
}

void mp_conn_close_stream(mp_conn *c, uint16_t code, const char *reason)
{
    if (!mp_conn_streaming(c))
        return;
    if (c->flags & MP_CONN_SLOW)   /* it would never read them */
        mp.stats.dropped_slow += mp_outq_drop_uncommitted(&c->out, conn_ssl(c) ? mp_tls_committed(conn_ssl(c)) : 0);
    if (code)
        c->close_code = code;
    mp_frame *f = code && c->state == MP_CONN_WS ? mp_frame_ws_close(code, reason) : NULL;
    if (f) {
        mp_outq_push(&c->out, f);
        mp_frame_unref(f);
    }
    mp_debug("ws close", "conn=%llu code=%u", (unsigned long long)c->id, code);
    enter_closing(c);
}

void mp_conn_close_after_flush(mp_conn *c)
{
    if (c->state == MP_CONN_CLOSING)
        return;
    enter_closing(c);
}

mp_histogram mp_net_deliver_latency;
uint64_t mp_net_delivered;

/* The time the last writev finished, read once per writev that completed a
 * message frame (not once per frame, nor per recipient): frames completed by
 * one writev were all written at that moment. ev_now would not do: a frame
 * published and written in the same loop iteration would measure 0. */
static double written_at;
static uint64_t written_at_call = UINT64_MAX;

static void count_written(const mp_frame *f)
{
    if (f->published > 0) {
        if (written_at_call != mp.stats.writev_calls) {
            written_at_call = mp.stats.writev_calls;
            written_at = mp_clock_wall();
        }
        mp_net_delivered++;
        mp_histogram_observe(&mp_net_deliver_latency, written_at - f->published);
    }
}

/* The queue is written: stop sending, then wait briefly for the peer's FIN so
 * unread input does not turn our close into a reset that eats the last frame. */
static void finish_close(mp_conn *c)
{
    c->flags &= (uint8_t)~MP_CONN_CLOSE_AFTER;
    c->flags |= MP_CONN_WR_SHUT;
    if (conn_ssl(c))
        mp_tls_shutdown(conn_ssl(c));   /* close_notify, if the socket takes it now */
    shutdown(c->io.fd, SHUT_WR);
    mp_tlist_touch(&mp_linger_list, &c->tnode);
}

/* ---- output ------------------------------------------------------------- */

int mp_conn_send(mp_conn *c, mp_frame *f)
{
    if (c->flags & (MP_CONN_DEAD | MP_CONN_SLOW)) {
        if (f->published > 0)
            mp.stats.dropped_slow++;
        return -1;
    }
    if (mp_outq_push(&c->out, f) < 0) {
        c->flags |= MP_CONN_SLOW;
        c->close_code = 1011;
        mark_dirty(c);
        return -1;
    }
    if (mp_conn_streaming(c) && c->out.bytes > mp.cfg.max_outbound_bytes) {
        c->flags |= MP_CONN_SLOW;
        c->close_code = 4001;
    }
    mark_dirty(c);
    return 0;
}

/* Adds or drops EV_WRITE interest (the watcher must be stopped to change). */
static void want_write(mp_conn *c, int on)
{
    int events = EV_READ | (on ? EV_WRITE : 0);
    if ((c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(mp.loop, &c->io);
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(mp.loop, &c->io);
}

/* Copies up to len unsent bytes, head first, into buf. */
static size_t gather(const mp_outq *q, uint8_t *buf, size_t len)
{
    struct iovec iov[FLUSH_IOV];
    int n = mp_outq_iov(q, iov, FLUSH_IOV);
    size_t got = 0;
    for (int i = 0; i < n && got < len; i++) {
        size_t take = iov[i].iov_len < len - got ? iov[i].iov_len : len - got;
        memcpy(buf + got, iov[i].iov_base, take);
        got += take;
    }
    return got;
}

/* The TLS write path: frames are coalesced into one record per SSL_write
 * (small messages would otherwise cost a record and a syscall each). After
 * WANT_WRITE the record holds those bytes: they stay queued, unconsumed, and
 * the retry gathers the same bytes again (maybe more behind them), which
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows. Returns -1 if it died. */
static int write_tls(mp_conn *c)
{
    static uint8_t scratch[TLS_RECORD];   /* refilled before every call: shared */
    for (int round = 0; round < FLUSH_ROUNDS && !mp_outq_empty(&c->out); round++) {
        size_t n = gather(&c->out, scratch, sizeof scratch);
        int w = mp_tls_write(conn_ssl(c), scratch, (int)n);
        mp.stats.writev_calls++;
        if (w == MP_TLS_WANT_WRITE || w == MP_TLS_WANT_READ) {
            mp_tls_set_committed(conn_ssl(c), n);
            if (w == MP_TLS_WANT_READ)
                c->tls_flags |= MP_TLS_WRITE_WANTS_READ;
            break;
        }
        if (w < 0) {
            mp_debug("tls write failed", "conn=%llu remote=%s reason=\"%s\"", (unsigned long long)c->id,
                     mp_conn_remote(c), mp_tls_reason());
            mp_conn_abort(c);
            return -1;
        }
        mp_tls_set_committed(conn_ssl(c), 0);
        mp_outq_consume(&c->out, (size_t)w, count_written);
        if (c->state == MP_CONN_CLOSING)
            mp_tlist_touch(&mp_linger_list, &c->tnode);
    }
    return 0;
}

/* The plain write path: every queued frame in one writev. */
static int write_plain(mp_conn *c)
{
    struct iovec iov[FLUSH_IOV];
    for (int round = 0; round < FLUSH_ROUNDS && !mp_outq_empty(&c->out); round++) {
        int n = mp_outq_iov(&c->out, iov, FLUSH_IOV);
        ssize_t w = writev(c->io.fd, iov, n);
        mp.stats.writev_calls++;
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            mp_conn_abort(c);
            return -1;
        }
        mp_outq_consume(&c->out, (size_t)w, count_written);
        if (c->state == MP_CONN_CLOSING && w > 0)
            mp_tlist_touch(&mp_linger_list, &c->tnode);   /* still reading: keep draining */
    }
    return 0;
}

/* EV_WRITE is wanted while bytes wait for a writable socket, or while a TLS
 * read does; not while a TLS write waits for a readable one (it would spin). */
static int needs_write(const mp_conn *c)
{
    return (!mp_outq_empty(&c->out) && !(c->tls_flags & MP_TLS_WRITE_WANTS_READ)) ||
           (c->tls_flags & MP_TLS_READ_WANTS_WRITE);
}

/* Writes what the kernel takes. Returns -1 if the connection died. */
static int flush(mp_conn *c)
{
    if (conn_ssl(c)) {
        if (c->tls_flags & (MP_TLS_HANDSHAKING | MP_TLS_WRITE_WANTS_READ))
            return 0;   /* the io watcher drives these */
        if (write_tls(c) < 0)
            return -1;
    } else if (write_plain(c) < 0) {
        return -1;
    }
    if ((c->flags & MP_CONN_REPLAY) && mp_conn_streaming(c) &&
        c->out.bytes < MP_REPLAY_RESUME_BYTES(mp.cfg.max_outbound_bytes)) {
        c->flags &= (uint8_t)~MP_CONN_REPLAY;
        if (c->sse)
            mp_sse_stream.continue_replays(c);
        else
            mp_ws_continue_replays(c);      /* may queue more and set the flag again */
    }
    want_write(c, needs_write(c));
    if (mp_outq_empty(&c->out) && (c->flags & MP_CONN_CLOSE_AFTER))
        finish_close(c);
    return 0;
}

static void close_slow(mp_conn *c)
{
    uint16_t code = c->close_code ? c->close_code : 4001;
    if (code == 4001)
        mp.stats.slow_consumer_closes++;
    mp_info("slow consumer closed", "conn=%llu queued_bytes=%zu code=%u",
            (unsigned long long)c->id, c->out.bytes, code);
    mp_conn_close_stream(c, code, code == 4001 ? "slow consumer" : "internal error");
    c->flags &= (uint8_t)~MP_CONN_SLOW;
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    while (dirty_head) {
        mp_conn *c = dirty_head;
        dirty_head = c->dirty_next;
        c->flags &= (uint8_t)~MP_CONN_DIRTY;
        if (c->flags & MP_CONN_DEAD) {
            c->dirty_next = dead_head;
            dead_head = c;
            continue;
        }
        if ((c->flags & MP_CONN_SLOW) && mp_conn_streaming(c))
            close_slow(c);   /* re-marks dirty: handled later in this loop */
        else
            flush(c);
    }
    while (dead_head) {
        mp_conn *c = dead_head;
        dead_head = c->dirty_next;
        mp_outq_clear(&c->out);
        free(c);
    }
}

/* ---- input -------------------------------------------------------------- */

static void feed(mp_conn *c, size_t n)
{
    switch (c->state) {
    case MP_CONN_HTTP:
        mp_http_feed(c, read_buf, n);
        break;
    case MP_CONN_WS:
        mp_ws_feed(c, read_buf, n);
        break;
    case MP_CONN_SSE:
        break;   /* an event stream has no upstream: bytes are ignored, EOF closes */
    default:
        /* Closing. Once everything we had is out, the peer's next bytes
         * (its close reply) or FIN mean it has read our last frame. */
        if (c->flags & MP_CONN_WR_SHUT)
            mp_conn_abort(c);
        break;
    }
}

/* Drives SSL_accept. Returns 0 once done, -1 while waiting or dead. */
static int tls_handshake(mp_conn *c)
{
    int rc = mp_tls_handshake(conn_ssl(c));
    if (rc == MP_TLS_WANT_READ || rc == MP_TLS_WANT_WRITE) {
        want_write(c, rc == MP_TLS_WANT_WRITE);
        return -1;
    }
    if (rc < 0) {
        mp_info("tls handshake failed", "conn=%llu remote=%s reason=\"%s\"", (unsigned long long)c->id,
                mp_conn_remote(c), rc == MP_TLS_CLOSED ? "closed by the peer" : mp_tls_reason());
        mp_conn_abort(c);
        return -1;
    }
    c->tls_flags &= (uint8_t)~MP_TLS_HANDSHAKING;
    want_write(c, 0);
    mp_debug("tls handshake done", "conn=%llu remote=%s", (unsigned long long)c->id, mp_conn_remote(c));
    return 0;
}

/* Up to TLS_READS records. Without read-ahead OpenSSL takes from the socket
 * only the record it decrypts, and read_buf holds a whole one: nothing is
 * left buffered inside OpenSSL when this returns, so level-triggered
 * EV_READ still says when more is there. */
static void tls_read(mp_conn *c)
{
    c->tls_flags &= (uint8_t)~MP_TLS_READ_WANTS_WRITE;
    for (int i = 0; i < TLS_READS; i++) {
        int n = mp_tls_read(conn_ssl(c), read_buf, sizeof read_buf);
        if (n == MP_TLS_WANT_READ)
            break;
        if (n == MP_TLS_WANT_WRITE) {
            c->tls_flags |= MP_TLS_READ_WANTS_WRITE;
            want_write(c, 1);
            break;
        }
        if (n < 0) {
            if (n == MP_TLS_ERROR)
                mp_debug("tls read failed", "conn=%llu remote=%s reason=\"%s\"", (unsigned long long)c->id,
                         mp_conn_remote(c), mp_tls_reason());
            mp_conn_abort(c);
            return;
        }
        feed(c, (size_t)n);
        if (c->flags & MP_CONN_DEAD)
            return;
    }
}

static void on_io_tls(mp_conn *c, int revents)
{
    if (c->tls_flags & MP_TLS_HANDSHAKING) {
        if (tls_handshake(c) < 0)
            return;
        revents = EV_READ;   /* the request may have come with the client's last flight */
    }
    if (revents & EV_WRITE) {
        if (flush(c) < 0 || (c->flags & MP_CONN_DEAD))
            return;
        if (c->tls_flags & MP_TLS_READ_WANTS_WRITE)
            revents |= EV_READ;
    }
    if (!(revents & EV_READ))
        return;
    if (c->tls_flags & MP_TLS_WRITE_WANTS_READ) {
        c->tls_flags &= (uint8_t)~MP_TLS_WRITE_WANTS_READ;
        mark_dirty(c);   /* retry the write in this iteration's flush pass */
    }
    tls_read(c);
    if (!(c->flags & MP_CONN_DEAD))
        want_write(c, needs_write(c));   /* a read that waited for EV_WRITE may be done */
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    mp_conn *c = (mp_conn *)w;
    if (conn_ssl(c)) {
        on_io_tls(c, revents);
        return;
    }
    if ((revents & EV_WRITE) && (flush(c) < 0 || (c->flags & MP_CONN_DEAD)))
        return;
    if (!(revents & EV_READ))
        return;
    ssize_t n = read(w->fd, read_buf, sizeof read_buf);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        mp_conn_abort(c);
        return;
    }
    if (n == 0) {
        mp_conn_abort(c);
        return;
    }
    feed(c, (size_t)n);
}

/* ---- timeouts ----------------------------------------------------------- */

/* The request timeout also bounds a TLS handshake: a client that connects
 * and says nothing is closed like one that never finishes its request. */
static void on_request_timeout(mp_tlist *l, mp_tnode *n)
{
    (void)l;
    mp_conn *c = conn_of_tnode(n);
    if (c->tls_flags & MP_TLS_HANDSHAKING) {
        mp_info("tls handshake timeout", "conn=%llu remote=%s", (unsigned long long)c->id, mp_conn_remote(c));
        mp_conn_abort(c);
        return;
    }
    mp_http_timeout(c);
}

static void on_idle(mp_tlist *l, mp_tnode *n)
{
    (void)l;
    mp_conn *c = conn_of_tnode(n);
    if (c->sse) {
        mp_sse_stream.heartbeat(c);             /* no pong to wait for: next beat after ping_ms */
        if (c->sse)                      /* not ended (token expired) */
            mp_tlist_touch(&mp_idle_list, n);
        return;
    }
    mp_ws_ping(c);
    mp_tlist_touch(&mp_pong_list, n);
}

static void on_pong_timeout(mp_tlist *l, mp_tnode *n)
{
    (void)l;
    mp_conn *c = conn_of_tnode(n);
    mp.stats.idle_timeout_closes++;
    mp_info("idle timeout", "conn=%llu remote=%s", (unsigned long long)c->id, mp_conn_remote(c));
    mp_conn_close_stream(c, 4000, "idle timeout");
}

/* No progress for LINGER_SECONDS while closing. During a shutdown drain a
 * client with frames still queued keeps its place until the grace period
 * (timeouts.shutdown_ms) ends the process: slow is not dead.
 *
 * Bytes still in our queue mean the peer took none of its bytes in that
 * time (any it took would have let a write through and touched the timer):
 * it is not reading. A plain close would leave the kernel holding what it
 * already has, probing a zero window for minutes, while the peer sees
 * neither its data nor an end; a reset (SO_LINGER 0) ends it now. */
static void on_linger_timeout(mp_tlist *l, mp_tnode *n)
{
    mp_conn *c = conn_of_tnode(n);
    if (mp.stopping && !mp_outq_empty(&c->out) && c->state == MP_CONN_CLOSING) {
        mp_tlist_touch(l, n);
        return;
    }
    if (!mp_outq_empty(&c->out)) {
        struct linger reset = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    }
    mp_conn_abort(c);
}

/* ---- accept ------------------------------------------------------------- */

static void keep_remote(mp_conn *c, const struct sockaddr_storage *sa)
{
    c->remote_family = (uint8_t)sa->ss_family;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        memcpy(c->remote_addr, &s4->sin_addr, 4);
        c->remote_port = ntohs(s4->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        memcpy(c->remote_addr, &s6->sin6_addr, 16);
        c->remote_port = ntohs(s6->sin6_port);
    }
}

/* Formatting costs a few thousand instructions (inet_ntop, snprintf), and
 * the same connection is often asked for again at once (a publish request's
 * auth, then its route hooks; a log line after a hook): a slot still holding
 * that connection's text is copied into the next one instead. Ids are never
 * reused, so a slot's id says whose text it holds. Every call still returns
 * the next slot in the rotation, as the header promises. */
const char *mp_conn_remote(const mp_conn *c)
{
    enum { SLOTS = 8 };
    static struct {
        uint64_t conn_id;   /* 0: empty */
        char text[INET6_ADDRSTRLEN + 8];
    } slots[SLOTS];
    static int next;
    int mine = next;
    next = (next + 1) % SLOTS;
    for (int i = 0; i < SLOTS; i++) {
        if (i != mine && slots[i].conn_id == c->id && c->id != 0) {
            memcpy(slots[mine].text, slots[i].text, sizeof slots[mine].text);
            slots[mine].conn_id = c->id;
            return slots[mine].text;
        }
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (c->remote_family == AF_INET || c->remote_family == AF_INET6)
        inet_ntop(c->remote_family, c->remote_addr, host, sizeof host);
    snprintf(slots[mine].text, sizeof slots[mine].text, c->remote_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
             c->remote_port);
    slots[mine].conn_id = c->id;
    return slots[mine].text;
}

/* Over the connection cap: one best-effort answer, then close. A TLS
 * listener's client gets no answer (it would take a handshake): just closed. */
static void reject_full(int fd, int tls)
{
    static const char body[] =
        "{\"error\":\"too_many_connections\",\"message\":\"server connection limit reached\"}";
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    if (!tls) {
        ssize_t w = write(fd, resp, (size_t)n);
        (void)w;
    }
    close(fd);
    mp.stats.connections_rejected++;
}

static void resume_accepting(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    for (int i = 0; i < nlisteners; i++)
        if (listeners[i].fd >= 0)
            ev_io_start(loop, &listeners[i].w);
}

/* Out of file descriptors: the pending connection would make accept() fail
 * again at once, spinning the loop. Give up the spare descriptor to accept
 * it and answer 503, then stop accepting for a moment. */
static void out_of_fds(struct ev_loop *loop, const listener *l)
{
    if (spare_fd >= 0) {
        close(spare_fd);
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            reject_full(fd, mp_tls_enabled(l->index));
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    for (int i = 0; i < nlisteners; i++)
        ev_io_stop(loop, &listeners[i].w);
    ev_timer_start(loop, &accept_pause);
    if (ev_now(loop) - last_emfile_log >= 1.0) {
        last_emfile_log = ev_now(loop);
        mp_warn("out of file descriptors: refusing connections", "open_connections=%d max_connections=%d",
                mp.nconns, mp.cfg.max_connections);
    }
}

/* A connection on a TLS listener starts with the handshake; its request
 * timeout (the caller starts it) bounds handshake and request together. */
static int start_tls(mp_conn *c, const listener *l)
{
    c->io.data = mp_tls_new(l->index, c->io.fd);
    if (!c->io.data)
        return -1;
    c->tls_flags = MP_TLS_HANDSHAKING;
    return 0;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    const listener *l = w->data;
    int tls = mp_tls_enabled(l->index);
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(w->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                out_of_fds(loop, l);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                mp_warn("accept failed", "error=\"%s\"", strerror(errno));
            return;
        }
        if (mp.nconns >= mp.cfg.max_connections || mp.stopping) {
            reject_full(fd, tls);
            continue;
        }
        mp_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->id = next_conn_id++;
        c->state = MP_CONN_HTTP;
        keep_remote(c, &sa);
        mp_outq_init(&c->out);
        ev_io_init(&c->io, on_io, fd, EV_READ);
        c->io.data = NULL;   /* the SSL, on a TLS listener (start_tls) */
        if (mp_http_session_new(c) < 0) {
            close(fd);
            free(c);
            continue;
        }
        if (tls && start_tls(c, l) < 0) {
            mp_http_session_free(c);
            close(fd);
            free(c);
            continue;
        }
        mp.nconns++;
        mp.stats.connections_accepted++;
        ev_io_start(loop, &c->io);
        mp_tlist_touch(&mp_request_list, &c->tnode);
    }
}

static int listen_on(const mp_listener_config *lc)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", lc->port);
    const char *host = lc->host[0] ? lc->host : NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        mp_error("cannot resolve listen address", "host=%s error=\"%s\"", lc->host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        mp_error("cannot listen", "addr=%s:%d error=\"%s\"", lc->host, lc->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

int mp_net_listen(void)
{
    for (int i = 0; i < mp.cfg.nlisteners; i++) {
        const mp_listener_config *lc = &mp.cfg.listeners[i];
        int fd = listen_on(lc);
        if (fd < 0) {
            mp_net_stop_accepting();
            return -1;
        }
        listeners[i].fd = fd;
        listeners[i].index = i;
        nlisteners = i + 1;
        mp_info("listening", "addr=%s:%d tls=%s", lc->host, lc->port, mp_tls_enabled(i) ? "yes" : "no");
    }
    return 0;
}

void mp_net_start(void)
{
    for (int i = 0; i < nlisteners; i++) {
        ev_io_init(&listeners[i].w, on_accept, listeners[i].fd, EV_READ);
        listeners[i].w.data = &listeners[i];
        ev_io_start(mp.loop, &listeners[i].w);
    }
    ev_timer_init(&accept_pause, resume_accepting, 0.1, 0.);
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ev_prepare_init(&flush_watcher, on_prepare);
    ev_prepare_start(mp.loop, &flush_watcher);
    mp_tlist_init(&mp_request_list, mp.loop, mp.cfg.request_timeout, on_request_timeout);
    mp_tlist_init(&mp_idle_list, mp.loop, mp.cfg.ping_interval, on_idle);
    mp_tlist_init(&mp_pong_list, mp.loop, mp.cfg.idle_timeout - mp.cfg.ping_interval, on_pong_timeout);
    mp_tlist_init(&mp_linger_list, mp.loop, LINGER_SECONDS, on_linger_timeout);
}

void mp_net_apply_timeouts(void)
{
    mp_tlist_set_timeout(&mp_request_list, mp.cfg.request_timeout);
    mp_tlist_set_timeout(&mp_idle_list, mp.cfg.ping_interval);
    mp_tlist_set_timeout(&mp_pong_list, mp.cfg.idle_timeout - mp.cfg.ping_interval);
}

void mp_net_stop_accepting(void)
{
    for (int i = 0; i < nlisteners; i++) {
        ev_io_stop(mp.loop, &listeners[i].w);
        if (listeners[i].fd >= 0)
            close(listeners[i].fd);
        listeners[i].fd = -1;
    }
    ev_timer_stop(mp.loop, &accept_pause);
    if (spare_fd >= 0) {
        close(spare_fd);
        spare_fd = -1;
    }
}

void mp_net_each_ws(void (*fn)(mp_conn *c, void *arg), void *arg)
{
    mp_tlist *lists[] = {&mp_idle_list, &mp_pong_list};
    for (int i = 0; i < 2; i++) {
        /* fn may move the node to another list: take the next one first, and
         * stop at the tail we started with so moved nodes are not revisited. */
        mp_tnode *n = lists[i]->head, *last = lists[i]->tail;
        while (n) {
            mp_tnode *next = n == last ? NULL : n->next;
            fn(conn_of_tnode(n), arg);
            n = next;
        }
    }
}

static void abort_each(mp_tlist *l)
{
    while (l->head)
        mp_conn_abort(conn_of_tnode(l->head));
}

void mp_net_free_all(void)
{
    abort_each(&mp_request_list);
    abort_each(&mp_idle_list);
    abort_each(&mp_pong_list);
    abort_each(&mp_linger_list);
    mp_tlist_stop(&mp_request_list);
    mp_tlist_stop(&mp_idle_list);
    mp_tlist_stop(&mp_pong_list);
    mp_tlist_stop(&mp_linger_list);
    on_prepare(mp.loop, &flush_watcher, 0);
    ev_prepare_stop(mp.loop, &flush_watcher);
    mp_net_stop_accepting();
}
