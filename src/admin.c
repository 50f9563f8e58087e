/* admin.c — see admin.h. Failed TCP logins are limited per remote address
 * by admin_guard.c; every TCP login, good or bad, is logged with its remote. */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin_guard.h"
#include "buf.h"
#include "log.h"
#include "lua_host.h"
#include "server.h"

#define ADMIN_MAX_LINE (1024 * 1024)
#define ADMIN_MAX_OUT (4 * 1024 * 1024)

typedef struct admin_conn {
    ev_io rio, wio;
    unsigned long session;    /* names its Lua environment */
    struct admin_conn *next;
    mp_buf in;                /* bytes of the current, unfinished line */
    mp_buf out;               /* answers not yet written ... */
    size_t out_off;           /* ... from here on */
    int tcp;                  /* must present the token first */
    char addr[48];            /* TCP: the peer's address (the guard's key) ... */
    char remote[64];          /* ... and address:port, for the log */
    int authed;
    int closing;              /* close once out is written */
} admin_conn;

static ev_io unix_watcher, tcp_watcher;
static int unix_fd = -1, tcp_fd = -1;
/* The socket file we created: a reload may change admin.socket, and another
 * server may have put its own file at the path since; exit removes ours only. */
static char unix_path[sizeof mp.cfg.admin_socket];
static dev_t unix_dev;
static ino_t unix_ino;
static admin_conn *conns;
static unsigned long next_session = 1;

static void admin_free(admin_conn *a)
{
    for (admin_conn **pp = &conns; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    ev_io_stop(mp.loop, &a->rio);
    ev_io_stop(mp.loop, &a->wio);
    close(a->rio.fd);
    mp_lua_admin_end(a->session);
    mp_buf_free(&a->in);
    mp_buf_free(&a->out);
    free(a);
}

static void flush_out(admin_conn *a)
{
    while (a->out_off < a->out.len) {
        ssize_t w = write(a->rio.fd, a->out.s + a->out_off, a->out.len - a->out_off);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(mp.loop, &a->wio);
            return;
        }
        if (w <= 0) {
            admin_free(a);
            return;
        }
        a->out_off += (size_t)w;
    }
    mp_buf_reset(&a->out);
    a->out_off = 0;
    ev_io_stop(mp.loop, &a->wio);
    if (a->closing)
        admin_free(a);
}

/* Queues one JSON answer line (takes ownership of obj). */
static void answer(admin_conn *a, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(obj);
    if (!text)
        text = strdup("{\"ok\":false,\"error\":\"could not encode the answer\"}");
    size_t n = strlen(text);
    /* past the bound: an admin not reading its answers, dropped */
    if (a->out.len + n + 1 > ADMIN_MAX_OUT || mp_buf_append(&a->out, text, n) < 0 ||
        mp_buf_append(&a->out, "\n", 1) < 0)
        a->closing = 1;
    free(text);
}

static json_t *failure(const char *error)
{
    return json_pack("{s:b, s:s}", "ok", 0, "error", error);
}

/* Output is whatever Lua printed; bytes that are not UTF-8 (binary data in
 * a string) become '?' so the answer is still JSON. */
static json_t *output_answer(const char *output)
{
    json_t *o = json_pack("{s:b, s:s}", "ok", 1, "output", output);
    if (o)
        return o;
    char *copy = strdup(output);
    if (!copy)
        return failure("out of memory");
    for (unsigned char *p = (unsigned char *)copy; *p; p++)
        if (*p >= 0x80)
            *p = '?';
    o = json_pack("{s:b, s:s}", "ok", 1, "output", copy);
    free(copy);
    return o ? o : failure("could not encode the answer");
}

/* The first request on a TCP connection: the token, or the connection ends. */
static void check_token(admin_conn *a, const char *token)
{
    size_t want = strlen(mp.cfg.admin_token);
    if (token && strlen(token) == want && CRYPTO_memcmp(token, mp.cfg.admin_token, want) == 0) {
        a->authed = 1;
        mp_guard_succeeded(a->addr);
        mp_info("admin: authenticated", "remote=%s", a->remote);
        answer(a, json_pack("{s:b}", "ok", 1));
        return;
    }
    int failures = mp_guard_failed(a->addr, ev_now(mp.loop));
    mp_warn("admin: bad token", "remote=%s failures=%d retry_in=%d", a->remote, failures,
            mp_guard_wait(a->addr, ev_now(mp.loop)));
    answer(a, failure("bad token"));
    a->closing = 1;
}

/* An address shut out after too many bad tokens: told when to come back,
 * closed before it can send one. Returns 1 if so. */
static int refuse_if_shut_out(admin_conn *a)
{
    int wait = mp_guard_wait(a->addr, ev_now(mp.loop));
    if (!wait)
        return 0;
    char msg[160];
    snprintf(msg, sizeof msg, "too many failed admin logins from %s: retry in %d s", a->addr, wait);
    mp_warn("admin: login refused, too many failures", "remote=%s retry_in=%d", a->remote, wait);
    answer(a, json_pack("{s:b, s:s, s:i}", "ok", 0, "error", msg, "retry_after", wait));
    a->closing = 1;
    flush_out(a);   /* may free a */
    return 1;
}

static void keep_peer(admin_conn *a, const struct sockaddr_storage *sa)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
    }
    snprintf(a->addr, sizeof a->addr, "%s", host);
    snprintf(a->remote, sizeof a->remote, sa->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

static void handle_request(admin_conn *a, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    if (!req || !json_is_object(req)) {
        answer(a, failure("each line is a JSON object: {\"eval\":...}, {\"complete\":...} or {\"token\":...}"));
        json_decref(req);
        return;
    }
    const char *token = json_string_value(json_object_get(req, "token"));
    const char *code = json_string_value(json_object_get(req, "eval"));
    const char *prefix = json_string_value(json_object_get(req, "complete"));
    if (a->tcp && !a->authed) {
        check_token(a, token);
    } else if (code) {
        char *output = NULL;
        int rc = mp_lua_admin_eval(a->session, code, &output);
        if (rc == 0)
            answer(a, output_answer(output ? output : ""));
        else if (rc == 1)
            answer(a, json_pack("{s:b, s:b}", "ok", 0, "incomplete", 1));
        else
            answer(a, failure(output ? output : "error"));
        free(output);
    } else if (prefix) {
        char *list = mp_lua_admin_complete(a->session, prefix);
        json_t *cands = list ? json_loads(list, 0, NULL) : NULL;
        free(list);
        answer(a, json_pack("{s:b, s:o}", "ok", 1, "candidates", cands ? cands : json_array()));
    } else if (token) {
        answer(a, json_pack("{s:b}", "ok", 1));
    } else {
        answer(a, failure("unknown request: use eval, complete or token"));
    }
    json_decref(req);
}

static void take_bytes(admin_conn *a, const char *p, size_t n)
{
    while (n > 0 && !a->closing) {
        const char *nl = memchr(p, '\n', n);
        size_t part = nl ? (size_t)(nl - p) : n;
        if (a->in.len + part > ADMIN_MAX_LINE) {
            answer(a, failure("line longer than 1 MiB"));
            a->closing = 1;
            return;
        }
        if (mp_buf_append(&a->in, p, part) < 0) {
            a->closing = 1;
            return;
        }
        if (!nl)
            return;
        handle_request(a, a->in.s, a->in.len);
        mp_buf_reset(&a->in);
        p += part + 1;
        n -= part + 1;
    }
}

static void on_admin_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    admin_conn *a = w->data;
    char buf[16384];
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        admin_free(a);
        return;
    }
    take_bytes(a, buf, (size_t)n);
    if (a->out.len > a->out_off || a->closing)
        flush_out(a);
}

static void on_admin_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop; (void)revents;
    flush_out(w->data);
}

static void on_admin_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct sockaddr_storage sa = {0};
    socklen_t salen = sizeof sa;
    int fd = accept4(w->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    admin_conn *a = calloc(1, sizeof *a);
    if (!a) {
        close(fd);
        return;
    }
    a->tcp = w == &tcp_watcher;
    a->session = next_session++;
    ev_io_init(&a->rio, on_admin_read, fd, EV_READ);
    ev_io_init(&a->wio, on_admin_write, fd, EV_WRITE);
    a->rio.data = a->wio.data = a;
    a->next = conns;
    conns = a;
    if (a->tcp) {
        keep_peer(a, &sa);
        if (refuse_if_shut_out(a))
            return;
    }
    ev_io_start(loop, &a->rio);
}

/* A file already at the socket path: a live server's socket (a connect is
 * answered, or its backlog is full), which is not ours to take; or a stale
 * one from a server that died (nobody listens), removed. Anything else there
 * is left alone. Returns 0 when the path is free now. */
static int claim_unix_path(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        mp_error("the admin socket path exists and is not a socket: remove it or set admin.socket", "path=%s", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd >= 0 ? connect(fd, (const struct sockaddr *)sa, sizeof *sa) : -1;
    int why = errno;
    if (fd >= 0)
        close(fd);
    if (rc == 0 || why == EAGAIN) {
        mp_error("another moonpush is serving this admin socket: stop it first, or give this server "
                 "its own admin.socket", "path=%s", path);
        return -1;
    }
    if (why != ECONNREFUSED) {
        mp_error("cannot tell whether a server owns the admin socket", "path=%s error=\"%s\"", path, strerror(why));
        return -1;
    }
    mp_info("removing a stale admin socket (nobody listens on it)", "path=%s", path);
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (claim_unix_path(path, &sa) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* Created 0600 from the start: no window where others could connect. */
    mode_t old = umask(0177);
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 16) == 0;
    umask(old);
    struct stat st;
    if (!ok || lstat(path, &st) < 0) {
        mp_error("cannot open the admin socket", "path=%s error=\"%s\"", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(unix_path, sizeof unix_path, "%s", path);
    unix_dev = st.st_dev;
    unix_ino = st.st_ino;
    return fd;
}

/* Removes the socket file if it is still the one we created. */
static void remove_unix_path(void)
{
    struct stat st;
    if (unix_path[0] && lstat(unix_path, &st) == 0 && st.st_dev == unix_dev && st.st_ino == unix_ino)
        unlink(unix_path);
    unix_path[0] = '\0';
}

static int listen_tcp(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 16) == 0;
    freeaddrinfo(res);
    if (!ok) {
        mp_error("cannot open the admin TCP listener", "addr=%s:%d error=\"%s\"", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int mp_admin_start(void)
{
    if (mp.cfg.admin_socket[0]) {
        if ((unix_fd = listen_unix(mp.cfg.admin_socket)) < 0)
            return -1;
        ev_io_init(&unix_watcher, on_admin_accept, unix_fd, EV_READ);
        ev_io_start(mp.loop, &unix_watcher);
        mp_info("admin listening", "socket=%s", mp.cfg.admin_socket);
    }
    if (mp.cfg.admin_host[0]) {
        if ((tcp_fd = listen_tcp(mp.cfg.admin_host, mp.cfg.admin_port)) < 0)
            return -1;
        ev_io_init(&tcp_watcher, on_admin_accept, tcp_fd, EV_READ);
        ev_io_start(mp.loop, &tcp_watcher);
        mp_info("admin listening", "addr=%s:%d", mp.cfg.admin_host, mp.cfg.admin_port);
    }
    return 0;
}

void mp_admin_stop(void)
{
    while (conns)
        admin_free(conns);
    if (unix_fd >= 0) {
        ev_io_stop(mp.loop, &unix_watcher);
        close(unix_fd);
        remove_unix_path();
        unix_fd = -1;
    }
    if (tcp_fd >= 0) {
        ev_io_stop(mp.loop, &tcp_watcher);
        close(tcp_fd);
        tcp_fd = -1;
    }
}
