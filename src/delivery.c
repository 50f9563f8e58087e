/* delivery.c — see delivery.h. */
#include "delivery.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "server.h"
#include "store.h"
#include "ws.h"

#define REPLAY_BATCH 256

struct mp_acks {
    ev_timer timer;
    mp_conn *conn;
    mp_sub **subs;              /* the connection's subscription list head */
    const mp_identity *id;      /* owned by the connection's session */
    double timeout, factor, jitter;
    int max_tries;
    int sends;                  /* sends so far of the oldest unacked message */
};

/* ---- positions and reset frames ----------------------------------------- */

typedef struct position {
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last_seq;
} position;

static void got_position(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st;
    position *p = ud;
    if (status < 0 || !h)
        return;
    snprintf(p->epoch, sizeof p->epoch, "%s", h->epoch);
    p->last_seq = h->last_seq;
}

void mp_delivery_position(const char *channel, char epoch[32], uint64_t *last_seq)
{
    position p = {"", 0};
    mp_store_read(mp.store, channel, NULL, 0, 0, got_position, &p);
    snprintf(epoch, 32, "%s", p.epoch);
    *last_seq = p.last_seq;
}

static void send_reset(mp_conn *c, mp_sub *s, const mp_store_history *h, const char *reason)
{
    const char *channel = mp_hub_channel_name(s->ch);
    if (c->sse) {
        mp_sse_stream.send_reset(c, s, h, reason);
        return;
    }
    mp_ws_send_json(c, json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "type", "reset", "channel", channel,
                                 "epoch", h->epoch, "first_seq", (json_int_t)h->first_seq,
                                 "last_seq", (json_int_t)h->last_seq, "reason", reason));
}

/* ---- replay --------------------------------------------------------------- */

typedef struct replay {
    mp_conn *c;
    mp_sub *s;
    const char *channel;
    int first;                  /* first batch: report epoch changes and gaps */
    int count;
    uint64_t last;              /* last seq queued */
    int more;
} replay;

static void got_batch(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st;
    replay *r = ud;
    r->more = 0;
    if (status < 0 || !h) {
        mp_warn("history read failed", "channel=%s error=\"%s\"", r->channel, mp_store_strerror(status));
        return;
    }
    if (r->first) {
        if (h->since_state == MP_STORE_SINCE_EPOCH)
            send_reset(r->c, r->s, h, "epoch");
        else if (h->since_state == MP_STORE_SINCE_GAP)
            send_reset(r->c, r->s, h, "gap");
        r->first = 0;
        if (h->since_state == MP_STORE_SINCE_AHEAD) {
            /* Nothing follows a reset ahead (docs/protocol.md "Resume"): the
             * client is at the head, live messages come next. Whatever a
             * read past the head returned (a since so large that since + 1
             * wraps reads from the start) is not sent. */
            send_reset(r->c, r->s, h, "ahead");
            return;
        }
    }
    size_t pause_at = mp.cfg.max_outbound_bytes / 2;
    size_t i = 0;
    for (; i < h->count && r->c->out.bytes < pause_at; i++) {
        int sent = r->c->sse ? mp_sse_stream.send_stored(r->c, r->s, &h->items[i], h->epoch)
                             : mp_conn_send(r->c, mp_ws_wire_frame(r->c, h->items[i].frame));
        if (sent < 0)
            return;
        r->last = h->items[i].seq;
        r->count++;
    }
    r->more = h->more || i < h->count;
}

/* Reads and queues batches until the history is exhausted or the queue is
 * half full; in the second case the subscription waits (see delivery.h). */
static int replay_from(mp_conn *c, mp_sub *s, const char *epoch, uint64_t since, int first)
{
    const char *channel = mp_hub_channel_name(s->ch);
    replay r = {c, s, channel, first, 0, since, 0};
    mp_store_read(mp.store, channel, epoch, since, REPLAY_BATCH, got_batch, &r);
    while (r.more && mp_conn_streaming(c) && c->out.bytes < mp.cfg.max_outbound_bytes / 2)
        mp_store_read(mp.store, channel, NULL, r.last, REPLAY_BATCH, got_batch, &r);
    if (r.count > 0 && r.last > s->sent_seq)
        s->sent_seq = r.last;
    mp.stats.messages_replayed += (uint64_t)r.count;
    s->replaying = r.more && mp_conn_streaming(c);
    if (s->replaying) {
        s->replay_after = r.last;
        c->flags |= MP_CONN_REPLAY;
    }
    if (r.count > 0 && s->tracks_acks)
        mp_ws_awaiting_ack(c);
    return r.count;
}

int mp_delivery_replay(mp_conn *c, mp_sub *s, const char *epoch, uint64_t since)
{
    return replay_from(c, s, epoch, since, 1);
}

void mp_delivery_continue(mp_conn *c, mp_sub *s)
{
    replay_from(c, s, NULL, s->replay_after, 0);
}

typedef struct cursor_result {
    int found;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];
} cursor_result;

static void got_cursor(mp_store *st, int status, const mp_store_cursor *cur, void *ud)
{
    (void)st;
    cursor_result *r = ud;
    if ((status == MP_STORE_OK || status == MP_STORE_STALE) && cur) {
        r->found = 1;
        r->seq = cur->seq;
        snprintf(r->epoch, sizeof r->epoch, "%s", cur->epoch);
    }
}

static void cursor_set(mp_store *st, int status, const mp_store_cursor *cur, void *ud)
{
    (void)st;
    mp_sub *s = ud;
    if ((status == MP_STORE_OK || status == MP_STORE_STALE) && cur)
        s->acked_seq = cur->seq;
}

void mp_delivery_resume_device(mp_conn *c, mp_sub *s, const mp_identity *id, int personal)
{
    const char *channel = mp_hub_channel_name(s->ch);
    cursor_result cur = {0, 0, ""};
    mp_store_cursor_get(mp.store, id->user, id->device, channel, got_cursor, &cur);
    if (cur.found) {
        s->acked_seq = cur.seq;
        mp_delivery_replay(c, s, cur.epoch, cur.seq);
        return;
    }
    if (personal) {
        /* Kept for this user while no device was there: all of it is owed. */
        mp_store_cursor_advance(mp.store, id->user, id->device, channel, 0, NULL, cursor_set, s);
        mp_delivery_replay(c, s, NULL, 0);
        return;
    }
    char epoch[32];
    uint64_t last = 0;
    mp_delivery_position(channel, epoch, &last);
    mp_store_cursor_advance(mp.store, id->user, id->device, channel, last, NULL, cursor_set, s);
}

/* ---- acks ----------------------------------------------------------------- */

static double next_wait(const mp_acks *a)
{
    double base = a->timeout * pow(a->factor, a->sends > 0 ? a->sends - 1 : 0);
    double spread = a->jitter * (2.0 * ((double)random() / (double)RAND_MAX) - 1.0);
    return base * (1.0 + spread);
}

static int anything_unacked(const mp_acks *a)
{
    for (const mp_sub *s = *a->subs; s; s = s->conn_next)
        if (s->tracks_acks && s->sent_seq > s->acked_seq)
            return 1;
    return 0;
}

static void start_timer(mp_acks *a)
{
    ev_timer_set(&a->timer, next_wait(a), 0.);
    ev_timer_start(mp.loop, &a->timer);
}

static void on_ack_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    mp_acks *a = w->data;
    mp_conn *c = a->conn;
    if (!anything_unacked(a)) {
        a->sends = 1;
        return;
    }
    if (a->sends >= a->max_tries) {
        mp.stats.ack_timeout_closes++;
        mp_info("ack timeout", "conn=%llu user=%s device=%s tries=%d", (unsigned long long)c->id,
                a->id->user, a->id->device, a->sends);
        mp_conn_close_stream(c, 4004, "ack timeout");
        return;
    }
    a->sends++;
    for (mp_sub *s = *a->subs; s && c->state == MP_CONN_WS; s = s->conn_next) {
        if (!s->tracks_acks || s->sent_seq <= s->acked_seq)
            continue;
        if (s->replaying)
            continue;                       /* its replay resends everything anyway */
        uint64_t sent = s->sent_seq;
        int n = mp_delivery_replay(c, s, NULL, s->acked_seq);
        mp.stats.resends += (uint64_t)n;
        if (s->sent_seq < sent)
            s->sent_seq = sent;
    }
    if (c->state == MP_CONN_WS)
        start_timer(a);
}

mp_acks *mp_acks_new(mp_conn *c, mp_sub **subs, const mp_identity *id, const mp_route *route)
{
    mp_acks *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->conn = c;
    a->subs = subs;
    a->id = id;
    a->timeout = route->ack_timeout > 0 ? route->ack_timeout : 5.0;
    a->factor = route->ack_factor >= 1 ? route->ack_factor : 2.0;
    a->jitter = route->ack_jitter;
    a->max_tries = route->ack_max_tries > 0 ? route->ack_max_tries : 5;
    a->sends = 1;
    ev_init(&a->timer, on_ack_timeout);
    a->timer.data = a;
    return a;
}

void mp_acks_free(mp_acks *a)
{
    if (!a)
        return;
    ev_timer_stop(mp.loop, &a->timer);
    free(a);
}

void mp_acks_arm(mp_acks *a)
{
    if (a && !ev_is_active(&a->timer))
        start_timer(a);
}

mp_histogram mp_delivery_ack_latency;

static void got_acked_item(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st; (void)ud;
    if (status < 0 || !h || h->count == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double now_ms = (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
    mp_histogram_observe(&mp_delivery_ack_latency, (now_ms - (double)h->items[0].published_ms) / 1000.0);
}

/* Publish-to-ack latency of the acked message, from its stored publish time
 * (a message no longer in history is not measured). */
static void observe_ack_latency(const char *channel, uint64_t seq)
{
    mp_store_read(mp.store, channel, NULL, seq - 1, 1, got_acked_item, NULL);
}

static void cursor_moved(mp_store *st, int status, const mp_store_cursor *cur, void *ud)
{
    (void)st; (void)cur;
    if (status < 0 && status != MP_STORE_EEPOCH)
        mp_warn("cursor advance failed", "channel=%s error=\"%s\"", (const char *)ud, mp_store_strerror(status));
}

int mp_acks_ack(mp_acks *a, mp_sub *s, uint64_t seq)
{
    if (seq > s->sent_seq)
        return -1;
    mp.stats.acks++;
    if (seq <= s->acked_seq)
        return 0;                       /* duplicate or reordered: nothing new */
    s->acked_seq = seq;
    const char *channel = mp_hub_channel_name(s->ch);
    observe_ack_latency(channel, seq);
    mp_store_cursor_advance(mp.store, a->id->user, a->id->device, channel, seq, NULL, cursor_moved,
                            (void *)channel);
    /* Progress: the device is alive and reading. The oldest unacked message
     * is now a newer one, so its wait starts afresh from its first send. */
    ev_timer_stop(mp.loop, &a->timer);
    a->sends = 1;
    if (anything_unacked(a))
        start_timer(a);
    return 0;
}
