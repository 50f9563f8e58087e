/* redis_sub.c — pub/sub on a shard's pub/sub connection.
 *
 * SUBSCRIBE / UNSUBSCRIBE are batched: collected per shard in call order
 * and sent once per loop iteration (a timer 0), each run of same-kind
 * operations as one command of at most BATCH_MAX channels. Replies and
 * messages come through one callback, which also sees the probe (the tick
 * in redis_conn.c) and the confirmation that brings the connection up.
 */
#include <stdlib.h>
#include <string.h>

#include "redis_int.h"

/* ---- pub/sub ------------------------------------------------------------------ */

static int is(const redisReply *e, const char *s)
{
    return e->type == REDIS_REPLY_STRING && e->len == strlen(s) && memcmp(e->str, s, e->len) == 0;
}

void redis_on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn *c = privdata;
    shard *sh = c->sh;
    mp_redis *r = sh->r;
    redisReply *rep = reply;
    if (!rep) {
        if (c->ac == ac)
            redis_conn_lost(c, ac->errstr[0] ? ac->errstr : "connection lost");
        return;
    }
    if (c->ac != ac || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *kind = rep->element[0], *chan = rep->element[1];
    int probe = chan->len == strlen(sh->probe) && memcmp(chan->str, sh->probe, chan->len) == 0;
    if (is(kind, "message") && rep->element[2]->type == REDIS_REPLY_STRING) {
        if (probe) {
            sh->probe_seen = strtoull(rep->element[2]->str, NULL, 10);
        } else if (c->state == C_UP) {
            r->stats.bus_messages++;
            if (r->ev.message)
                r->ev.message(r, sh->index, chan->str, chan->len, rep->element[2]->str, rep->element[2]->len,
                              r->ev.ud);
        }
    } else if (is(kind, "subscribe")) {
        if (probe) {
            if (c->state == C_CONNECTING)
                redis_conn_up(c);
        } else if (c->state == C_UP && r->ev.subscribed) {
            r->ev.subscribed(r, sh->index, chan->str, chan->len, r->ev.ud);
        }
    }
}

static int add_subop(mp_redis *r, int shard_i, int unsub, const char *channel, size_t len)
{
    shard *sh = &r->shards[shard_i];
    if (r->closing || sh->sub.state != C_UP)
        return -1;
    if (sh->nops == sh->ops_cap) {
        size_t cap = sh->ops_cap ? sh->ops_cap * 2 : 64;
        subop *o = realloc(sh->ops, cap * sizeof *o);
        if (!o)
            return -1;
        sh->ops = o;
        sh->ops_cap = cap;
    }
    char *name = malloc(len + 1);
    if (!name)
        return -1;
    memcpy(name, channel, len);
    name[len] = '\0';
    sh->ops[sh->nops++] = (subop){ unsub, len, name };
    if (!ev_is_active(&r->batch_timer)) {
        ev_timer_set(&r->batch_timer, 0., 0.);
        ev_timer_start(r->loop, &r->batch_timer);
    }
    return 0;
}

int mp_redis_subscribe(mp_redis *r, int shard, const char *channel, size_t len)
{
    return add_subop(r, shard, 0, channel, len);
}

int mp_redis_unsubscribe(mp_redis *r, int shard, const char *channel, size_t len)
{
    return add_subop(r, shard, 1, channel, len);
}

#define BATCH_MAX 512   /* channels per SUBSCRIBE / UNSUBSCRIBE */

/* Sends each run of same-kind operations as one command, in order. */
static void send_batch(shard *sh)
{
    const char *av[BATCH_MAX + 1];
    size_t al[BATCH_MAX + 1];
    size_t i = 0;
    while (i < sh->nops && sh->sub.state == C_UP) {
        int unsub = sh->ops[i].unsub;
        int n = 0;
        av[0] = unsub ? "UNSUBSCRIBE" : "SUBSCRIBE";
        al[0] = strlen(av[0]);
        while (i < sh->nops && sh->ops[i].unsub == unsub && n < BATCH_MAX) {
            av[1 + n] = sh->ops[i].name;
            al[1 + n] = sh->ops[i].len;
            n++;
            i++;
        }
        if (redisAsyncCommandArgv(sh->sub.ac, redis_on_sub_reply, &sh->sub, n + 1, av, al) != REDIS_OK) {
            redis_conn_drop(&sh->sub, "cannot send SUBSCRIBE");
            break;
        }
    }
    for (size_t k = 0; k < sh->nops; k++)
        free(sh->ops[k].name);
    sh->nops = 0;
}

void redis_on_batch_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    mp_redis *r = w->data;
    for (int i = 0; i < r->nshards; i++)
        send_batch(&r->shards[i]);
}

