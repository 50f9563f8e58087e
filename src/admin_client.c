/* admin_client.c — see admin_client.h. `moonpush admin`, the client side.
 *
 * Owns the subcommand's argv, the connection (Unix socket, or TCP plus the
 * token exchange), the request/answer round trip, and the three front ends:
 * -e, a script on stdin, the interactive REPL. One request is in flight at a
 * time, so everything here is blocking and single-threaded.
 *
 * A chunk is sent as {"eval": ...}. When the server answers "incomplete",
 * the next line is appended and the whole chunk is sent again, until it is
 * complete or wrong: the client knows no Lua grammar.
 *
 * Any failure of the connection is final: a message on stderr and exit 2
 * (atexit puts the terminal back first).
 */
#include "admin_client.h"

#include "buf.h"

#include <ctype.h>
#include <errno.h>
#include <histedit.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LINE (1024 * 1024)       /* protocol: bytes per line, either way */
#define HISTORY_SIZE 1000
#define HISTORY_FILE ".moonpush_history"
#define DEFAULT_SOCKET "moonpush-admin.sock"
#define MAX_LISTED 300               /* completion candidates shown at once */

enum { EVAL_OK, EVAL_ERROR, EVAL_INCOMPLETE };

/* ---- small things ------------------------------------------------------- */

static int conn_fd = -1;
static char *rbuf;                   /* answers: MAX_LINE + 1 bytes */
static size_t rlen;                  /* bytes in rbuf */
static int interactive;
static volatile sig_atomic_t got_sigint;

static EditLine *el;
static History *hist;
static char history_path[PATH_MAX];

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moonpush admin [SOCKET] [-e EXPR]...\n"
            "       moonpush admin --tcp HOST:PORT --token TOKEN [-e EXPR]...\n"
            "\n"
            "Evaluates Lua in a running server. With -e: each EXPR, printed. With stdin\n"
            "not a terminal: every chunk of it. Else an interactive prompt.\n"
            "SOCKET defaults to $MOONPUSH_ADMIN_SOCKET, then ./" DEFAULT_SOCKET ".\n"
            "The token may also come from $MOONPUSH_ADMIN_TOKEN.\n"
            "Exit status: 0 ok, 1 a chunk raised an error, 2 no connection.\n");
}

/* The client has nothing sensible to do without memory: it says so and exits. */
static void buf_append(mp_buf *b, const char *s, size_t n)
{
    if (mp_buf_append(b, s, n) < 0) {
        fprintf(stderr, "moonpush admin: out of memory\n");
        exit(2);
    }
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Connection trouble ends the session: stderr, exit 2. */
static void die(const char *fmt, const char *arg)
{
    if (interactive)
        fputc('\n', stdout);
    fflush(stdout);
    fputs("moonpush admin: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static void conn_lost(void)
{
    die("%s", "server closed the connection");
}

/* ---- connecting --------------------------------------------------------- */

static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path)
        die("socket path too long for a Unix socket: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    int e = errno;
    close(fd);
    if (e == ENOENT)
        die("no admin socket at %s (server not running, or its admin.socket is elsewhere: "
            "by default next to its config file; pass the path or set $MOONPUSH_ADMIN_SOCKET)", path);
    if (e == EACCES || e == EPERM)
        die("permission denied on %s (the socket is mode 0600: run as the server's user)", path);
    if (e == ECONNREFUSED)
        die("connection refused at %s (nothing listens there: a server that stopped?)", path);
    fprintf(stderr, "moonpush admin: cannot connect to %s: %s\n", path, strerror(e));
    exit(2);
}

/* "host:port", "[v6]:port". Writes into host (hostlen bytes); port points into spec. */
static int split_host_port(const char *spec, char *host, size_t hostlen, const char **port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon[1] == '\0')
        return -1;
    const char *h = spec;
    size_t n = (size_t)(colon - spec);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hostlen)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = colon + 1;
    return 0;
}

static int connect_tcp(const char *spec)
{
    char host[256];
    const char *port;
    if (split_host_port(spec, host, sizeof host, &port) < 0)
        die("--tcp wants HOST:PORT, not \"%s\"", spec);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "moonpush admin: %s: %s\n", spec, gai_strerror(rc));
        exit(2);
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0)
        return fd;
    if (e == ECONNREFUSED)
        die("connection refused at %s (is admin.listen set and the server running?)", spec);
    fprintf(stderr, "moonpush admin: cannot connect to %s: %s\n", spec, strerror(e));
    exit(2);
}

/* ---- the line protocol -------------------------------------------------- */

static void send_line(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(conn_fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            conn_lost();
        s += w;
        n -= (size_t)w;
    }
}

/* Ctrl-C while the server evaluates: the chunk cannot be called back (its
 * instruction budget ends it), so the first one only says so. */
static void on_wait_interrupt(int *warned)
{
    got_sigint = 0;
    if (*warned) {
        fputs("\nmoonpush admin: interrupted; the server's answer is lost\n", stderr);
        exit(130);
    }
    *warned = 1;
    fputs("\n(waiting for the server: the chunk runs under its instruction budget;"
          " Ctrl-C again to quit)\n", stderr);
}

/* One answer line, NUL-terminated in rbuf; returns its length. */
static size_t recv_line(void)
{
    int warned = 0;
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        if (nl) {
            *nl = '\0';
            return (size_t)(nl - rbuf);
        }
        if (rlen >= MAX_LINE)
            die("%s", "an answer from the server is longer than 1 MiB");
        ssize_t r = recv(conn_fd, rbuf + rlen, MAX_LINE - rlen, 0);
        if (r < 0 && errno == EINTR) {
            if (got_sigint)
                on_wait_interrupt(&warned);
            continue;
        }
        if (r <= 0)
            conn_lost();
        rlen += (size_t)r;
    }
}

/* Drops the answer recv_line returned (n bytes plus its newline). */
static void consume_line(size_t n)
{
    memmove(rbuf, rbuf + n + 1, rlen - n - 1);
    rlen -= n + 1;
}

/* Sends req (stolen) and returns the answer object; the caller decrefs it.
 * NULL, with nothing sent, when the request would exceed a line. */
static json_t *roundtrip(json_t *req)
{
    char *text = json_dumps(req, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(req);
    if (!text || strlen(text) + 1 > MAX_LINE) {
        free(text);
        return NULL;
    }
    size_t n = strlen(text);
    text[n] = '\n';
    send_line(text, n + 1);
    free(text);

    n = recv_line();
    json_error_t jerr;
    json_t *ans = json_loadb(rbuf, n, 0, &jerr);
    if (!json_is_object(ans))
        die("bad answer from the server (%s)", ans ? "not an object" : jerr.text);
    consume_line(n);
    return ans;
}

static void send_token(const char *token)
{
    json_t *ans = roundtrip(json_pack("{s:s}", "token", token));
    if (!ans)
        die("%s", "token too long");
    if (!json_is_true(json_object_get(ans, "ok"))) {
        char why[256];
        const char *e = json_string_value(json_object_get(ans, "error"));
        snprintf(why, sizeof why, "%s", e ? e : "the server refused the token");
        json_decref(ans);   /* die() exits: release first so leak checkers stay quiet */
        die("%s", why);
    }
    json_decref(ans);
}

/* ---- evaluating --------------------------------------------------------- */

static void print_output(const char *s, size_t n)
{
    fwrite(s, 1, n, stdout);
    if (n > 0 && s[n - 1] != '\n')
        fputc('\n', stdout);
    fflush(stdout);
}

static void print_error(const char *where, const char *msg)
{
    fflush(stdout);
    fprintf(stderr, "error: %s%s\n", where ? where : "", msg);
}

/* Sends chunk as one eval. Prints the output, or the error on stderr
 * (prefixed by where, when not NULL); prints nothing when incomplete. */
static int eval_chunk(const char *chunk, size_t len, const char *where)
{
    json_t *code = json_stringn(chunk, len);
    if (!code) {
        print_error(where, "input is not valid UTF-8");
        return EVAL_ERROR;
    }
    json_t *ans = roundtrip(json_pack("{s:o}", "eval", code));
    if (!ans) {
        print_error(where, "chunk too long (a request is at most 1 MiB)");
        return EVAL_ERROR;
    }
    int rc;
    json_t *out = json_object_get(ans, "output");
    if (json_is_true(json_object_get(ans, "ok"))) {
        print_output(json_string_value(out) ? json_string_value(out) : "",
                     json_string_value(out) ? json_string_length(out) : 0);
        rc = EVAL_OK;
    } else if (json_is_true(json_object_get(ans, "incomplete"))) {
        rc = EVAL_INCOMPLETE;
    } else {
        const char *msg = json_string_value(json_object_get(ans, "error"));
        print_error(where, msg ? msg : "(the server gave no message)");
        rc = EVAL_ERROR;
    }
    json_decref(ans);
    return rc;
}

/* ---- -e ----------------------------------------------------------------- */

static int run_exprs(char **exprs, int n)
{
    int status = 0;
    for (int i = 0; i < n; i++) {
        int rc = eval_chunk(exprs[i], strlen(exprs[i]), NULL);
        if (rc == EVAL_INCOMPLETE)
            print_error(NULL, "incomplete chunk (an unfinished function, do, table or string?)");
        if (rc != EVAL_OK)
            status = 1;
    }
    return status;
}

/* ---- a script on stdin -------------------------------------------------- */

/* Appends one line of f (without its newline) to b. Returns 0, -1 at end of
 * input, 1 when the line was longer than MAX_LINE (the rest is skipped). */
static int read_line(FILE *f, mp_buf *b)
{
    size_t start = b->len;
    int c, got = 0;
    while ((c = getc(f)) != EOF && c != '\n') {
        got = 1;
        if (b->len - start >= MAX_LINE)
            continue;
        char ch = (char)c;
        buf_append(b, &ch, 1);
    }
    if (c == EOF && !got)
        return -1;
    return b->len - start >= MAX_LINE ? 1 : 0;
}

static int run_script(FILE *in)
{
    mp_buf chunk = { 0 };
    int status = 0, lineno = 0, first = 0;
    char where[64];
    for (;;) {
        size_t before = chunk.len;
        int rc = read_line(in, &chunk);
        if (rc < 0)
            break;
        lineno++;
        if (before == 0) {
            if (is_blank(chunk.s, chunk.len)) {
                mp_buf_reset(&chunk);
                continue;
            }
            first = lineno;
        }
        snprintf(where, sizeof where, "line %d: ", first);
        if (rc > 0 || chunk.len > MAX_LINE) {
            print_error(where, "chunk longer than 1 MiB, skipped");
            status = 1;
            mp_buf_reset(&chunk);
            continue;
        }
        rc = eval_chunk(chunk.s, chunk.len, where);
        if (rc == EVAL_INCOMPLETE) {
            buf_append(&chunk, "\n", 1);
            continue;
        }
        if (rc == EVAL_ERROR)
            status = 1;
        mp_buf_reset(&chunk);
    }
    if (chunk.len > 0) {
        snprintf(where, sizeof where, "line %d: ", first);
        print_error(where, "input ended inside an unfinished chunk");
        status = 1;
    }
    mp_buf_free(&chunk);
    return status;
}

/* ---- interactive -------------------------------------------------------- */

static mp_buf pending;               /* the lines of an incomplete chunk */

static char *prompt(EditLine *e)
{
    (void)e;
    return pending.len ? ">> " : "moonpush> ";
}

static void on_sigint(int sig)
{
    (void)sig;
    got_sigint = 1;
}

static int is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == ':';
}

/* The candidates for prefix, or NULL (nothing to offer, or a refusal). */
static json_t *fetch_candidates(const char *prefix, size_t n)
{
    json_t *p = json_stringn(prefix, n);
    if (!p)
        return NULL;
    json_t *ans = roundtrip(json_pack("{s:o}", "complete", p));
    if (!ans)
        return NULL;
    json_t *list = json_object_get(ans, "candidates");
    if (!json_is_true(json_object_get(ans, "ok")) || !json_is_array(list) ||
        json_array_size(list) == 0) {
        json_decref(ans);
        return NULL;
    }
    json_incref(list);
    json_decref(ans);
    return list;
}

/* Length of the prefix every string candidate shares. */
static size_t common_prefix(json_t *list)
{
    size_t i, common = (size_t)-1;
    json_t *v, *first = NULL;
    json_array_foreach(list, i, v) {
        if (!json_is_string(v))
            continue;
        if (!first) {
            first = v;
            common = json_string_length(v);
            continue;
        }
        const char *a = json_string_value(first), *b = json_string_value(v);
        size_t k = 0;
        while (k < common && k < json_string_length(v) && a[k] == b[k])
            k++;
        common = k;
    }
    return first ? common : 0;
}

/* Lists candidates in columns under the line being edited. */
static void list_candidates(json_t *list)
{
    size_t i, width = 0, count = json_array_size(list);
    json_t *v;
    json_array_foreach(list, i, v)
        if (json_string_length(v) > width)
            width = json_string_length(v);
    int cols = 80;
    el_get(el, EL_GETTC, "co", &cols);
    size_t per_row = (size_t)cols / (width + 2);
    if (per_row == 0)
        per_row = 1;
    fputc('\n', stdout);
    json_array_foreach(list, i, v) {
        if (i == MAX_LISTED) {
            printf("\n... %zu more", count - MAX_LISTED);
            break;
        }
        const char *s = json_string_value(v);
        if ((i + 1) % per_row == 0 || i + 1 == count)
            printf("%s\n", s ? s : "");
        else
            printf("%-*s", (int)(width + 2), s ? s : "");
    }
    if (count > MAX_LISTED)
        fputc('\n', stdout);
    fflush(stdout);
}

/* Tab: completes the identifier under the cursor (dots and colons included)
 * as far as every candidate agrees, else lists them. At the start of a
 * continuation line it indents instead. */
static unsigned char complete_word(EditLine *e, int ch)
{
    (void)ch;
    const LineInfo *li = el_line(e);
    if (pending.len > 0 && is_blank(li->buffer, (size_t)(li->cursor - li->buffer)))
        return el_insertstr(e, "  ") < 0 ? CC_REFRESH_BEEP : CC_REFRESH;   /* indenting */
    const char *start = li->cursor;
    while (start > li->buffer && is_word_char(start[-1]))
        start--;
    size_t n = (size_t)(li->cursor - start);
    json_t *list = fetch_candidates(start, n);
    if (!list)
        return CC_REFRESH_BEEP;
    const char *first = json_string_value(json_array_get(list, 0));
    size_t common = common_prefix(list);
    unsigned char rc = CC_REFRESH;
    if (first && common > n && strncmp(first, start, n) == 0) {
        char add[common - n + 1];
        memcpy(add, first + n, common - n);
        add[common - n] = '\0';
        if (el_insertstr(e, add) < 0)
            rc = CC_REFRESH_BEEP;
    } else if (json_array_size(list) > 1) {
        list_candidates(list);
        rc = CC_REDISPLAY;
    }
    json_decref(list);
    return rc;
}

static void history_locate(void)
{
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (home && (size_t)snprintf(history_path, sizeof history_path, "%s/%s", home,
                                 HISTORY_FILE) >= sizeof history_path)
        history_path[0] = '\0';
}

/* libedit's history_save writes the file mode 0600: it may hold secrets. */
static void hist_save(void)
{
    HistEvent ev;
    if (hist && history_path[0])
        history(hist, &ev, H_SAVE, history_path);
}

static void hist_add(const char *line)
{
    HistEvent ev;
    history(hist, &ev, H_ENTER, line);
    hist_save();
}

/* atexit: the terminal back as it was, whatever ends the session. */
static void editor_end(void)
{
    if (el)
        el_end(el);
    el = NULL;
    if (hist)
        history_end(hist);
    hist = NULL;
}

static void editor_start(const char *argv0)
{
    HistEvent ev;
    hist = history_init();
    history(hist, &ev, H_SETSIZE, HISTORY_SIZE);
    history(hist, &ev, H_SETUNIQUE, 1);
    history_locate();
    if (history_path[0])
        history(hist, &ev, H_LOAD, history_path);

    el = el_init(argv0, stdin, stdout, stderr);
    if (!el) {
        fprintf(stderr, "moonpush admin: cannot set up the line editor\n");
        exit(2);
    }
    atexit(editor_end);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_SIGNAL, 1);        /* Ctrl-Z, fg, resizing: the terminal follows */
    el_set(el, EL_PROMPT, prompt);
    el_set(el, EL_HIST, history, hist);
    el_set(el, EL_ADDFN, "moonpush-complete", "complete the word under the cursor", complete_word);
    el_set(el, EL_BIND, "^I", "moonpush-complete", NULL);
    el_source(el, NULL);             /* ~/.editrc, if any */

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;       /* no SA_RESTART: a blocked read returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* One line of input; NULL at end of input (Ctrl-D). Ctrl-C cancels the
 * pending chunk and asks again. */
static const char *next_line(size_t *len)
{
    for (;;) {
        int n = 0;
        got_sigint = 0;
        const char *line = el_gets(el, &n);
        if (got_sigint) {
            got_sigint = 0;
            mp_buf_reset(&pending);
            fputc('\n', stdout);
            el_reset(el);
            continue;
        }
        if (!line || n <= 0)
            return NULL;
        size_t l = (size_t)n;
        while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            l--;
        *len = l;
        return line;
    }
}

static int run_interactive(const char *argv0)
{
    editor_start(argv0);
    size_t len;
    const char *line;
    while ((line = next_line(&len)) != NULL) {
        if (!is_blank(line, len)) {
            char *copy = strndup(line, len);
            if (copy)
                hist_add(copy);
            free(copy);
        } else if (pending.len == 0) {
            continue;
        }
        if (pending.len)
            buf_append(&pending, "\n", 1);
        buf_append(&pending, line, len);
        if (pending.len > MAX_LINE) {
            print_error(NULL, "chunk longer than 1 MiB, dropped");
            mp_buf_reset(&pending);
            continue;
        }
        if (eval_chunk(pending.s, pending.len, NULL) != EVAL_INCOMPLETE)
            mp_buf_reset(&pending);
    }
    fputc('\n', stdout);
    mp_buf_free(&pending);
    return 0;
}

/* ---- the subcommand ----------------------------------------------------- */

typedef struct mp_admin_args {
    const char *socket;
    const char *tcp;
    const char *token;
    char **exprs;
    int nexprs;
} mp_admin_args;

static int usage_error(const char *msg, const char *arg)
{
    fputs("moonpush admin: ", stderr);
    fprintf(stderr, msg, arg);
    fputs(" (moonpush admin --help)\n", stderr);
    return 2;
}

/* Fills a from argv; returns -1 after printing help, 2 on a usage error, 0. */
static int parse_args(int argc, char **argv, mp_admin_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int takes_value = strcmp(s, "-e") == 0 || strcmp(s, "--eval") == 0 ||
                          strcmp(s, "--tcp") == 0 || strcmp(s, "--token") == 0;
        if (takes_value && i + 1 >= argc)
            return usage_error("%s needs a value", s);
        if (strcmp(s, "-e") == 0 || strcmp(s, "--eval") == 0) {
            a->exprs[a->nexprs++] = argv[++i];
        } else if (strcmp(s, "--tcp") == 0) {
            a->tcp = argv[++i];
        } else if (strcmp(s, "--token") == 0) {
            a->token = argv[++i];
        } else if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            usage(stdout);
            return -1;
        } else if (s[0] == '-' && s[1] != '\0') {
            return usage_error("unknown option %s", s);
        } else if (a->socket) {
            return usage_error("one socket only (also got %s)", s);
        } else {
            a->socket = s;
        }
    }
    if (a->tcp && a->socket)
        return usage_error("%s", "give a socket or --tcp, not both");
    if (a->token && !a->tcp)
        return usage_error("%s", "--token goes with --tcp (the Unix socket needs none)");
    if (a->tcp && !a->token)
        a->token = getenv("MOONPUSH_ADMIN_TOKEN");
    if (a->tcp && (!a->token || !*a->token))
        return usage_error("%s", "--tcp needs --token (or $MOONPUSH_ADMIN_TOKEN)");
    if (!a->tcp && !a->socket) {
        const char *env = getenv("MOONPUSH_ADMIN_SOCKET");
        a->socket = env && *env ? env : DEFAULT_SOCKET;
    }
    return 0;
}

int mp_admin_client_main(int argc, char **argv)
{
    char *exprs[argc > 0 ? argc : 1];
    mp_admin_args a = { .exprs = exprs };
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;

    signal(SIGPIPE, SIG_IGN);
    rbuf = malloc(MAX_LINE + 1);
    if (!rbuf) {
        fprintf(stderr, "moonpush admin: out of memory\n");
        return 2;
    }
    conn_fd = a.tcp ? connect_tcp(a.tcp) : connect_unix(a.socket);
    if (a.tcp)
        send_token(a.token);

    if (a.nexprs > 0)
        rc = run_exprs(a.exprs, a.nexprs);
    else if (isatty(STDIN_FILENO)) {
        interactive = 1;
        rc = run_interactive(argc > 0 ? argv[0] : "moonpush");
    } else
        rc = run_script(stdin);
    close(conn_fd);
    free(rbuf);
    return rc;
}
