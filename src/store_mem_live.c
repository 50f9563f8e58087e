/* store_mem_live.c — watches and live delivery of the memory store.
 *
 * Owns the channels this node watches, the order in which live events reach
 * the live handler (mp_store_live_handler) and the resets a watcher is told
 * when its channel's epoch changed. See the section comment below.
 */
#include <stdio.h>
#include <stdlib.h>

#include "envelope.h"
#include "store_mem_int.h"

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
            const char *payload = (const char *)mp_frame_ws_payload(ev->frame, &plen);
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
void mem_drain_live(mem_store *st)
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
void mem_queue_flush_reset(mem_store *st, const chan *ch)
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
void mem_publish_live(mem_store *st, const chan *ch, uint64_t seq, const char *id, const char *kinds,
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
    mem_drain_live(st);
}

void mem_watch(mp_store *base, const char *channel, mp_store_watch_cb cb, void *ud)
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
        chan *ch = mem_find_chan(st, channel, len);
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

void mem_unwatch(mp_store *base, const char *channel)
{
    mem_store *st = (mem_store *)base;
    watch *w = channel ? find_watch(st, channel) : NULL;
    if (w) {
        HASH_DEL(st->watches, w);
        free(w);
    }
}

void mem_set_live_handler(mp_store *base, const mp_store_live_handler *h)
{
    mem_store *st = (mem_store *)base;
    if (h)
        st->live = *h;
    else
        memset(&st->live, 0, sizeof st->live);
}

void mem_live_free(mem_store *st)
{
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
}
