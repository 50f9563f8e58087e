/* store_redis_recover.c — how a Redis store watch catches up.
 *
 * After Redis confirmed a watch's SUBSCRIBE its position is read
 * (position.lua: W_SYNCING); after a gap, another epoch, an overflow or a
 * lost pub/sub connection the history after its last seq is read in pages
 * (read.lua: W_RECOVERING) and merged in seq order with the bus messages
 * held meanwhile; a channel silent for quiet_check_ms has its position
 * checked, so a lost last message is found too. The top of
 * store_redis_watch.c describes the whole of live delivery.
 */
#include "store_redis_int.h"

/* ---- watches: reads ---------------------------------------------------------------- */

typedef struct wop {
    rstore *st;
    uint64_t id, round;
    char name[MP_STORE_NAME_MAX + 1];
} wop;

static wop *wop_new(rstore *st, wch *w)
{
    wop *o = malloc(sizeof *o);
    if (o) {
        o->st = st;
        o->id = w->id;
        o->round = w->round;
        snprintf(o->name, sizeof o->name, "%s", w->name);
    }
    return o;
}

/* The watch an answer is for, if it still waits for it (same incarnation,
 * same round, in state); o is freed either way. */
static wch *answer_for(wop *o, int state)
{
    wch *w = rs_still(o->st, o->name, o->id);
    if (w && (w->round != o->round || w->state != state))
        w = NULL;
    free(o);
    if (w)
        w->reading = 0;
    return w;
}

/* Goes through what was held while w caught up, as if it came now. */
static void replay_held(rstore *st, wch *w)
{
    char name[MP_STORE_NAME_MAX + 1];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    bmsg *queue = w->bhead;
    w->bhead = w->btail = NULL;
    w->nbuf = 0;
    while (queue) {
        bmsg *m = queue;
        queue = m->next;
        if (!(w = rs_still(st, name, wid)))
            free(m);
        else if (w->state == W_LIVE)
            rs_take_live(st, w, m, 1);
        else
            rs_hold(st, w, m, 1);
    }
}

static void recovered(mp_redis *r, const redisReply *rep, void *ud);

void rs_read_from_last(rstore *st, wch *w)
{
    args a;
    int shard;
    wop *o;
    if (!mp_redis_cmd_up(st->r, w->shard) || rs_chan_args(st, &a, w->name, &shard) < 0 || !(o = wop_new(st, w)))
        return;   /* sent again when the shard is back (cmd_up) or at the next quiet tick */
    w->reading = 1;
    w->read_mark = w->arrivals;
    st->stats.recoveries++;
    arg_s(&a, w->epoch);
    arg_u(&a, w->last);
    arg_u(&a, RECOVER_BATCH);
    eval(st, shard, st->s_read, &a, 2, recovered, o);
}

void rs_start_recovery(rstore *st, wch *w)
{
    w->state = W_RECOVERING;
    w->round++;
    w->reading = 0;
    rs_read_from_last(st, w);
}

/* Delivers held messages of epoch with seq <= upto (in order) and drops
 * those already delivered; returns the rest. *wp becomes NULL if the
 * handler unwatched. */
static bmsg *deliver_held(rstore *st, wch **wp, bmsg *held, const char *epoch, uint64_t upto, uint64_t mark,
                          bmsg **rest_tail)
{
    bmsg *rest = NULL;
    *rest_tail = NULL;
    while (held) {
        bmsg *m = held;
        held = m->next;
        m->next = NULL;
        if (!*wp) {
            free(m);
            continue;
        }
        int same = m->kind == 'm' && strcmp(m->epoch, epoch) == 0;
        if (same && m->seq <= (*wp)->last) {
            st->stats.duplicates++;
            free(m);
        } else if (same && m->seq <= upto) {
            *wp = rs_deliver(st, *wp, m->epoch, m->seq, m->id, m->kinds, m->published_ms, m->env, m->env_len, 0);
            free(m);
        } else if (!same && m->arrival <= mark) {
            free(m);   /* older than the read: its epoch is past */
        } else {
            if (*rest_tail) (*rest_tail)->next = m; else rest = m;
            *rest_tail = m;
        }
    }
    return rest;
}

static void recovered(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    wop *o = ud;
    rstore *st = o->st;
    wch *w = answer_for(o, W_RECOVERING);
    if (!w)
        return;
    raw_history h;
    if (rs_parse_history(st, rep, &h) < 0) {
        if (rep)
            rs_script_failed(st, "read", rep);
        free(h.recs);
        return;   /* tried again at cmd_up or the next quiet tick */
    }
    mp_store_history pos = { .epoch = h.epoch, .first_seq = h.floor + 1, .last_seq = h.last };
    uint64_t after;
    int state = mp_store_since_state(&pos, w->epoch[0] ? w->epoch : NULL, w->last, &after);
    if (state != MP_STORE_SINCE_OK) {
        uint64_t first = h.epoch[0] ? h.floor + 1 : 1;
        w = rs_reset(st, w, h.epoch, first, h.last, state);
        if (w && state == MP_STORE_SINCE_AHEAD) {
            free(h.recs);   /* the read started past what is retained: read again from the floor */
            rs_start_recovery(st, w);
            return;
        }
    }
    /* Merge what history retains with what the bus brought meanwhile. */
    bmsg *held = w ? w->bhead : NULL, *rest = NULL, *rest_tail = NULL;
    int overflow = w ? w->overflow : 0;
    if (w) {
        w->bhead = w->btail = NULL;
        w->nbuf = 0;
        w->overflow = 0;
    }
    uint64_t mark = w ? w->read_mark : 0;
    for (size_t i = 0; w && i < h.n; i++) {
        rec *rc = &h.recs[i];
        bmsg *tail;
        held = deliver_held(st, &w, held, h.epoch, rc->seq - 1, mark, &tail);
        if (w && rc->seq > w->last)
            w = rs_deliver(st, w, h.epoch, rc->seq, rc->id, rc->kinds, rc->published_ms, rc->env, rc->env_len, 1);
    }
    uint64_t upto = h.more ? h.top : h.last;
    rest = deliver_held(st, &w, held, h.epoch, upto, mark, &rest_tail);
    free(h.recs);
    if (!w) {
        rs_free_buffer(rest);
        return;
    }
    /* Seqs up to there that were neither retained nor heard were never
     * stored (or could not be read: counted in bad_messages). */
    if (w->last < upto)
        w->last = upto;
    memcpy(w->epoch, h.epoch, sizeof w->epoch);   /* a first epoch seen by a watch of an unknown channel */
    /* What is left waits its turn: held again in front of anything newer. */
    if (rest) {
        rest_tail->next = w->bhead;
        if (!w->bhead)
            w->btail = rest_tail;
        w->bhead = rest;
        for (bmsg *b = rest; b; b = b->next)
            w->nbuf++;
    }
    w->overflow |= overflow;
    w->heard = ev_now(st->loop);
    if (h.more) {
        rs_read_from_last(st, w);
        return;
    }
    w->state = W_LIVE;
    char name[MP_STORE_NAME_MAX + 1];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    replay_held(st, w);
    if ((w = rs_still(st, name, wid)) && w->state == W_LIVE && w->overflow) {
        w->overflow = 0;
        rs_start_recovery(st, w);
    }
}

static void synced(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    wop *o = ud;
    rstore *st = o->st;
    wch *w = answer_for(o, W_SYNCING);
    if (!w)
        return;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        str_of(rep->element[0], epoch, sizeof epoch) < 0 || u64_of(rep->element[1], &last) < 0) {
        rs_fail_watch(st, w, rs_script_failed(st, "position", rep));
        return;
    }
    memcpy(w->epoch, epoch, sizeof w->epoch);
    w->last = last;
    w->synced = 1;
    w->state = W_LIVE;
    w->heard = ev_now(st->loop);
    char name[MP_STORE_NAME_MAX + 1];
    uint64_t wid = w->id;
    snprintf(name, sizeof name, "%s", w->name);
    waiter *list = w->waiters;
    w->waiters = w->waiters_tail = NULL;
    rs_answer_waiters(st, list, MP_STORE_OK, epoch, last);
    if ((w = rs_still(st, name, wid)))
        replay_held(st, w);
}

void rs_sync_position(rstore *st, wch *w)
{
    args a;
    int shard;
    wop *o;
    w->state = W_SYNCING;
    w->round++;
    if (rs_chan_args(st, &a, w->name, &shard) < 0 || !(o = wop_new(st, w))) {
        rs_fail_watch(st, w, MP_STORE_EUNAVAIL);
        return;
    }
    w->reading = 1;
    arg_s(&a, "0");
    eval(st, shard, st->s_position, &a, 2, synced, o);
}

/* ---- watches: quiet channels ------------------------------------------------------- */

static void quiet_checked(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    wop *o = ud;
    rstore *st = o->st;
    wch *w = rs_still(st, o->name, o->id);
    free(o);
    if (!w)
        return;
    w->checking = 0;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
    if (w->state != W_LIVE || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        str_of(rep->element[0], epoch, sizeof epoch) < 0 || u64_of(rep->element[1], &last) < 0)
        return;
    if (strcmp(epoch, w->epoch) != 0 || last > w->last)
        rs_start_recovery(st, w);
}

void rs_on_quiet_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    rstore *st = t->data;
    ev_tstamp now = ev_now(loop), quiet = (double)st->quiet_ms / 1000.0;
    for (wch *w = st->watches; w; w = w->hh.next) {
        if (w->unwanted || !mp_redis_cmd_up(st->r, w->shard))
            continue;
        if (w->state == W_RECOVERING && !w->reading) {
            rs_read_from_last(st, w);
        } else if (w->state == W_LIVE && !w->checking && now - w->heard >= quiet) {
            args a;
            int shard;
            wop *o;
            if (rs_chan_args(st, &a, w->name, &shard) < 0 || !(o = wop_new(st, w)))
                continue;
            w->checking = 1;
            w->heard = now;   /* the next check comes a quiet period later */
            st->stats.quiet_checks++;
            arg_s(&a, "0");
            eval(st, shard, st->s_position, &a, 2, quiet_checked, o);
        }
    }
}
