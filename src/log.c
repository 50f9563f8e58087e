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

/* The keys of a format whose whole value is one numeric conversion
 * (`status=%d`, `ms=%.3f`, `bytes=%zu`): their values are numbers in JSON.
 * The type comes from the format, never from the value, so a string that
 * happens to look like a number (a user id "123") stays a string, and
 * `addr=%s:%d` or `target=conn:%llu` stay strings too. Hex (%x) is an id. */
#define NUM_KEYS_MAX 16
typedef struct num_keys {
    int n;
    struct { const char *at; size_t len; } key[NUM_KEYS_MAX];
} num_keys;

/* Length of the numeric conversion at fmt ("%d", "%.2f", "%llu", ...), or 0. */
static size_t numeric_conversion(const char *fmt)
{
    if (fmt[0] != '%')
        return 0;
    size_t i = 1 + strspn(fmt + 1, "-+ #0123456789.");   /* flags, width, precision */
    i += strspn(fmt + i, "hlLqjzt");                      /* length modifiers */
    return fmt[i] && strchr("diufFeEgG", fmt[i]) ? i + 1 : 0;
}

static void find_num_keys(const char *fmt, num_keys *k)
{
    k->n = 0;
    for (const char *p = fmt; p && *p && k->n < NUM_KEYS_MAX;) {
        p += strspn(p, " ");
        size_t klen = strcspn(p, "= ");
        if (p[klen] != '=') {
            p += klen;
            continue;
        }
        const char *v = p + klen + 1;
        size_t vlen = strcspn(v, " ");
        if (vlen > 0 && numeric_conversion(v) == vlen) {
            k->key[k->n].at = p;
            k->key[k->n++].len = klen;
        }
        p = v + vlen;
    }
}

static int is_num_key(const num_keys *k, const char *key, size_t len)
{
    for (int i = 0; i < k->n; i++)
        if (k->key[i].len == len && memcmp(k->key[i].at, key, len) == 0)
            return 1;
    return 0;
}

/* 1 if s[0..len) is a JSON number (what %d/%f print, except inf and nan). */
static int json_number(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    size_t digits = strspn(s + i, "0123456789");
    if (digits == 0 || (digits > 1 && s[i] == '0'))
        return 0;
    i += digits;
    if (i < len && s[i] == '.') {
        size_t frac = strspn(s + i + 1, "0123456789");
        if (frac == 0)
            return 0;
        i += 1 + frac;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t exp = strspn(s + i, "0123456789");
        if (exp == 0)
            return 0;
        i += exp;
    }
    return i == len;
}

/* Turns our logfmt tail (key=value key="quoted value") into JSON members:
 * the values of the keys in nums are numbers, every other one a string. */
static void tail_to_json(char *out, size_t *n, size_t cap, const char *tail, const num_keys *nums)
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
        const char *v = eq + 1, *end;
        size_t vlen = strcspn(v, " ");
        if (*v != '"' && *n + vlen + 16 < cap && is_num_key(nums, p, (size_t)(eq - p)) && json_number(v, vlen)) {
            memcpy(out + *n, v, vlen);
            *n += vlen;
            p = v + vlen;
            continue;
        }
        out[(*n)++] = '"';
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
        num_keys nums;
        find_num_keys(fmt, &nums);
        tail_to_json(line, &n, sizeof line - 4, tail, &nums);
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
