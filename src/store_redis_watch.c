/* store_redis_watch.c — the Redis store's watches and live delivery.
 *
 * Live delivery. watch(C) SUBSCRIBEs mp:{C}:p (batched per loop
 * iteration); once Redis confirms, the position script gives (epoch, last)
 * and the watch is active. Per watched channel the store keeps the epoch
 * and last seq it delivered; a bus message with
 *   - the next seq: delivered (on_message);
 *   - a seq already delivered: dropped (a duplicate);
 *   - a jump, or another epoch: the channel "recovers": bus messages are
 *     held (at most buffer_max, then dropped and read from history too)
 *     while the history after the last seq is read (read.lua, in pages) and
 *     merged with them in seq order. A seq neither retained nor held was
 *     never stored (store=false, its own ttl): not a loss. If history no
 *     longer reaches back, or the epoch changed: on_reset first, then what
 *     is retained.
 * Pub/sub is at most once; it is made whole by history: a pub/sub
 * connection lost (killed, Redis restarted, or its probe not heard back,
 * redis_conn.c) makes every watched channel of the shard resubscribe
 * and, once confirmed, recover from its last seq; a channel silent for
 * quiet_check_ms has its position read (position.lua), so a lost LAST
 * message is found too. What stays at most once: a store=false message
 * published while this node could not hear the bus.
 *
 * This file holds the bookkeeping of a watch, delivery to the live handler,
 * the bus events from redis.c and watch / unwatch; how a watch catches up
 * (position, recovery, quiet checks) is in store_redis_recover.c.
 */
#include "envelope.h"
#include "log.h"
#include "store_redis_int.h"

/* ---- watches: bookkeeping ---------------------------------------------------- */

wch *rs_find_watch(rstore *st, const char *name)
{
    wch *w = NULL;
    HASH_FIND_STR(st->watches, name, w);
    return w;
}

/* w if (name, id) is still watched as that incarnation, else NULL. */
wch *rs_still(rstore *st, const char *name, uint64_t id)
{
    wch *w = rs_find_watch(st, name);
    return w && w->id == id && !w->unwanted ? w : NULL;
}

void rs_free_buffer(bmsg *b)
{
    while (b) {
        bmsg *next = b->next;
        free(b);
        b = next;
    }
}

static void add_waiter(wch *w, waiter *wt)
{
    wt->next = NULL;
    if (w->waiters_tail) w->waiters_tail->next = wt; else w->waiters = wt;
    w->waiters_tail = wt;
}

/* Removes w from the table and frees it; its waiters are appended to *out
 * (called by the caller once nothing refers to the table any more). */
void rs_drop_watch(rstore *st, wch *w, waiter **out)
{
    if (w->waiters) {
        w->waiters_tail->next = *out;
        *out = w->waiters;
    }
    HASH_DEL(st->watches, w);
    rs_free_buffer(w->bhead);
    free(w);
    st->stats.watched--;
}

void rs_answer_waiters(rstore *st, waiter *list, int status, const char *epoch, uint64_t last)
{
    while (list) {
        waiter *next = list->next;
        if (list->cb)
            list->cb(&st->base, status, status == MP_STORE_OK ? epoch : NULL, last, list->ud);
        free(list);
        list = next;
    }
}

/* Unsubscribes w's bus channel if its SUBSCRIBE went on the current
 * pub/sub connection (only then does Redis know it). */
static void unsubscribe(rstore *st, wch *w)
{
    if (mp_redis_sub_up(st->r, w->shard) && w->sub_serial == mp_redis_sub_serial(st->r, w->shard)) {
        char bus[KEY_MAX];
        mp_redis_unsubscribe(st->r, w->shard, bus, chan_key(bus, w->name, 'p'));
    }
}

/* The watch cannot become active: its waiters get status. */
void rs_fail_watch(rstore *st, wch *w, int status)
{
    waiter *list = NULL;
    unsubscribe(st, w);
    rs_drop_watch(st, w, &list);
    rs_answer_waiters(st, list, status, NULL, 0);
}

/* Holds a bus message while the channel catches up (copying it unless
 * it is already a held one). Past buffer_max it is dropped: the read
 * after this one finds it in history. */
void rs_hold(rstore *st, wch *w, bmsg *m, int owned)
{
    if (w->nbuf >= st->buffer_max) {
        st->stats.overflows++;
        w->overflow = 1;
        if (owned)
            free(m);
        return;
    }
    bmsg *b = m;
    if (!owned) {
        if (!(b = malloc(sizeof *b + m->env_len))) {
            w->overflow = 1;
            return;
        }
        *b = *m;
        memcpy(b->data, m->env, m->env_len);
        b->env = b->data;
    }
    b->next = NULL;
    if (w->btail) w->btail->next = b; else w->bhead = b;
    w->btail = b;
    w->nbuf++;
}

/* ---- watches: delivery ---------------------------------------------------------- */

/* Delivers one message to the handler, w's position moving first. Returns
 * w, or NULL if the handler unwatched it. */
wch *rs_deliver(rstore *st, wch *w, const char *epoch, uint64_t seq, const char *id, const char *kinds,
                    uint64_t published_ms, const char *env, size_t env_len, int from_history)
{
    char name[MP_STORE_NAME_MAX + 1], ep[MP_STORE_EPOCH_MAX];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    snprintf(ep, sizeof ep, "%s", epoch);
    memcpy(w->epoch, ep, sizeof w->epoch);
    w->last = seq;
    size_t off, dlen;
    mp_frame *f = rs_envelope_frame(st, name, seq, id, env, env_len, published_ms, &off, &dlen);
    if (!f) {
        mp_warn("unreadable message skipped", "channel=%s seq=%llu", name, (unsigned long long)seq);
        return w;
    }
    st->stats.delivered++;
    st->stats.recovered += from_history != 0;
    if (st->live.on_message) {
        size_t plen;
        const char *payload = (const char *)mp_frame_ws_payload(f, &plen);
        mp_store_live m = { name, seq, ep, id, kinds, published_ms, f, payload + off, dlen };
        st->live.on_message(&st->base, &m, st->live.ud);
    }
    mp_frame_unref(f);
    return rs_still(st, name, wid);
}

wch *rs_reset(rstore *st, wch *w, const char *epoch, uint64_t first_seq, uint64_t last_seq, int reason)
{
    char name[MP_STORE_NAME_MAX + 1], ep[MP_STORE_EPOCH_MAX];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    snprintf(ep, sizeof ep, "%s", epoch);
    memcpy(w->epoch, ep, sizeof w->epoch);
    w->last = first_seq - 1;
    st->stats.resets++;
    if (st->live.on_reset)
        st->live.on_reset(&st->base, name, ep, first_seq, last_seq, reason, st->live.ud);
    return rs_still(st, name, wid);
}

/* A bus message for a LIVE channel (see the top). m is a held message
 * (owned: moved or freed here) or one parsed in place (copied if held). */
wch *rs_take_live(rstore *st, wch *w, bmsg *m, int owned)
{
    if (m->kind == 'r') {
        /* Flushed: its epoch is new unless a recovery already saw it. */
        if (strcmp(m->epoch, w->epoch) != 0)
            rs_start_recovery(st, w);
        if (owned)
            free(m);
        return w;
    }
    int same = strcmp(m->epoch, w->epoch) == 0;
    int unknown = !w->epoch[0] && w->last == 0;   /* no state at watch: its first epoch is no reset */
    if (same && m->seq <= w->last) {
        st->stats.duplicates++;
        if (owned)
            free(m);
        return w;
    }
    if ((same || unknown) && m->seq == w->last + 1) {
        w = rs_deliver(st, w, m->epoch, m->seq, m->id, m->kinds, m->published_ms, m->env, m->env_len, 0);
        if (owned)
            free(m);
        return w;
    }
    rs_hold(st, w, m, owned);
    rs_start_recovery(st, w);
    return w;
}

/* ---- watches: bus events from redis.c ---------------------------------------------- */

/* "m <seq> <epoch> <ms> <kinds|-> <id> <envelope>" or "r <last> <epoch>". */
static int parse_bus(const char *p, size_t len, bmsg *m)
{
    const char *end = p + len;
    char tok[MP_STORE_KINDS_MAX];
    int field = 0;
    memset(m, 0, sizeof *m);
    if (len < 2 || (p[0] != 'm' && p[0] != 'r') || p[1] != ' ')
        return -1;
    m->kind = p[0];
    p += 2;
    int fields = m->kind == 'm' ? 5 : 2;
    while (field < fields) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp && field == fields - 1 && m->kind == 'r')
            sp = end;
        if (!sp || (size_t)(sp - p) >= sizeof tok || sp == p)
            return -1;
        memcpy(tok, p, (size_t)(sp - p));
        tok[sp - p] = '\0';
        char *e;
        switch (field) {
        case 0: m->seq = strtoull(tok, &e, 10); if (*e) return -1; break;
        case 1: if (strlen(tok) >= sizeof m->epoch) return -1; strcpy(m->epoch, tok); break;
        case 2: m->published_ms = strtoull(tok, &e, 10); if (*e) return -1; break;
        case 3: if (strcmp(tok, "-") != 0) strcpy(m->kinds, tok); break;
        case 4: if (strlen(tok) >= sizeof m->id) return -1; strcpy(m->id, tok); break;
        }
        field++;
        p = sp + (sp < end);
    }
    if (m->kind == 'm') {
        m->env = p;
        m->env_len = (size_t)(end - p);
        if (!m->env_len)
            return -1;
    }
    return 0;
}

void rs_on_bus_message(mp_redis *r, int shard, const char *channel, size_t len, const char *payload, size_t plen,
                           void *ud)
{
    (void)r; (void)shard;
    rstore *st = ud;
    char name[MP_STORE_NAME_MAX + 1];
    bmsg m;
    wch *w;
    if (channel_of_bus(channel, len, name) < 0 || !(w = rs_find_watch(st, name)) || w->unwanted)
        return;
    if (parse_bus(payload, plen, &m) < 0) {
        st->stats.bad_messages++;
        return;
    }
    m.arrival = ++w->arrivals;
    w->heard = ev_now(st->loop);
    switch (w->state) {
    case W_SUBSCRIBING:
        break;   /* before the confirmation: the position read after it covers it */
    case W_SYNCING:
    case W_RECOVERING:
        rs_hold(st, w, &m, 0);
        break;
    default:
        rs_take_live(st, w, &m, 0);
    }
}

void rs_on_subscribed(mp_redis *r, int shard, const char *channel, size_t len, void *ud)
{
    rstore *st = ud;
    char name[MP_STORE_NAME_MAX + 1];
    wch *w;
    if (channel_of_bus(channel, len, name) < 0 || !(w = rs_find_watch(st, name)) || w->state != W_SUBSCRIBING ||
        w->sub_serial != mp_redis_sub_serial(r, shard))
        return;
    if (w->unwanted) {
        waiter *none = NULL;
        unsubscribe(st, w);
        rs_drop_watch(st, w, &none);
        return;
    }
    w->heard = ev_now(st->loop);
    if (w->synced)
        rs_start_recovery(st, w);   /* back after a pub/sub loss: from the last seq delivered */
    else
        rs_sync_position(st, w);
}

void rs_on_sub_up(mp_redis *r, int shard, void *ud)
{
    rstore *st = ud;
    uint64_t serial = mp_redis_sub_serial(r, shard);
    for (wch *w = st->watches; w; w = w->hh.next) {
        if (w->shard != shard)
            continue;
        char bus[KEY_MAX];
        if (mp_redis_subscribe(r, shard, bus, chan_key(bus, w->name, 'p')) == 0)
            w->sub_serial = serial;
    }
}

void rs_on_sub_down(mp_redis *r, int shard, void *ud)
{
    (void)r;
    rstore *st = ud;
    waiter *failed = NULL;
    wch *w, *tmp;
    HASH_ITER(hh, st->watches, w, tmp) {
        if (w->shard != shard)
            continue;
        if (!w->synced || w->unwanted) {
            rs_drop_watch(st, w, &failed);
            continue;
        }
        w->state = W_SUBSCRIBING;
        w->round++;
        w->reading = w->checking = 0;
        rs_free_buffer(w->bhead);
        w->bhead = w->btail = NULL;
        w->nbuf = 0;
        w->overflow = 0;
    }
    rs_answer_waiters(st, failed, MP_STORE_EUNAVAIL, NULL, 0);
}

void rs_on_cmd_up(mp_redis *r, int shard, void *ud)
{
    rstore *st = ud;
    for (wch *w = st->watches; w; w = w->hh.next)
        if (w->shard == shard && w->state == W_RECOVERING && !w->reading && mp_redis_cmd_up(r, shard))
            rs_read_from_last(st, w);
}

/* ---- operations: watch ----------------------------------------------------------------- */

void rs_watch(mp_store *base, const char *channel, mp_store_watch_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    if (st->closing || !channel_ok(channel)) {
        if (cb) cb(base, st->closing ? MP_STORE_EUNAVAIL : MP_STORE_EINVAL, NULL, 0, ud);
        return;
    }
    wch *w = rs_find_watch(st, channel);
    if (w && w->unwanted)
        w->unwanted = 0;   /* its SUBSCRIBE is still on its way: take it back */
    if (w && w->synced) {
        char epoch[MP_STORE_EPOCH_MAX];
        memcpy(epoch, w->epoch, sizeof epoch);
        if (cb) cb(base, MP_STORE_OK, epoch, w->last, ud);
        return;
    }
    waiter *wt = calloc(1, sizeof *wt);
    if (!wt) {
        if (cb) cb(base, MP_STORE_ENOMEM, NULL, 0, ud);
        return;
    }
    wt->cb = cb;
    wt->ud = ud;
    if (w) {
        add_waiter(w, wt);
        return;
    }
    size_t len = strlen(channel);
    int shard = mp_redis_shard_of(st->r, channel, len);
    char bus[KEY_MAX];
    int status = MP_STORE_OK;
    if (!mp_redis_sub_up(st->r, shard) || !mp_redis_cmd_up(st->r, shard))
        status = MP_STORE_EUNAVAIL;
    else if (!(w = calloc(1, sizeof *w + len + 1)) ||
             mp_redis_subscribe(st->r, shard, bus, chan_key(bus, channel, 'p')) < 0)
        status = MP_STORE_ENOMEM;
    if (status != MP_STORE_OK) {
        free(w);
        free(wt);
        if (cb) cb(base, status, NULL, 0, ud);
        return;
    }
    memcpy(w->name, channel, len + 1);
    w->id = ++st->next_wid;
    w->shard = shard;
    w->state = W_SUBSCRIBING;
    w->sub_serial = mp_redis_sub_serial(st->r, shard);
    add_waiter(w, wt);
    HASH_ADD(hh, st->watches, name[0], len, w);
    st->stats.watched++;
}

void rs_unwatch(mp_store *base, const char *channel)
{
    rstore *st = (rstore *)base;
    wch *w = channel ? rs_find_watch(st, channel) : NULL;
    if (!w || w->unwanted)
        return;
    waiter *list = w->waiters;
    w->waiters = w->waiters_tail = NULL;
    if (w->state == W_SUBSCRIBING && mp_redis_sub_up(st->r, w->shard) &&
        w->sub_serial == mp_redis_sub_serial(st->r, w->shard)) {
        /* Redis has not confirmed the SUBSCRIBE yet: an UNSUBSCRIBE now
         * could be overtaken by a new watch's SUBSCRIBE confirmation. Kept
         * until the confirmation comes, then unsubscribed (rs_on_subscribed). */
        w->unwanted = 1;
        rs_free_buffer(w->bhead);
        w->bhead = w->btail = NULL;
        w->nbuf = 0;
    } else {
        unsubscribe(st, w);
        waiter *none = NULL;
        rs_drop_watch(st, w, &none);
    }
    rs_answer_waiters(st, list, MP_STORE_ECANCELED, NULL, 0);
}

void rs_set_live_handler(mp_store *base, const mp_store_live_handler *h)
{
    rstore *st = (rstore *)base;
    if (h)
        st->live = *h;
    else
        memset(&st->live, 0, sizeof st->live);
}

