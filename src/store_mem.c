/* store_mem.c — the memory store (see store.h).
 *
 * Channels: a uthash table by name. Each channel keeps its history in a ring
 * array of entries in seq order, released when the channel empties; an entry
 * (72 bytes) holds the message's fields and one frame reference, so storing a
 * message allocates nothing but (now and then) the ring itself. max_messages
 * counts live messages; a message released early by its own ttl leaves a
 * hole, so the ring grows up to 2 x max_messages slots and, when full, is
 * compacted in place (at least half of it is holes then: O(1) amortised).
 *
 * Expiry without scanning:
 *   - Entries whose expiry is not earlier than every entry before them
 *     ("in order": the usual case, same max_age for all) expire from the
 *     front of the ring, so popping the front while it is expired finds all
 *     of them.
 *   - The others (a short per-message ttl, or a policy reload shortening
 *     max_age) also go into a small per-channel min-heap of (expiry, seq);
 *     when one comes due its entry is found by binary search on seq and its
 *     frame released, leaving a hole the front pops later. Heap nodes whose
 *     entry was trimmed first stay until they come due; once they outnumber
 *     the ring the heap is rebuilt from the ring, so it stays O(ring).
 *     Finding the entry works across compaction: it goes by seq.
 *   - Channels sit in a min-heap ordered by when they next need attention
 *     (their earliest expiry; for a channel with no message, when it becomes
 *     idle). The sweep pops only due channels. Using a channel does not
 *     reorder the heap: an idle deadline that moved later is found at its old
 *     place, recomputed and pushed down — early, never late.
 * Reads expire the channel first and also skip any entry past its expiry, so
 * they never depend on the sweep having run.
 *
 * Limits never drop a stored message. A channel state is one of two LRU
 * lists (intrusive, O(1) touch): channels that retain messages, and channels
 * that retain none (only a seq and an epoch). Past max_channels, a new
 * channel replaces the least recently used of the second list — dropping a
 * state that holds nothing costs a client at most a `reset` to an empty
 * history — and when that list is empty the new channel is refused
 * (MP_STORE_ECHANNELS): publishing to many new names can never evict another
 * channel's history. Likewise past max_bytes an append is refused
 * (MP_STORE_EFULL) rather than another channel's messages dropped. Another
 * LRU list orders cursors for max_cursors / cursor_ttl_ms. Cursors
 * are in a uthash table by key and, for "delete all of a device", in a list
 * per device (a small table of devices by user + device).
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "envelope.h"

/* ---- intrusive doubly linked lists ---------------------------------- */

typedef struct dlink { struct dlink *prev, *next; } dlink;
typedef struct dlist { dlink *head, *tail; } dlist;

#define CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static void list_remove(dlist *l, dlink *n)
{
    if (n->prev) n->prev->next = n->next; else l->head = n->next;
    if (n->next) n->next->prev = n->prev; else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void list_push_tail(dlist *l, dlink *n)
{
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail) l->tail->next = n; else l->head = n;
    l->tail = n;
}

static void list_move_tail(dlist *l, dlink *n)
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

static const mp_store_ops mem_ops;

/* ---- small helpers ---------------------------------------------------- */

static uint64_t now_ms(mem_store *st) { return mp_store_clock_ms(st->cfg.clock_ms, st->cfg.clock_ud); }

static uint64_t add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static size_t name_len(const char *s)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, MP_STORE_NAME_MAX + 1);
    return n > MP_STORE_NAME_MAX ? 0 : n;
}

static int given(const char *epoch) { return epoch && *epoch; }

/* ---- policies --------------------------------------------------------- */

static int mem_set_policies(mp_store *base, const mp_store_policy *p, size_t n, const mp_store_policy *def)
{
    mem_store *st = (mem_store *)base;
    int status = mp_store_policies_set(&st->policies, p, n, def);
    if (status == MP_STORE_OK)
        st->policy_gen++;
    return status;
}

static void refresh_policy(mem_store *st, chan *ch)
{
    if (ch->policy_gen == st->policy_gen)
        return;
    const mp_store_policy *p = mp_store_policies_match(&st->policies, ch->name);
    ch->max_messages = p->max_messages;
    ch->max_age_ms = p->max_age_ms;
    ch->policy_gen = st->policy_gen;
}

/* ---- the due heap of channels ----------------------------------------- */

static void due_place(mem_store *st, size_t i, chan *ch)
{
    st->due[i] = ch;
    ch->due_idx = i;
}

static void due_up(mem_store *st, size_t i)
{
    chan *ch = st->due[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (st->due[parent]->due_ms <= ch->due_ms)
            break;
        due_place(st, i, st->due[parent]);
        i = parent;
    }
    due_place(st, i, ch);
}

static void due_down(mem_store *st, size_t i)
{
    chan *ch = st->due[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = ch->due_ms;
        if (l < st->ndue && st->due[l]->due_ms < best) { m = l; best = st->due[l]->due_ms; }
        if (r < st->ndue && st->due[r]->due_ms < best) m = r;
        if (m == i)
            break;
        due_place(st, i, st->due[m]);
        i = m;
    }
    due_place(st, i, ch);
}

static int due_insert(mem_store *st, chan *ch)
{
    if (st->ndue == st->due_cap) {
        size_t cap = st->due_cap ? st->due_cap * 2 : 16;
        chan **d = realloc(st->due, cap * sizeof *d);
        if (!d)
            return -1;
        st->due = d;
        st->due_cap = cap;
    }
    due_place(st, st->ndue++, ch);
    due_up(st, ch->due_idx);
    return 0;
}

static void due_remove(mem_store *st, chan *ch)
{
    size_t i = ch->due_idx;
    chan *last = st->due[--st->ndue];
    if (last == ch)
        return;
    due_place(st, i, last);
    due_up(st, i);
    due_down(st, last->due_idx);
}

/* When the channel next needs the sweep: its earliest expiry, or, with no
 * message left, when it turns idle. */
static uint64_t channel_due(const mem_store *st, const chan *ch)
{
    if (ch->count == 0)
        return add_sat(ch->last_used, st->cfg.channel_idle_ms);
    uint64_t due = ch->ring[ch->head].expires_ms;
    if (ch->nttl && ch->ttl[0].at < due)
        due = ch->ttl[0].at;
    return due;
}

static void reschedule(mem_store *st, chan *ch)
{
    uint64_t old = ch->due_ms;
    ch->due_ms = channel_due(st, ch);
    if (ch->due_ms < old)
        due_up(st, ch->due_idx);
    else
        due_down(st, ch->due_idx);
}

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

/* ---- the ring ---------------------------------------------------------- */

static entry *at(const chan *ch, uint32_t i)
{
    uint32_t k = ch->head + i;
    return &ch->ring[k >= ch->cap ? k - ch->cap : k];
}

/* The position of the first entry with seq >= seq (count if none). */
static uint32_t find_pos(const chan *ch, uint64_t seq)
{
    uint32_t lo = 0, hi = ch->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (at(ch, mid)->seq < seq) lo = mid + 1; else hi = mid;
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
        r[i] = *at(ch, i);
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
        entry *e = at(ch, r);
        if (e->frame) {
            if (w != r)
                *at(ch, w) = *e;
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
static void ring_release_if_empty(chan *ch)
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
static void release(mem_store *st, chan *ch, entry *e)
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
    entry *e = at(ch, 0);
    int had = e->frame != NULL;
    if (had) {
        release(st, ch, e);
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
        entry *e = at(ch, i);
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
static size_t expire_channel(mem_store *st, chan *ch, uint64_t now)
{
    size_t n = 0;
    while (ch->count && (!at(ch, 0)->frame || at(ch, 0)->expires_ms <= now))
        n += (size_t)pop_front(st, ch, POP_EXPIRE);
    while (ch->nttl && ch->ttl[0].at <= now) {
        ttl_node t = ttl_pop(ch);
        uint32_t i = find_pos(ch, t.seq);
        entry *e = i < ch->count ? at(ch, i) : NULL;
        if (e && e->seq == t.seq && e->frame) {
            release(st, ch, e);
            st->stats.expired++;
            n++;
        }
    }
    while (ch->count && !at(ch, 0)->frame)
        pop_front(st, ch, POP_EXPIRE);
    ring_release_if_empty(ch);
    return n;
}

/* ---- channels ---------------------------------------------------------- */

static void new_epoch(mem_store *st, chan *ch)
{
    snprintf(ch->epoch, sizeof ch->epoch, "%s-%llx", st->instance, (unsigned long long)++st->epoch_gen);
}

static chan *find_chan(mem_store *st, const char *name, size_t len)
{
    chan *ch = NULL;
    HASH_FIND(hh, st->chans, name, len, ch);
    return ch;
}

static dlist *lru_of(mem_store *st, const chan *ch)
{
    return &st->chan_lru[ch->live > 0];
}

static void touch_chan(mem_store *st, chan *ch, uint64_t now)
{
    ch->last_used = now;
    list_move_tail(lru_of(st, ch), &ch->lru);
}

static void free_chan(mem_store *st, chan *ch)
{
    for (uint32_t i = 0; i < ch->count; i++) {
        entry *e = at(ch, i);
        if (e->frame)
            release(st, ch, e);
    }
    free(ch->ring);
    free(ch->ttl);
    HASH_DEL(st->chans, ch);
    list_remove(lru_of(st, ch), &ch->lru);
    due_remove(st, ch);
    st->nchans--;
    free(ch);
}

static void evict_chan(mem_store *st, chan *ch)
{
    st->stats.evicted_channels++;
    free_chan(st, ch);
}

/* The channel's state, created if absent. Past max_channels the least
 * recently used state that retains no message makes room; if every state
 * retains messages the new one is refused: *status MP_STORE_ECHANNELS. */
static chan *get_or_create_chan(mem_store *st, const char *name, size_t len, uint64_t now, int *status)
{
    chan *ch = find_chan(st, name, len);
    if (ch)
        return ch;
    if (st->nchans >= st->cfg.max_channels) {
        if (!st->chan_lru[0].head) {
            *status = MP_STORE_ECHANNELS;
            return NULL;
        }
        evict_chan(st, CONTAINER(st->chan_lru[0].head, chan, lru));
    }
    *status = MP_STORE_ENOMEM;
    ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
        return NULL;
    memcpy(ch->name, name, len + 1);
    ch->last_used = now;
    ch->policy_gen = st->policy_gen - 1;
    refresh_policy(st, ch);
    new_epoch(st, ch);
    ch->due_ms = channel_due(st, ch);
    if (due_insert(st, ch) < 0) {
        free(ch);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, st->chans, ch->name, len, ch);
    list_push_tail(&st->chan_lru[0], &ch->lru);
    st->nchans++;
    *status = MP_STORE_OK;
    return ch;
}

/* Bytes the routine trim before an append will release: holes and, while
 * the channel is at max_messages, its oldest messages (see append_entry). */
static size_t trim_releases(chan *ch)
{
    size_t bytes = 0;
    uint32_t live = ch->live;
    for (uint32_t i = 0; i < ch->count; i++) {
        entry *e = at(ch, i);
        if (e->frame) {
            if (live < ch->max_messages)
                break;
            bytes += mp_frame_size(e->frame);
            live--;
        }
    }
    return bytes;
}

/* ---- live delivery (v2) ------------------------------------------------
 *
 * A watch remembers the position this node was last told for its channel
 * (epoch, seq), so a message from another epoch (the channel was flushed,
 * or its state was dropped and made again) is preceded by on_reset. Events
 * are delivered at once when no handler is running; one raised from inside
 * a handler (a publish from on_message, a flush) waits in a FIFO that the
 * outermost delivery drains, so every watcher sees one order. */

typedef struct watch {
    UT_hash_handle hh;
    uint64_t last;             /* last seq delivered (or the position at watch) */
    char epoch[MP_STORE_EPOCH_MAX];   /* "": the channel had no state yet */
    char name[];
} watch;

enum { EV_MESSAGE, EV_RESET };

typedef struct live_event {
    struct live_event *next;
    int kind;
    uint64_t seq;              /* EV_MESSAGE: its seq; EV_RESET: the channel's last seq */
    uint64_t first_seq;        /* 1 + the channel's floor when it was raised */
    uint64_t published_ms;
    mp_frame *frame;           /* EV_MESSAGE: one reference */
    char epoch[MP_STORE_EPOCH_MAX];
    char id[MP_STORE_ID_MAX];
    char kinds[MP_STORE_KINDS_MAX];
    char channel[MP_STORE_NAME_MAX + 1];
} live_event;

static watch *find_watch(mem_store *st, const char *name)
{
    watch *w = NULL;
    HASH_FIND_STR(st->watches, name, w);
    return w;
}

/* Calls the handler for one event; w's position moves before the call, so
 * the handler may unwatch (freeing w) or publish again. */
static void deliver(mem_store *st, watch *w, const live_event *ev)
{
    mp_store *base = &st->base;
    st->delivering++;
    if (ev->kind == EV_RESET) {
        snprintf(w->epoch, sizeof w->epoch, "%s", ev->epoch);
        w->last = ev->seq;
        if (st->live.on_reset)
            st->live.on_reset(base, ev->channel, ev->epoch, ev->first_seq, ev->seq,
                              MP_STORE_SINCE_EPOCH, st->live.ud);
    } else if (!w->epoch[0] || strcmp(w->epoch, ev->epoch) == 0) {
        if (ev->seq > w->last) {
            snprintf(w->epoch, sizeof w->epoch, "%s", ev->epoch);
            w->last = ev->seq;
            size_t plen;
            const char *payload = (const char *)mp_ws_frame_payload(ev->frame, &plen);
            mp_store_live m = { ev->channel, ev->seq, ev->epoch, ev->id, ev->kinds, ev->published_ms,
                                ev->frame, NULL, 0 };
            mp_envelope_split(payload, plen, ev->channel, ev->seq, ev->id, &m.data, &m.data_len);
            if (st->live.on_message)
                st->live.on_message(base, &m, st->live.ud);
        }
    } else {
        /* Another epoch: the state this node knew is gone. Reset to the
         * position just before this message, then deliver it. */
        live_event reset = *ev;
        reset.kind = EV_RESET;
        reset.seq = ev->seq - 1;
        deliver(st, w, &reset);
        if ((w = find_watch(st, ev->channel)))
            deliver(st, w, ev);
    }
    st->delivering--;
}

static void free_event(live_event *ev)
{
    if (ev->frame)
        mp_frame_unref(ev->frame);
    free(ev);
}

/* Delivers what waits, unless a handler further up the stack is running
 * (it drains when it returns). */
static void drain_live(mem_store *st)
{
    while (!st->delivering && st->queue_head) {
        live_event *ev = st->queue_head;
        st->queue_head = ev->next;
        if (!st->queue_head)
            st->queue_tail = NULL;
        watch *w = find_watch(st, ev->channel);
        if (w)
            deliver(st, w, ev);
        free_event(ev);
    }
}

static void enqueue(mem_store *st, live_event *ev)
{
    ev->next = NULL;
    if (st->queue_tail) st->queue_tail->next = ev; else st->queue_head = ev;
    st->queue_tail = ev;
}

static void fill_event(live_event *ev, int kind, const chan *ch, uint64_t seq)
{
    ev->kind = kind;
    ev->seq = seq;
    ev->first_seq = ch->floor_seq + 1;
    memcpy(ev->epoch, ch->epoch, sizeof ev->epoch);
    snprintf(ev->channel, sizeof ev->channel, "%s", ch->name);
}

/* A flushed watched channel: its watchers are told after the flush. A
 * reset that cannot be queued for want of memory is found at the next
 * message instead (another epoch: deliver() resets then). */
static void queue_flush_reset(mem_store *st, const chan *ch)
{
    if (!find_watch(st, ch->name))
        return;
    live_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return;
    fill_event(ev, EV_RESET, ch, ch->last_seq);
    enqueue(st, ev);
}

/* Makes a just published message live on this node. When nothing is
 * delivering it goes out at once from the stack; else it takes its turn.
 * A message that cannot be queued for want of memory is dropped for live
 * delivery only (it is in history when stored). */
static void publish_live(mem_store *st, const chan *ch, uint64_t seq, const char *id, const char *kinds,
                         uint64_t published_ms, mp_frame *f)
{
    watch *w = find_watch(st, ch->name);
    if (!w || (!st->live.on_message && !st->live.on_reset))
        return;
    live_event local, *ev = &local;
    if (st->delivering || st->queue_head) {
        if (!(ev = malloc(sizeof *ev)))
            return;
    }
    fill_event(ev, EV_MESSAGE, ch, seq);
    ev->published_ms = published_ms;
    ev->frame = mp_frame_ref(f);
    snprintf(ev->id, sizeof ev->id, "%s", id);
    snprintf(ev->kinds, sizeof ev->kinds, "%s", kinds ? kinds : "");
    if (ev != &local) {
        enqueue(st, ev);
        return;
    }
    deliver(st, w, ev);
    mp_frame_unref(local.frame);
    drain_live(st);
}

/* ---- operations: channels ---------------------------------------------- */

static void mem_next_seq(mp_store *base, const char *channel, mp_store_seq_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    size_t len = name_len(channel);
    if (!len) {
        if (cb) cb(base, MP_STORE_EINVAL, 0, NULL, ud);
        return;
    }
    uint64_t now = now_ms(st);
    int status;
    chan *ch = get_or_create_chan(st, channel, len, now, &status);
    if (!ch) {
        if (cb) cb(base, status, 0, NULL, ud);
        return;
    }
    touch_chan(st, ch, now);
    ch->last_seq++;
    if (cb) cb(base, MP_STORE_OK, ch->last_seq, ch->epoch, ud);
}

static int append_entry(mem_store *st, chan *ch, const mp_store_put *m, uint64_t now, uint64_t published_ms)
{
    uint64_t life = ch->max_age_ms ? ch->max_age_ms : UINT64_MAX;
    int by_ttl = m->ttl_ms && m->ttl_ms < life;
    if (by_ttl)
        life = m->ttl_ms;
    if (ch->max_messages && st->cfg.max_bytes &&
        st->stats.bytes - trim_releases(ch) + mp_frame_size(m->frame) > st->cfg.max_bytes)
        return MP_STORE_EFULL;
    while (ch->count && (ch->live >= ch->max_messages || !at(ch, 0)->frame))
        pop_front(st, ch, POP_TRIM);
    if (!ch->max_messages)
        return MP_STORE_OK;    /* this policy keeps no history */
    if (ring_make_room(ch) < 0)
        return MP_STORE_ENOMEM;
    entry *e = at(ch, ch->count++);
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

static void mem_append(mp_store *base, const char *channel, const mp_store_put *m,
                       mp_store_done_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    size_t len = name_len(channel);
    int status = MP_STORE_OK;
    chan *ch;
    if (!len || !m || !m->frame || !m->id || strnlen(m->id, MP_STORE_ID_MAX) >= MP_STORE_ID_MAX || !m->seq) {
        status = MP_STORE_EINVAL;
    } else if (!(ch = find_chan(st, channel, len)) || m->seq > ch->last_seq || m->seq <= ch->stored_seq) {
        status = MP_STORE_ESEQ;
    } else {
        uint64_t now = now_ms(st);
        touch_chan(st, ch, now);
        refresh_policy(st, ch);
        expire_channel(st, ch, now);
        status = append_entry(st, ch, m, now, now);
        if (status == MP_STORE_OK)
            ch->stored_seq = m->seq;
        reschedule(st, ch);
    }
    if (cb) cb(base, status, ud);
}

static void mem_read(mp_store *base, const char *channel, const char *epoch, uint64_t since, size_t max,
                     mp_store_read_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    size_t len = name_len(channel);
    if (!len) {
        if (cb) cb(base, MP_STORE_EINVAL, NULL, ud);
        return;
    }
    mp_store_history h = { .epoch = "", .first_seq = 1 };
    uint64_t after;
    chan *ch = find_chan(st, channel, len);
    if (!ch) {
        h.since_state = mp_store_since_state(&h, epoch, since, &after);
        if (cb) cb(base, MP_STORE_OK, &h, ud);
        return;
    }
    uint64_t now = now_ms(st);
    touch_chan(st, ch, now);
    expire_channel(st, ch, now);
    reschedule(st, ch);
    h.epoch = ch->epoch;
    h.first_seq = ch->floor_seq + 1;
    h.last_seq = ch->last_seq;
    h.since_state = mp_store_since_state(&h, epoch, since, &after);

    size_t want = max < ch->live ? max : ch->live;
    mp_store_item *items = NULL;
    int own = st->reading;            /* nested read: don't clobber the outer one's items */
    if (want) {
        if (own) {
            items = malloc(want * sizeof *items);
        } else if (st->scratch_cap < want) {
            mp_store_item *s = realloc(st->scratch, want * sizeof *s);
            if (s) {
                st->scratch = s;
                st->scratch_cap = want;
            }
            items = s;
        } else {
            items = st->scratch;
        }
        if (!items) {
            if (cb) cb(base, MP_STORE_ENOMEM, NULL, ud);
            return;
        }
    }
    for (uint32_t i = find_pos(ch, after + 1); i < ch->count; i++) {
        entry *e = at(ch, i);
        if (!e->frame || e->expires_ms <= now)
            continue;
        if (h.count == want) {
            h.more = 1;
            break;
        }
        mp_store_item *it = &items[h.count++];
        it->seq = e->seq;
        it->published_ms = e->published_ms;
        it->expires_ms = e->expires_ms;
        it->frame = mp_frame_ref(e->frame);   /* valid even if cb changes the store */
        memcpy(it->id, e->id, sizeof it->id);
    }
    h.items = items;
    st->reading++;
    if (cb) cb(base, MP_STORE_OK, &h, ud);
    st->reading--;
    for (size_t i = 0; i < h.count; i++)
        mp_frame_unref(items[i].frame);
    if (own)
        free(items);
}

static void flush_chan(mem_store *st, chan *ch)
{
    for (uint32_t i = 0; i < ch->count; i++) {
        entry *e = at(ch, i);
        if (e->frame)
            release(st, ch, e);
    }
    ch->count = 0;
    ch->head = 0;
    ch->nttl = 0;
    ch->order_exp = 0;
    ring_release_if_empty(ch);
    ch->floor_seq = ch->last_seq;
    new_epoch(st, ch);
    reschedule(st, ch);
    queue_flush_reset(st, ch);
}

static void mem_flush(mp_store *base, const char *channel, mp_store_done_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    int status = MP_STORE_OK;
    if (!channel) {
        chan *ch, *tmp;
        HASH_ITER(hh, st->chans, ch, tmp)
            flush_chan(st, ch);
    } else {
        size_t len = name_len(channel);
        chan *ch = len ? find_chan(st, channel, len) : NULL;
        if (!len)
            status = MP_STORE_EINVAL;
        else if (!ch)
            status = MP_STORE_ENOENT;
        else
            flush_chan(st, ch);
    }
    drain_live(st);
    if (cb) cb(base, status, ud);
}

/* ---- operations: publish and watch (v2) -------------------------------- */

static void mem_publish(mp_store *base, const char *channel, const mp_store_msg *m, mp_store_seq_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    if (!mp_store_msg_valid(channel, m)) {
        if (cb) cb(base, MP_STORE_EINVAL, 0, NULL, ud);
        return;
    }
    uint64_t now = now_ms(st);
    uint64_t published = m->published_ms ? m->published_ms : now;
    int status;
    chan *ch = get_or_create_chan(st, channel, strlen(channel), now, &status);
    if (!ch) {
        if (cb) cb(base, status, 0, NULL, ud);
        return;
    }
    touch_chan(st, ch, now);
    uint64_t seq = ch->last_seq + 1;
    mp_frame *f = mp_envelope_frame(channel, seq, m->id, m->data, m->data_len, published);
    if (!f) {
        if (cb) cb(base, MP_STORE_ENOMEM, 0, NULL, ud);
        return;
    }
    if (m->store) {
        /* Refused (max_bytes, memory): the seq is not taken, nobody gets it. */
        refresh_policy(st, ch);
        expire_channel(st, ch, now);
        mp_store_put put = { seq, m->id, f, m->ttl_ms };
        status = append_entry(st, ch, &put, now, published);
        reschedule(st, ch);
        if (status != MP_STORE_OK) {
            mp_frame_unref(f);
            if (cb) cb(base, status, 0, NULL, ud);
            return;
        }
        ch->stored_seq = seq;
    }
    ch->last_seq = seq;
    char epoch[MP_STORE_EPOCH_MAX];
    memcpy(epoch, ch->epoch, sizeof epoch);   /* the handler may drop ch */
    publish_live(st, ch, seq, m->id, m->kinds, published, f);
    mp_frame_unref(f);
    if (cb) cb(base, MP_STORE_OK, seq, epoch, ud);
}

static void mem_watch(mp_store *base, const char *channel, mp_store_watch_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    size_t len = name_len(channel);
    if (!len || !mp_envelope_safe(channel, len)) {
        if (cb) cb(base, MP_STORE_EINVAL, NULL, 0, ud);
        return;
    }
    watch *w = find_watch(st, channel);
    if (!w) {
        if (!(w = calloc(1, sizeof *w + len + 1))) {
            if (cb) cb(base, MP_STORE_ENOMEM, NULL, 0, ud);
            return;
        }
        memcpy(w->name, channel, len + 1);
        chan *ch = find_chan(st, channel, len);
        if (ch) {
            memcpy(w->epoch, ch->epoch, sizeof w->epoch);
            w->last = ch->last_seq;
        }
        HASH_ADD(hh, st->watches, name[0], len, w);
    }
    /* Synchronous: what was delivered is what was published. */
    char epoch[MP_STORE_EPOCH_MAX];
    memcpy(epoch, w->epoch, sizeof epoch);
    if (cb) cb(base, MP_STORE_OK, epoch, w->last, ud);
}

static void mem_unwatch(mp_store *base, const char *channel)
{
    mem_store *st = (mem_store *)base;
    watch *w = channel ? find_watch(st, channel) : NULL;
    if (w) {
        HASH_DEL(st->watches, w);
        free(w);
    }
}

static void mem_set_live_handler(mp_store *base, const mp_store_live_handler *h)
{
    mem_store *st = (mem_store *)base;
    if (h)
        st->live = *h;
    else
        memset(&st->live, 0, sizeof st->live);
}

/* ---- cursors ------------------------------------------------------------ */

#define KEY_MAX (3 * (MP_STORE_NAME_MAX + 1))

/* The one place cursor keys are built: "user\0device\0channel", or with
 * channel NULL the device's key "user\0device\0" (a prefix of all of its
 * cursor keys). Names cannot hold a NUL, so two different triples never
 * share a key. Returns the length, or 0 if a name is empty or too long. */
static size_t cursor_key(char out[KEY_MAX], const char *user, const char *device, const char *channel)
{
    const char *parts[3] = { user, device, channel };
    size_t n = 0;
    for (int i = 0; i < (channel ? 3 : 2); i++) {
        size_t len = name_len(parts[i]);
        if (!len)
            return 0;
        memcpy(out + n, parts[i], len);
        n += len;
        out[n++] = '\0';
    }
    return n;
}

static void free_cursor(mem_store *st, cursor *c)
{
    devrec *d = c->dev;
    HASH_DEL(st->cursors, c);
    list_remove(&st->cursor_lru, &c->lru);
    list_remove(&d->cursors, &c->in_dev);
    if (!d->cursors.head) {
        HASH_DEL(st->devices, d);
        free(d);
    }
    st->stats.cursors--;
    free(c);
}

static int cursor_expired(const mem_store *st, const cursor *c, uint64_t now)
{
    return st->cfg.cursor_ttl_ms && add_sat(c->used, st->cfg.cursor_ttl_ms) <= now;
}

/* The live cursor with this key; an expired one is freed on the way. */
static cursor *find_cursor(mem_store *st, const char *key, size_t klen, uint64_t now)
{
    cursor *c = NULL;
    HASH_FIND(hh, st->cursors, key, klen, c);
    if (c && cursor_expired(st, c, now)) {
        st->stats.expired_cursors++;
        free_cursor(st, c);
        c = NULL;
    }
    return c;
}

static void touch_cursor(mem_store *st, cursor *c, uint64_t now)
{
    c->used = now;
    list_move_tail(&st->cursor_lru, &c->lru);
}

static cursor *create_cursor(mem_store *st, const char *key, size_t klen)
{
    while (st->stats.cursors >= st->cfg.max_cursors && st->cursor_lru.head) {
        st->stats.evicted_cursors++;
        free_cursor(st, CONTAINER(st->cursor_lru.head, cursor, lru));
    }
    /* The device key is the cursor key up to and including its second NUL. */
    size_t dlen = strlen(key) + 1;
    dlen += strlen(key + dlen) + 1;
    devrec *d = NULL;
    HASH_FIND(hh, st->devices, key, dlen, d);
    if (!d) {
        if (!(d = calloc(1, sizeof *d + dlen)))
            return NULL;
        memcpy(d->key, key, dlen);
        d->keylen = dlen;
        HASH_ADD_KEYPTR(hh, st->devices, d->key, dlen, d);
    }
    cursor *c = calloc(1, sizeof *c + klen);
    if (!c) {
        if (!d->cursors.head) {
            HASH_DEL(st->devices, d);
            free(d);
        }
        return NULL;
    }
    memcpy(c->key, key, klen);
    c->keylen = klen;
    c->dev = d;
    HASH_ADD_KEYPTR(hh, st->cursors, c->key, klen, c);
    list_push_tail(&st->cursor_lru, &c->lru);
    list_push_tail(&d->cursors, &c->in_dev);
    st->stats.cursors++;
    return c;
}

static void mem_cursor_get(mp_store *base, const char *user, const char *device, const char *channel,
                           mp_store_cursor_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device, channel);
    if (!klen) {
        if (cb) cb(base, MP_STORE_EINVAL, NULL, ud);
        return;
    }
    uint64_t now = now_ms(st);
    cursor *c = find_cursor(st, key, klen, now);
    if (!c) {
        if (cb) cb(base, MP_STORE_ENOENT, NULL, ud);
        return;
    }
    touch_cursor(st, c, now);
    mp_store_cursor out = { c->seq, c->epoch };
    if (cb) cb(base, MP_STORE_OK, &out, ud);
}

static void mem_cursor_advance(mp_store *base, const char *user, const char *device, const char *channel,
                               uint64_t seq, const char *epoch, mp_store_cursor_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device, channel);
    if (!klen) {
        if (cb) cb(base, MP_STORE_EINVAL, NULL, ud);
        return;
    }
    /* seq 0 records a starting position (a device subscribing before
     * anything was published): the channel's state is created for it. */
    int status = MP_STORE_OK;
    chan *ch = seq ? find_chan(st, channel, name_len(channel))
                   : get_or_create_chan(st, channel, name_len(channel), now_ms(st), &status);
    if (!ch && !seq) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    if (!ch || seq > ch->last_seq) {
        if (cb) cb(base, MP_STORE_ERANGE, NULL, ud);
        return;
    }
    if (given(epoch) && strcmp(epoch, ch->epoch) != 0) {
        if (cb) cb(base, MP_STORE_EEPOCH, NULL, ud);
        return;
    }
    uint64_t now = now_ms(st);
    cursor *c = find_cursor(st, key, klen, now);
    if (c && seq <= c->seq && strcmp(c->epoch, ch->epoch) == 0) {
        status = MP_STORE_STALE;
    } else {
        if (!c && !(c = create_cursor(st, key, klen))) {
            if (cb) cb(base, MP_STORE_ENOMEM, NULL, ud);
            return;
        }
        c->seq = seq;
        memcpy(c->epoch, ch->epoch, sizeof c->epoch);
    }
    touch_cursor(st, c, now);
    mp_store_cursor out = { c->seq, c->epoch };
    if (cb) cb(base, status, &out, ud);
}

static void mem_cursor_delete_device(mp_store *base, const char *user, const char *device,
                                     mp_store_done_cb cb, void *ud)
{
    mem_store *st = (mem_store *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device, NULL);
    if (!klen) {
        if (cb) cb(base, MP_STORE_EINVAL, ud);
        return;
    }
    devrec *d = NULL;
    HASH_FIND(hh, st->devices, key, klen, d);
    if (d) {
        /* The last free_cursor frees d: only `next` is read after it. */
        dlink *l = d->cursors.head;
        while (l) {
            dlink *next = l->next;
            free_cursor(st, CONTAINER(l, cursor, in_dev));
            l = next;
        }
    }
    if (cb) cb(base, MP_STORE_OK, ud);
}

/* ---- sweep, stats, lifetime -------------------------------------------- */

static size_t mem_sweep(mp_store *base)
{
    mem_store *st = (mem_store *)base;
    uint64_t now = now_ms(st);
    size_t n = 0;
    /* Each visit leaves the channel due strictly after now, or frees it. */
    while (st->ndue && st->due[0]->due_ms <= now) {
        chan *ch = st->due[0];
        n += expire_channel(st, ch, now);
        if (ch->count == 0 && add_sat(ch->last_used, st->cfg.channel_idle_ms) <= now) {
            st->stats.idle_channels++;
            free_chan(st, ch);
            n++;
        } else {
            reschedule(st, ch);
        }
    }
    while (st->cursor_lru.head) {
        cursor *c = CONTAINER(st->cursor_lru.head, cursor, lru);
        if (!cursor_expired(st, c, now))
            break;
        st->stats.expired_cursors++;
        free_cursor(st, c);
        n++;
    }
    return n;
}

static void mem_stats(mp_store *base, mp_store_stats *out)
{
    mem_store *st = (mem_store *)base;
    *out = st->stats;
    out->channels = st->nchans;
}

static void mem_free(mp_store *base)
{
    mem_store *st = (mem_store *)base;
    while (st->chans)
        free_chan(st, st->chans);
    while (st->cursors)
        free_cursor(st, st->cursors);
    mp_store_policies_free(&st->policies);
    free(st->due);
    free(st->scratch);
    while (st->queue_head) {
        live_event *ev = st->queue_head;
        st->queue_head = ev->next;
        free_event(ev);
    }
    watch *w, *wtmp;
    HASH_ITER(hh, st->watches, w, wtmp) {
        HASH_DEL(st->watches, w);
        free(w);
    }
    free(st);
}

static const mp_store_ops mem_ops = {
    .next_seq = mem_next_seq,
    .append = mem_append,
    .read = mem_read,
    .flush = mem_flush,
    .cursor_get = mem_cursor_get,
    .cursor_advance = mem_cursor_advance,
    .cursor_delete_device = mem_cursor_delete_device,
    .sweep = mem_sweep,
    .stats = mem_stats,
    .set_policies = mem_set_policies,
    .free = mem_free,
    .set_live_handler = mem_set_live_handler,
    .publish = mem_publish,
    .watch = mem_watch,
    .unwatch = mem_unwatch,
};

/* 48 random bits (mixed with the time and pid should getrandom fail), so
 * every store instance, hence every restart, names new epochs. */
static void draw_instance(mem_store *st)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r ^= (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
             (uint64_t)(uintptr_t)st;
    }
    snprintf(st->instance, sizeof st->instance, "%012llx", (unsigned long long)(r & 0xffffffffffffull));
}

void mp_store_config_defaults(mp_store_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->default_policy = (mp_store_policy){ NULL, 100, 3600 * 1000 };
    cfg->max_channels = 10000;
    cfg->max_bytes = (size_t)256 << 20;
    cfg->channel_idle_ms = 10 * 60 * 1000;
    cfg->max_cursors = 100000;
    cfg->cursor_ttl_ms = (uint64_t)7 * 24 * 3600 * 1000;
}

mp_store *mp_store_mem_new(const mp_store_config *cfg)
{
    mem_store *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->base.ops = &mem_ops;
    st->cfg = *cfg;
    st->cfg.policies = NULL;
    st->cfg.npolicies = 0;
    if (st->cfg.max_channels < 1)
        st->cfg.max_channels = 1;
    if (st->cfg.max_cursors < 1)
        st->cfg.max_cursors = 1;
    if (mem_set_policies(&st->base, cfg->policies, cfg->npolicies, &cfg->default_policy) != MP_STORE_OK) {
        free(st);
        return NULL;
    }
    draw_instance(st);
    return &st->base;
}
