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
#include "ws.h"

#define LINGER_SECONDS 2.0   /* a closing peer's FIN, at most; shutdown waits no longer */
#define ACCEPTS_PER_WAKEUP 64
#define FLUSH_IOV 64
#define FLUSH_ROUNDS 4      /* writev calls per connection per iteration */

mp_tlist mp_request_list, mp_idle_list, mp_pong_list, mp_linger_list;

static int listen_fd = -1;
static ev_io accept_watcher;
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
    if (c->state != MP_CONN_WS)
        return;
    if (c->flags & MP_CONN_SLOW)
        mp.stats.dropped_slow += mp_outq_drop_unstarted(&c->out);   /* it would never read them */
    if (code)
        c->close_code = code;
    mp_frame *f = code ? mp_frame_ws_close(code, reason) : NULL;
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
    if (c->state == MP_CONN_WS && c->out.bytes > mp.cfg.max_outbound_bytes) {
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

/* Writes what the kernel takes. Returns -1 if the connection died. */
static int flush(mp_conn *c)
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
    if ((c->flags & MP_CONN_REPLAY) && c->state == MP_CONN_WS &&
        c->out.bytes < MP_REPLAY_RESUME_BYTES(mp.cfg.max_outbound_bytes)) {
        c->flags &= (uint8_t)~MP_CONN_REPLAY;
        mp_ws_continue_replays(c);          /* may queue more and set the flag again */
    }
    if (mp_outq_empty(&c->out)) {
        want_write(c, 0);
        if (c->flags & MP_CONN_CLOSE_AFTER)
            finish_close(c);
    } else {
        want_write(c, 1);
    }
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
        if ((c->flags & MP_CONN_SLOW) && c->state == MP_CONN_WS)
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

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    mp_conn *c = w->data;
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
    switch (c->state) {
    case MP_CONN_HTTP:
        mp_http_feed(c, read_buf, (size_t)n);
        break;
    case MP_CONN_WS:
        mp_ws_feed(c, read_buf, (size_t)n);
        break;
    default:
        /* Closing. Once everything we had is out, the peer's next bytes
         * (its close reply) or FIN mean it has read our last frame. */
        if (c->flags & MP_CONN_WR_SHUT)
            mp_conn_abort(c);
        break;
    }
}

/* ---- timeouts ----------------------------------------------------------- */

static void on_request_timeout(mp_tlist *l, mp_tnode *n)
{
    (void)l;
    mp_http_timeout(conn_of_tnode(n));
}

static void on_idle(mp_tlist *l, mp_tnode *n)
{
    (void)l;
    mp_conn *c = conn_of_tnode(n);
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

/* Over the connection cap: one best-effort answer, then close. */
static void reject_full(int fd)
{
    static const char body[] =
        "{\"error\":\"too_many_connections\",\"message\":\"server connection limit reached\"}";
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s", sizeof body - 1, body);
    ssize_t w = write(fd, resp, (size_t)n);
    (void)w;
    close(fd);
    mp.stats.connections_rejected++;
}

static void resume_accepting(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    if (listen_fd >= 0)
        ev_io_start(loop, &accept_watcher);
}

/* Out of file descriptors: the pending connection would make accept() fail
 * again at once, spinning the loop. Give up the spare descriptor to accept
 * it and answer 503, then stop accepting for a moment. */
static void out_of_fds(struct ev_loop *loop, int lfd)
{
    if (spare_fd >= 0) {
        close(spare_fd);
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            reject_full(fd);
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    ev_io_stop(loop, &accept_watcher);
    ev_timer_start(loop, &accept_pause);
    if (ev_now(loop) - last_emfile_log >= 1.0) {
        last_emfile_log = ev_now(loop);
        mp_warn("out of file descriptors: refusing connections", "open_connections=%d max_connections=%d",
                mp.nconns, mp.cfg.max_connections);
    }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(w->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                out_of_fds(loop, w->fd);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                mp_warn("accept failed", "error=\"%s\"", strerror(errno));
            return;
        }
        if (mp.nconns >= mp.cfg.max_connections || mp.stopping) {
            reject_full(fd);
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
        c->io.data = c;
        if (mp_http_session_new(c) < 0) {
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

int mp_net_listen(void)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", mp.cfg.listen_port);
    const char *host = mp.cfg.listen_host[0] ? mp.cfg.listen_host : NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        mp_error("cannot resolve listen address", "host=%s error=\"%s\"", mp.cfg.listen_host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        mp_error("cannot listen", "addr=%s:%d error=\"%s\"", mp.cfg.listen_host, mp.cfg.listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    listen_fd = fd;
    mp_info("listening", "addr=%s:%d", mp.cfg.listen_host, mp.cfg.listen_port);
    return 0;
}

void mp_net_start(void)
{
    ev_io_init(&accept_watcher, on_accept, listen_fd, EV_READ);
    ev_io_start(mp.loop, &accept_watcher);
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
    ev_io_stop(mp.loop, &accept_watcher);
    ev_timer_stop(mp.loop, &accept_pause);
    if (spare_fd >= 0) {
        close(spare_fd);
        spare_fd = -1;
    }
    if (listen_fd >= 0) {
        close(listen_fd);
        listen_fd = -1;
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
