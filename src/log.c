/* log.c — see log.h. A line is built in one bounded stack buffer and
 * written with one write(2), so lines never interleave or tear. */
#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

int mp_log_level = MP_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};
static int log_fd = STDERR_FILENO;
static int log_json;
static char log_path[256];

#define LINE_MAX_BYTES 2048

/* Appends s as a JSON string body (escaped) to out[*n], bounded by cap. */
static void json_escape(char *out, size_t *n, size_t cap, const char *s, size_t len)
{
    for (size_t i = 0; i < len && *n + 7 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)ch;
        } else if (ch < 0x20) {
            *n += (size_t)snprintf(out + *n, cap - *n, "\\u%04x", ch);
        } else {
            out[(*n)++] = (char)ch;
        }
    }
}

const char *mp_log_q(const char *s)
{
    static char bufs[4][512];
    static int next;
    char *out = bufs[next];
    next = (next + 1) % 4;
    size_t n = 0, cap = sizeof bufs[0];
    for (; s && *s && n + 3 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch == '\n' || ch == '\t') {
            out[n++] = '\\';
            out[n++] = ch == '\n' ? 'n' : 't';
        } else {
            out[n++] = ch < 0x20 ? ' ' : (char)ch;
        }
    }
    out[n] = '\0';
    return out;
}

/* Turns our logfmt tail (key=value key="quoted value") into JSON members. */
static void tail_to_json(char *out, size_t *n, size_t cap, const char *tail)
{
    const char *p = tail;
    while (*p && *n + 16 < cap) {
        while (*p == ' ')
            p++;
        const char *eq = strchr(p, '=');
        if (!eq)
            break;
        out[(*n)++] = ',';
        out[(*n)++] = '"';
        json_escape(out, n, cap, p, (size_t)(eq - p));
        out[(*n)++] = '"';
        out[(*n)++] = ':';
        out[(*n)++] = '"';
        const char *v = eq + 1, *end;
        if (*v == '"') {
            /* A quoted value: undo mp_log_q's escapes, then escape for JSON. */
            char raw[LINE_MAX_BYTES];
            size_t r = 0;
            for (end = v + 1; *end && *end != '"' && r < sizeof raw - 1; end++) {
                if (*end == '\\' && end[1]) {
                    end++;
                    raw[r++] = *end == 'n' ? '\n' : *end == 't' ? '\t' : *end;
                } else {
                    raw[r++] = *end;
                }
            }
            json_escape(out, n, cap, raw, r);
            p = *end ? end + 1 : end;
        } else {
            end = strchr(v, ' ');
            if (!end)
                end = v + strlen(v);
            json_escape(out, n, cap, v, (size_t)(end - v));
            p = end;
        }
        out[(*n)++] = '"';
    }
}

void mp_log(int level, const char *msg, const char *fmt, ...)
{
    if (level < mp_log_level)
        return;
    char tail[LINE_MAX_BYTES] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tail, sizeof tail, fmt, ap);
        va_end(ap);
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    char line[LINE_MAX_BYTES + 256];
    size_t n = 0;
    if (log_json) {
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":%lld,\"level\":\"%s\",\"msg\":\"", ms, level_names[level]);
        json_escape(line, &n, sizeof line - 4, msg, strlen(msg));
        line[n++] = '"';
        tail_to_json(line, &n, sizeof line - 4, tail);
        line[n++] = '}';
    } else {
        int k = snprintf(line, sizeof line, "ts=%lld level=%s msg=\"%s\"%s%s", ms, level_names[level], msg,
                         tail[0] ? " " : "", tail);
        n = k < 0 ? 0 : (size_t)k;
        if (n > sizeof line - 2)
            n = sizeof line - 2;   /* truncated: still one line */
    }
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w;
}

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int mp_log_configure(int json, const char *path)
{
    log_json = json;
    if (!path || !path[0]) {
        if (log_fd != STDERR_FILENO)
            close(log_fd);
        log_fd = STDERR_FILENO;
        log_path[0] = '\0';
        return 0;
    }
    int fd = open_log(path);
    if (fd < 0)
        return -1;
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    snprintf(log_path, sizeof log_path, "%s", path);
    return 0;
}

int mp_log_reopen(void)
{
    if (!log_path[0])
        return 0;
    int fd = open_log(log_path);
    if (fd < 0)
        return -1;
    close(log_fd);
    log_fd = fd;
    return 0;
}
