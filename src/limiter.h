/* limiter.h — token buckets keyed by string, for moonpush.limit().
 *
 * One bucket per key: `rate` tokens per second, up to `burst`. A check refills
 * by elapsed time and takes one token: O(1). The table is bounded: past
 * MP_LIMITER_MAX_KEYS the least recently used bucket is evicted (an evicted
 * key starts again with a full bucket, which errs towards allowing). Buckets
 * untouched for longer than it takes them to refill fully are equivalent to
 * fresh ones, so eviction of those loses nothing.
 */
#ifndef MP_LIMITER_H
#define MP_LIMITER_H

#include <stddef.h>

#define MP_LIMITER_MAX_KEYS 100000
#define MP_LIMITER_MAX_KEY_LEN 256

/* Takes a token from key's bucket at time now (seconds). Returns 1 if
 * allowed; 0 if not, with *retry_after set to the seconds until a token is
 * there. Returns -1 for bad arguments (rate or burst <= 0, key too long). */
int mp_limiter_take(const char *key, size_t keylen, double rate, double burst, double now, double *retry_after);

size_t mp_limiter_count(void);
void mp_limiter_free_all(void);

#endif
