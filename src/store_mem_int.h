/* store_mem_int.h — what the pieces of the memory store share (private).
 *
 * The memory store (store.h, described at the top of store_mem.c) is split
 * by concern:
 *   store_mem.c         the operations on channels (next_seq, append, read,
 *                       flush, publish), sweep, stats and lifetime;
 *   store_mem_chan.c    channel states: lookup, LRU lists, max_channels,
 *                       the due heap the sweep pops, policies per channel;
 *   store_mem_ring.c    a channel's history: the ring of entries, expiry
 *                       (in order and by ttl heap), trim and append;
 *   store_mem_live.c    watches and live delivery (the v2 live handler);
 *   store_mem_cursor.c  device cursors, their LRU and ttl.
 * This header holds the state they all touch and the calls between them.
 * Nothing outside store_mem*.c includes it.
 */
#ifndef MP_STORE_MEM_INT_H
#define MP_STORE_MEM_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uthash.h>

#include "store.h"

/* ---- intrusive doubly linked lists ---------------------------------- */

typedef struct dlink { struct dlink *prev, *next; } dlink;
typedef struct dlist { dlink *head, *tail; } dlist;

#define CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void list_remove(dlist *l, dlink *n)
{
    if (n->prev) n->prev->next = n->next; else l->head = n->next;
    if (n->next) n->next->prev = n->prev; else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static inline void list_push_tail(dlist *l, dlink *n)
{
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail) l->tail->next = n; else l->head = n;
    l->tail = n;
}

static inline void list_move_tail(dlist *l, dlink *n)
{
    if (l->tail == n)
        return;
    list_remove(l, n);
    list_push_tail(l, n);
}

/* ---- state ------------------------------------------------------------ */

typedef struct entry {
    uint64_t seq;
    uint64_t published_ms;
    uint64_t expires_ms;       /* UINT64_MAX: never */
    mp_frame *frame;           /* NULL: a hole (released out of order) */
    char id[MP_STORE_ID_MAX];
    uint8_t by_ttl;            /* its own ttl, not max_age, sets its expiry */
} entry;

typedef struct ttl_node { uint64_t at, seq; } ttl_node;

typedef struct chan {
    UT_hash_handle hh;
    dlink lru;
    size_t due_idx;            /* place in the store's due heap */
    uint64_t due_ms;           /* when the sweep should look at it (maybe early) */
    uint64_t last_used;
    entry *ring;
    uint32_t head, count, cap;
    uint32_t live;             /* entries holding a frame */
    ttl_node *ttl;             /* min-heap of out-of-order expiries */
    uint32_t nttl, ttl_cap;
    uint64_t order_exp;        /* expiry of the latest in-order entry */
    uint64_t last_seq;         /* last seq handed out */
    uint64_t stored_seq;       /* last seq appended */
    uint64_t floor_seq;        /* last seq lost: trimmed, or aged out by max_age */
    uint32_t max_messages;
    uint64_t max_age_ms;
    unsigned policy_gen;
    char epoch[MP_STORE_EPOCH_MAX];
    char name[];
} chan;

typedef struct devrec {
    UT_hash_handle hh;
    dlist cursors;
    size_t keylen;
    char key[];
} devrec;

typedef struct cursor {
    UT_hash_handle hh;
    dlink lru;
    dlink in_dev;
    devrec *dev;
    uint64_t seq;
    uint64_t used;
    char epoch[MP_STORE_EPOCH_MAX];
    size_t keylen;
    char key[];
} cursor;

typedef struct mem_store {
    mp_store base;
    mp_store_config cfg;       /* cfg.policies unused: see policies below */
    mp_store_policies policies;
    unsigned policy_gen;
    chan *chans;
    dlist chan_lru[2];         /* [0]: retains no message, [1]: retains some */
    size_t nchans;
    chan **due;
    size_t ndue, due_cap;
    cursor *cursors;
    devrec *devices;
    dlist cursor_lru;
    char instance[16];
    uint64_t epoch_gen;
    mp_store_item *scratch;    /* read results; a nested read allocates its own */
    size_t scratch_cap;
    int reading;
    mp_store_stats stats;
    mp_store_live_handler live;
    struct watch *watches;     /* channels this node watches, by name */
    struct live_event *queue_head, *queue_tail;   /* live events waiting their turn */
    int delivering;            /* inside a live handler call */
} mem_store;


/* ---- small helpers ---------------------------------------------------- */

static inline uint64_t now_ms(mem_store *st) { return mp_store_clock_ms(st->cfg.clock_ms, st->cfg.clock_ud); }

static inline uint64_t add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static inline size_t name_len(const char *s)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, MP_STORE_NAME_MAX + 1);
    return n > MP_STORE_NAME_MAX ? 0 : n;
}

static inline int given(const char *epoch) { return epoch && *epoch; }

/* The i-th entry of the ring, oldest first. */
static inline entry *mem_at(const chan *ch, uint32_t i)
{
    uint32_t k = ch->head + i;
    return &ch->ring[k >= ch->cap ? k - ch->cap : k];
}

/* ---- channel states (store_mem_chan.c) ---------------------------------- */

void mem_refresh_policy(mem_store *st, chan *ch);
void mem_reschedule(mem_store *st, chan *ch);
void mem_new_epoch(mem_store *st, chan *ch);
chan *mem_find_chan(mem_store *st, const char *name, size_t len);
void mem_touch_chan(mem_store *st, chan *ch, uint64_t now);
void mem_free_chan(mem_store *st, chan *ch);
chan *mem_get_or_create_chan(mem_store *st, const char *name, size_t len, uint64_t now, int *status);

/* ---- history ring (store_mem_ring.c) ------------------------------------ */

uint32_t mem_find_pos(const chan *ch, uint64_t seq);
void mem_ring_release_if_empty(chan *ch);
void mem_release(mem_store *st, chan *ch, entry *e);
size_t mem_expire_channel(mem_store *st, chan *ch, uint64_t now);
int mem_append_entry(mem_store *st, chan *ch, const mp_store_put *m, uint64_t now, uint64_t published_ms);

/* ---- watches and live delivery (store_mem_live.c) ------------------------ */

void mem_drain_live(mem_store *st);
void mem_queue_flush_reset(mem_store *st, const chan *ch);
void mem_publish_live(mem_store *st, const chan *ch, uint64_t seq, const char *id, const char *kinds,
                      uint64_t published_ms, mp_frame *f);
void mem_watch(mp_store *base, const char *channel, mp_store_watch_cb cb, void *ud);
void mem_unwatch(mp_store *base, const char *channel);
void mem_set_live_handler(mp_store *base, const mp_store_live_handler *h);
/* Frees the watches and the events still queued (mem_free). */
void mem_live_free(mem_store *st);

/* ---- device cursors (store_mem_cursor.c) --------------------------------- */

void mem_cursor_get(mp_store *base, const char *user, const char *device, const char *channel,
                    mp_store_cursor_cb cb, void *ud);
void mem_cursor_advance(mp_store *base, const char *user, const char *device, const char *channel,
                        uint64_t seq, const char *epoch, mp_store_cursor_cb cb, void *ud);
void mem_cursor_delete_device(mp_store *base, const char *user, const char *device,
                              mp_store_done_cb cb, void *ud);
/* Frees the cursors past cursor_ttl_ms; returns how many. */
size_t mem_cursor_sweep(mem_store *st, uint64_t now);
/* Frees every cursor (mem_free). */
void mem_cursor_free_all(mem_store *st);

#endif
