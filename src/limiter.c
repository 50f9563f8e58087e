/* limiter.c — see limiter.h. A uthash table plus an LRU list threaded
 * through the buckets (most recent at the tail). */
#include "limiter.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct bucket {
    UT_hash_handle hh;
    struct bucket *prev, *next;   /* LRU list */
    double tokens;
    double last;                  /* seconds, when tokens was computed */
    char key[];
} bucket;

static bucket *table, *lru_head, *lru_tail;

static void lru_unlink(bucket *b)
{
    if (b->prev) b->prev->next = b->next; else lru_head = b->next;
    if (b->next) b->next->prev = b->prev; else lru_tail = b->prev;
    b->prev = b->next = NULL;
}

static void lru_append(bucket *b)
{
    b->prev = lru_tail;
    b->next = NULL;
    if (lru_tail) lru_tail->next = b; else lru_head = b;
    lru_tail = b;
}

static void evict_oldest(void)
{
    bucket *b = lru_head;
    lru_unlink(b);
    HASH_DEL(table, b);
    free(b);
}

static bucket *bucket_for(const char *key, size_t keylen, double burst, double now)
{
    bucket *b = NULL;
    HASH_FIND(hh, table, key, keylen, b);
    if (b) {
        lru_unlink(b);
        lru_append(b);
        return b;
    }
    if (HASH_COUNT(table) >= MP_LIMITER_MAX_KEYS)
        evict_oldest();
    b = malloc(sizeof *b + keylen + 1);
    if (!b)
        return NULL;
    memcpy(b->key, key, keylen);
    b->key[keylen] = '\0';
    b->tokens = burst;
    b->last = now;
    b->prev = b->next = NULL;
    HASH_ADD(hh, table, key[0], keylen, b);
    lru_append(b);
    return b;
}

int mp_limiter_take(const char *key, size_t keylen, double rate, double burst, double now, double *retry_after)
{
    if (!(rate > 0) || !(burst >= 1) || keylen == 0 || keylen > MP_LIMITER_MAX_KEY_LEN)
        return -1;
    bucket *b = bucket_for(key, keylen, burst, now);
    if (!b) {
        *retry_after = 0;
        return 1;   /* out of memory: do not turn it into an outage */
    }
    if (now > b->last) {
        b->tokens += (now - b->last) * rate;
        b->last = now;
    }
    if (b->tokens > burst)
        b->tokens = burst;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        *retry_after = 0;
        return 1;
    }
    *retry_after = (1.0 - b->tokens) / rate;
    return 0;
}

size_t mp_limiter_count(void) { return HASH_COUNT(table); }

void mp_limiter_free_all(void)
{
    while (lru_head)
        evict_oldest();
}
