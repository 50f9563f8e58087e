/* buf.h — a growable byte buffer, for answers built piece by piece (the
 * /history and /metrics bodies, admin lines in and out).
 *
 * Appends grow the storage by doubling. The first failure (out of memory)
 * is sticky: the caller appends freely and checks `failed` once at the end.
 * After a successful append the contents are NUL-terminated. Bounds are the
 * caller's (each user knows what its limit means: an admin line, a /history
 * page). The buffer owns `s`; mp_buf_free releases it. A zeroed mp_buf is
 * empty.
 */
#ifndef MP_BUF_H
#define MP_BUF_H

#include <stddef.h>

typedef struct mp_buf {
    char *s;
    size_t len, cap;
    int failed;
} mp_buf;

/* Appends n bytes. Returns 0, or -1 (and sets failed) when out of memory;
 * nothing is appended after a failure. */
int mp_buf_append(mp_buf *b, const void *p, size_t n);

/* Appends printf-formatted text; returns as mp_buf_append. */
int mp_buf_printf(mp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Empties it (keeping the storage) and clears failed. */
void mp_buf_reset(mp_buf *b);

/* Frees the storage; the buffer is empty again. */
void mp_buf_free(mp_buf *b);

#endif
