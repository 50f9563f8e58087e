/* store_mem_chan.c — the memory store's channel states (see store_mem.c).
 *
 * Owns finding, creating, touching and freeing a channel's state (seq,
 * epoch, policy and ring), the two LRU lists that enforce max_channels
 * without ever dropping a state that retains a message, and the min-heap of
 * channels ordered by when the sweep next needs to look at them.
 */
#include <stdio.h>
#include <stdlib.h>

#include "store_mem_int.h"

/* ---- policies --------------------------------------------------------- */

void mem_refresh_policy(mem_store *st, chan *ch)
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

void mem_reschedule(mem_store *st, chan *ch)
{
    uint64_t old = ch->due_ms;
    ch->due_ms = channel_due(st, ch);
    if (ch->due_ms < old)
        due_up(st, ch->due_idx);
    else
        due_down(st, ch->due_idx);
}

/* ---- channels ---------------------------------------------------------- */

void mem_new_epoch(mem_store *st, chan *ch)
{
    snprintf(ch->epoch, sizeof ch->epoch, "%s-%llx", st->instance, (unsigned long long)++st->epoch_gen);
}

chan *mem_find_chan(mem_store *st, const char *name, size_t len)
{
    chan *ch = NULL;
    HASH_FIND(hh, st->chans, name, len, ch);
    return ch;
}

static dlist *lru_of(mem_store *st, const chan *ch)
{
    return &st->chan_lru[ch->live > 0];
}

void mem_touch_chan(mem_store *st, chan *ch, uint64_t now)
{
    ch->last_used = now;
    list_move_tail(lru_of(st, ch), &ch->lru);
}

void mem_free_chan(mem_store *st, chan *ch)
{
    for (uint32_t i = 0; i < ch->count; i++) {
        entry *e = mem_at(ch, i);
        if (e->frame)
            mem_release(st, ch, e);
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
    mem_free_chan(st, ch);
}

/* The channel's state, created if absent. Past max_channels the least
 * recently used state that retains no message makes room; if every state
 * retains messages the new one is refused: *status MP_STORE_ECHANNELS. */
chan *mem_get_or_create_chan(mem_store *st, const char *name, size_t len, uint64_t now, int *status)
{
    chan *ch = mem_find_chan(st, name, len);
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
    mem_refresh_policy(st, ch);
    mem_new_epoch(st, ch);
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
