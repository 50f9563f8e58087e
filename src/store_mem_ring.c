/* store_mem_ring.c — a memory store channel's history (see store_mem.c).
 *
 * Owns the ring of entries in seq order, the per-channel ttl heap of
 * out-of-order expiries, expiring, trimming for max_messages and appending
 * one message (with the max_bytes check). The top of store_mem.c explains
 * why expiry needs no scan.
 */
#include <stdlib.h>

#include "store_mem_int.h"

/* ---- the per-channel ttl heap ----------------------------------------- */

static void ttl_sift_up(ttl_node *h, uint32_t i)
{
    ttl_node n = h[i];
    while (i > 0 && h[(i - 1) / 2].at > n.at) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = n;
}

static ttl_node ttl_pop(chan *ch)
{
    ttl_node top = ch->ttl[0], n = ch->ttl[--ch->nttl];
    uint32_t i = 0;
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = l;
        if (l >= ch->nttl)
            break;
        if (r < ch->nttl && ch->ttl[r].at < ch->ttl[l].at)
            m = r;
        if (ch->ttl[m].at >= n.at)
            break;
        ch->ttl[i] = ch->ttl[m];
        i = m;
    }
    if (ch->nttl)
        ch->ttl[i] = n;
    return top;
}


/* The position of the first entry with seq >= seq (count if none). */
uint32_t mem_find_pos(const chan *ch, uint64_t seq)
{
    uint32_t lo = 0, hi = ch->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (mem_at(ch, mid)->seq < seq) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* Slots a channel may use: its messages plus as many holes, so that
 * compacting a full ring always frees at least half of it. */
static uint32_t slot_limit(const chan *ch) { return 2 * ch->max_messages; }

static int ring_grow(chan *ch)
{
    uint32_t cap = ch->cap ? ch->cap * 2 : 8;
    if (cap > slot_limit(ch))
        cap = slot_limit(ch);
    if (cap <= ch->count)
        cap = ch->count + 1;
    entry *r = malloc((size_t)cap * sizeof *r);
    if (!r)
        return -1;
    for (uint32_t i = 0; i < ch->count; i++)
        r[i] = *mem_at(ch, i);
    free(ch->ring);
    ch->ring = r;
    ch->cap = cap;
    ch->head = 0;
    return 0;
}

/* Squeezes the holes out of the ring, in place (order kept). */
static void ring_compact(chan *ch)
{
    uint32_t w = 0;
    for (uint32_t r = 0; r < ch->count; r++) {
        entry *e = mem_at(ch, r);
        if (e->frame) {
            if (w != r)
                *mem_at(ch, w) = *e;
            w++;
        }
    }
    ch->count = w;
}

/* Room for one more entry: grow up to slot_limit, then compact. */
static int ring_make_room(chan *ch)
{
    if (ch->count < ch->cap)
        return 0;
    if (ch->cap < slot_limit(ch) || ch->live == ch->count)
        return ring_grow(ch);
    ring_compact(ch);
    return 0;
}

/* Gives the memory of an empty channel back. */
void mem_ring_release_if_empty(chan *ch)
{
    if (ch->count)
        return;
    free(ch->ring);
    free(ch->ttl);
    ch->ring = NULL;
    ch->ttl = NULL;
    ch->cap = ch->head = ch->nttl = ch->ttl_cap = 0;
}

/* Drops the entry's frame; the slot stays as a hole until it is popped. */
void mem_release(mem_store *st, chan *ch, entry *e)
{
    st->stats.bytes -= mp_frame_size(e->frame);
    st->stats.messages--;
    mp_frame_unref(e->frame);
    e->frame = NULL;
    if (--ch->live == 0) {
        st->stats.channels_with_history--;
        list_remove(&st->chan_lru[1], &ch->lru);
        list_push_tail(&st->chan_lru[0], &ch->lru);
    }
}

enum { POP_TRIM, POP_EXPIRE };

/* Pops the oldest entry. A message still held is counted as trimmed or
 * expired, and moves first_seq unless it ran out its own ttl (the publisher
 * said it was worthless by then: not a loss). A hole moves nothing.
 * Returns 1 if a frame was released. */
static int pop_front(mem_store *st, chan *ch, int why)
{
    entry *e = mem_at(ch, 0);
    int had = e->frame != NULL;
    if (had) {
        mem_release(st, ch, e);
        if (why == POP_TRIM) {
            st->stats.trimmed++;
            ch->floor_seq = e->seq;
        } else {
            st->stats.expired++;
            if (!e->by_ttl)
                ch->floor_seq = e->seq;
        }
    }
    ch->head = ch->head + 1 == ch->cap ? 0 : ch->head + 1;
    if (--ch->count == 0) {
        ch->head = 0;
        ch->nttl = 0;          /* every node left refers to a popped entry */
        ch->order_exp = 0;
    }
    return had;
}

/* Re-derives which entries are out of order, dropping stale heap nodes. */
static void ttl_rebuild(chan *ch)
{
    ch->nttl = 0;
    ch->order_exp = 0;
    for (uint32_t i = 0; i < ch->count; i++) {
        entry *e = mem_at(ch, i);
        if (!e->frame)
            continue;
        if (e->expires_ms >= ch->order_exp) {
            ch->order_exp = e->expires_ms;
        } else {
            ch->ttl[ch->nttl] = (ttl_node){ e->expires_ms, e->seq };
            ttl_sift_up(ch->ttl, ch->nttl++);
        }
    }
}

/* Files the newest entry as in order, or in the ttl heap. A heap that cannot
 * grow only delays the release: reads skip expired entries regardless, and
 * the front pops it in time. */
static void classify_newest(chan *ch, const entry *e)
{
    if (e->expires_ms >= ch->order_exp) {
        ch->order_exp = e->expires_ms;
        return;
    }
    if (ch->nttl >= 2 * ch->count + 16) {
        ttl_rebuild(ch);       /* files e too */
        return;
    }
    if (ch->nttl == ch->ttl_cap) {
        uint32_t cap = ch->ttl_cap ? ch->ttl_cap * 2 : 8;
        ttl_node *t = realloc(ch->ttl, (size_t)cap * sizeof *t);
        if (!t)
            return;
        ch->ttl = t;
        ch->ttl_cap = cap;
    }
    ch->ttl[ch->nttl] = (ttl_node){ e->expires_ms, e->seq };
    ttl_sift_up(ch->ttl, ch->nttl++);
}

/* Releases every message of ch past its expiry. Returns how many. */
size_t mem_expire_channel(mem_store *st, chan *ch, uint64_t now)
{
    size_t n = 0;
    while (ch->count && (!mem_at(ch, 0)->frame || mem_at(ch, 0)->expires_ms <= now))
        n += (size_t)pop_front(st, ch, POP_EXPIRE);
    while (ch->nttl && ch->ttl[0].at <= now) {
        ttl_node t = ttl_pop(ch);
        uint32_t i = mem_find_pos(ch, t.seq);
        entry *e = i < ch->count ? mem_at(ch, i) : NULL;
        if (e && e->seq == t.seq && e->frame) {
            mem_release(st, ch, e);
            st->stats.expired++;
            n++;
        }
    }
    while (ch->count && !mem_at(ch, 0)->frame)
        pop_front(st, ch, POP_EXPIRE);
    mem_ring_release_if_empty(ch);
    return n;
}

/* Bytes the routine trim before an append will release: holes and, while
 * the channel is at max_messages, its oldest messages (see append_entry). */
static size_t trim_releases(chan *ch)
{
    size_t bytes = 0;
    uint32_t live = ch->live;
    for (uint32_t i = 0; i < ch->count; i++) {
        entry *e = mem_at(ch, i);
        if (e->frame) {
            if (live < ch->max_messages)
                break;
            bytes += mp_frame_size(e->frame);
            live--;
        }
    }
    return bytes;
}

int mem_append_entry(mem_store *st, chan *ch, const mp_store_put *m, uint64_t now, uint64_t published_ms)
{
    uint64_t life = ch->max_age_ms ? ch->max_age_ms : UINT64_MAX;
    int by_ttl = m->ttl_ms && m->ttl_ms < life;
    if (by_ttl)
        life = m->ttl_ms;
    if (ch->max_messages && st->cfg.max_bytes &&
        st->stats.bytes - trim_releases(ch) + mp_frame_size(m->frame) > st->cfg.max_bytes)
        return MP_STORE_EFULL;
    while (ch->count && (ch->live >= ch->max_messages || !mem_at(ch, 0)->frame))
        pop_front(st, ch, POP_TRIM);
    if (!ch->max_messages)
        return MP_STORE_OK;    /* this policy keeps no history */
    if (ring_make_room(ch) < 0)
        return MP_STORE_ENOMEM;
    entry *e = mem_at(ch, ch->count++);
    e->seq = m->seq;
    e->published_ms = published_ms;
    e->expires_ms = add_sat(now, life);
    e->frame = mp_frame_ref(m->frame);
    strcpy(e->id, m->id);
    e->by_ttl = (uint8_t)by_ttl;
    if (ch->live++ == 0) {
        st->stats.channels_with_history++;
        list_remove(&st->chan_lru[0], &ch->lru);
        list_push_tail(&st->chan_lru[1], &ch->lru);
    }
    st->stats.messages++;
    st->stats.bytes += mp_frame_size(m->frame);
    classify_newest(ch, e);
    return MP_STORE_OK;
}
