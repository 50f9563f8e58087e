/* buf.c — see buf.h. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 256

static int fail(mp_buf *b)
{
    b->failed = 1;
    return -1;
}

/* Room for `extra` more bytes plus the NUL. */
static int reserve(mp_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (extra > (size_t)-1 / 2 - b->len)
        return fail(b);   /* the doubling below would overflow */
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : MIN_CAP;
    while (cap < need)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s)
        return fail(b);
    b->s = s;
    b->cap = cap;
    return 0;
}

int mp_buf_append(mp_buf *b, const void *p, size_t n)
{
    if (reserve(b, n) < 0)
        return -1;
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

/* Formats into the room left, and again only when it did not fit. */
int mp_buf_printf(mp_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return -1;
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(room ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return fail(b);
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (reserve(b, (size_t)n) < 0)
            return -1;
    }
}

void mp_buf_reset(mp_buf *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->s)
        b->s[0] = '\0';
}

void mp_buf_free(mp_buf *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}
