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
 *
 * The pieces (store_mem_int.h lists them): this file holds the operations on
 * channels, which tie a channel's state, its ring and live delivery
 * together, plus sweep, stats and lifetime.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "store_mem_int.h"

static const mp_store_ops mem_ops;

/* ---- policies --------------------------------------------------------- */

static int mem_set_policies(mp_store *base, const mp_store_policy *p, size_t n, const mp_store_policy *def)
{
    mem_store *st = (mem_store *)base;
    int status = mp_store_policies_set(&st->policies, p, n, def);
    if (status == MP_STORE_OK)
        st->policy_gen++;
    return status;
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
    chan *ch = mem_get_or_create_chan(st, channel, len, now, &status);
    if (!ch) {
        if (cb) cb(base, status, 0, NULL, ud);
        return;
    }
    mem_touch_chan(st, ch, now);
    ch->last_seq++;
    if (cb) cb(base, MP_STORE_OK, ch->last_seq, ch->epoch, ud);
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
    } else if (!(ch = mem_find_chan(st, channel, len)) || m->seq > ch->last_seq || m->seq <= ch->stored_seq) {
        status = MP_STORE_ESEQ;
    } else {
        uint64_t now = now_ms(st);
        mem_touch_chan(st, ch, now);
        mem_refresh_policy(st, ch);
        mem_expire_channel(st, ch, now);
        status = mem_append_entry(st, ch, m, now, now);
        if (status == MP_STORE_OK)
            ch->stored_seq = m->seq;
        mem_reschedule(st, ch);
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
    chan *ch = mem_find_chan(st, channel, len);
    if (!ch) {
        h.since_state = mp_store_since_state(&h, epoch, since, &after);
        if (cb) cb(base, MP_STORE_OK, &h, ud);
        return;
    }
    uint64_t now = now_ms(st);
    mem_touch_chan(st, ch, now);
    mem_expire_channel(st, ch, now);
    mem_reschedule(st, ch);
    h.epoch = ch->epoch;
    h.first_seq = ch->floor_seq + 1;
    h.last_seq = ch->last_seq;
    h.since_state = mp_store_since_state(&h, epoch, since, &after);

    /* Ahead of the head there is nothing to read (and since + 1 may wrap). */
    int ahead = h.since_state == MP_STORE_SINCE_AHEAD;
    size_t want = ahead ? 0 : max < ch->live ? max : ch->live;
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
    for (uint32_t i = ahead ? ch->count : mem_find_pos(ch, after + 1); i < ch->count; i++) {
        entry *e = mem_at(ch, i);
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
        entry *e = mem_at(ch, i);
        if (e->frame)
            mem_release(st, ch, e);
    }
    ch->count = 0;
    ch->head = 0;
    ch->nttl = 0;
    ch->order_exp = 0;
    mem_ring_release_if_empty(ch);
    ch->floor_seq = ch->last_seq;
    mem_new_epoch(st, ch);
    mem_reschedule(st, ch);
    mem_queue_flush_reset(st, ch);
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
        chan *ch = len ? mem_find_chan(st, channel, len) : NULL;
        if (!len)
            status = MP_STORE_EINVAL;
        else if (!ch)
            status = MP_STORE_ENOENT;
        else
            flush_chan(st, ch);
    }
    mem_drain_live(st);
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
    chan *ch = mem_get_or_create_chan(st, channel, strlen(channel), now, &status);
    if (!ch) {
        if (cb) cb(base, status, 0, NULL, ud);
        return;
    }
    mem_touch_chan(st, ch, now);
    uint64_t seq = ch->last_seq + 1;
    mp_frame *f = mp_envelope_frame(channel, seq, m->id, m->data, m->data_len, published);
    if (!f) {
        if (cb) cb(base, MP_STORE_ENOMEM, 0, NULL, ud);
        return;
    }
    if (m->store) {
        /* Refused (max_bytes, memory): the seq is not taken, nobody gets it. */
        mem_refresh_policy(st, ch);
        mem_expire_channel(st, ch, now);
        mp_store_put put = { seq, m->id, f, m->ttl_ms };
        status = mem_append_entry(st, ch, &put, now, published);
        mem_reschedule(st, ch);
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
    mem_publish_live(st, ch, seq, m->id, m->kinds, published, f);
    mp_frame_unref(f);
    if (cb) cb(base, MP_STORE_OK, seq, epoch, ud);
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
        n += mem_expire_channel(st, ch, now);
        if (ch->count == 0 && add_sat(ch->last_used, st->cfg.channel_idle_ms) <= now) {
            st->stats.idle_channels++;
            mem_free_chan(st, ch);
            n++;
        } else {
            mem_reschedule(st, ch);
        }
    }
    n += mem_cursor_sweep(st, now);
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
        mem_free_chan(st, st->chans);
    mem_cursor_free_all(st);
    mp_store_policies_free(&st->policies);
    free(st->due);
    free(st->scratch);
    mem_live_free(st);
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
