/* hub.c — see hub.h. Channels sit in a uthash table keyed by name. */
#include "hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "clock.h"
#include "envelope.h"
#include "log.h"
#include "lua_host.h"
#include "server.h"
#include "store.h"
#include "ws.h"

struct mp_channel {
    UT_hash_handle hh;
    mp_sub *subs;          /* doubly linked subscriber list */
    uint32_t nsubs;
    char name[];
};

static mp_channel *channels;
static uint64_t next_message_id = 1;

int mp_hub_valid_name(const char *name, size_t len)
{
    return mp_envelope_safe(name, len);   /* names go into envelopes unescaped */
}

mp_channel *mp_hub_channel(const char *name, int create)
{
    mp_channel *ch = NULL;
    size_t len = strlen(name);
    HASH_FIND(hh, channels, name, len, ch);
    if (ch || !create)
        return ch;
    if (HASH_COUNT(channels) >= mp.cfg.max_channels)
        return NULL;
    ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
        return NULL;
    memcpy(ch->name, name, len + 1);
    HASH_ADD(hh, channels, name[0], len, ch);
    return ch;
}

const char *mp_hub_channel_name(const mp_channel *ch) { return ch->name; }
mp_sub *mp_hub_channel_subs(const mp_channel *ch) { return ch->subs; }
uint32_t mp_hub_channel_subscribers(const mp_channel *ch) { return ch->nsubs; }
size_t mp_hub_channel_count(void) { return HASH_COUNT(channels); }

mp_sub *mp_hub_find_sub(mp_sub *subs, const mp_channel *ch)
{
    for (mp_sub *s = subs; ch && s; s = s->conn_next)
        if (s->ch == ch)
            return s;
    return NULL;
}

int mp_hub_subscribe(mp_sub **subs, mp_conn *c, mp_channel *ch, mp_sub **out)
{
    mp_sub *s = mp_hub_find_sub(*subs, ch);
    if (s) {
        if (out)
            *out = s;
        return 0;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    if (out)
        *out = s;
    s->ch = ch;
    s->conn = c;
    s->ch_prev = NULL;
    s->ch_next = ch->subs;
    if (ch->subs)
        ch->subs->ch_prev = s;
    ch->subs = s;
    ch->nsubs++;
    s->conn_next = *subs;
    *subs = s;
    return 1;
}

static void unlink_from_channel(mp_sub *s)
{
    mp_channel *ch = s->ch;
    if (s->ch_prev) s->ch_prev->ch_next = s->ch_next; else ch->subs = s->ch_next;
    if (s->ch_next) s->ch_next->ch_prev = s->ch_prev;
    if (--ch->nsubs == 0) {
        HASH_DEL(channels, ch);
        free(ch);
    }
}

int mp_hub_unsubscribe(mp_sub **subs, mp_channel *ch)
{
    for (mp_sub **pp = subs; *pp; pp = &(*pp)->conn_next) {
        mp_sub *s = *pp;
        if (s->ch == ch) {
            *pp = s->conn_next;
            unlink_from_channel(s);
            free(s);
            return 1;
        }
    }
    return 0;
}

void mp_hub_unsubscribe_all(mp_sub **subs)
{
    mp_sub *s = *subs;
    while (s) {
        mp_sub *next = s->conn_next;
        unlink_from_channel(s);
        free(s);
        s = next;
    }
    *subs = NULL;
}

/* The frame a route's format hook makes of a message; NULL if the hook
 * failed (that route's connections skip this message; it stays in history). */
static mp_frame *format_frame(int route, const char *name, uint64_t seq, const char *id,
                              const char *data, size_t data_len, mp_frame *standard)
{
    char *text = NULL;
    size_t len = 0;
    int r = mp_lua_format(route, name, (unsigned long long)seq, id, data, data_len, &text, &len);
    if (r == 0)
        return mp_frame_ref(standard);
    if (r < 0)
        return NULL;
    mp_frame *f = mp_frame_ws(MP_WS_TEXT, text, len);
    free(text);
    if (f)
        f->published = standard->published;
    return f;
}

static int kind_listed(const char *kind, char *const *kinds, int nkinds)
{
    for (int i = 0; i < nkinds; i++)
        if (strcmp(kind, kinds[i]) == 0)
            return 1;
    return 0;
}

/* Queues the message to every subscriber of ch (see mp_hub_publish). SSE
 * subscribers share one event body, made from f on first use (sse.h, through mp_sse_stream). */
static uint32_t fanout(mp_channel *ch, uint64_t seq, const char *epoch, const char *id, const char *data,
                       size_t data_len, const mp_publish_opts *opts, mp_frame *f)
{
    uint32_t recipients = 0;
    mp_frame *sse_body = NULL;
    /* One slot per route: the formatted frame, made on first use. */
    int nroutes = mp.cfg.nroutes;
    mp_frame *formatted[nroutes > 0 ? nroutes : 1];
    unsigned char tried[nroutes > 0 ? nroutes : 1];
    memset(tried, 0, sizeof tried);
    for (mp_sub *s = ch->subs; s; s = s->ch_next) {
        mp_conn *c = s->conn;
        if (s->replaying)
            continue;   /* still catching up from history, which holds this one too */
        if (opts->nkinds > 0 && !kind_listed(mp_ws_kind(c), opts->kinds, opts->nkinds))
            continue;
        if (c->sse) {
            if (mp_sse_stream.send_live(c, s, seq, epoch, f, &sse_body) == 0)
                recipients++;
            continue;
        }
        mp_frame *send = f;
        int r = mp_ws_format_route(c);
        if (r >= 0 && r < nroutes) {
            if (!tried[r]) {
                formatted[r] = format_frame(r, ch->name, seq, id, data, data_len, f);
                tried[r] = 1;
            }
            send = formatted[r];
            if (!send) {
                mp.stats.dropped_format++;
                continue;
            }
        }
        if (mp_conn_send(c, mp_ws_wire_frame(c, send)) == 0) {
            recipients++;
            if (s->tracks_acks && seq > s->sent_seq) {
                s->sent_seq = seq;
                mp_ws_awaiting_ack(c);
            }
        }
    }
    for (int r = 0; r < nroutes; r++)
        if (tried[r] && formatted[r])
            mp_frame_unref(formatted[r]);
    mp_frame_unref(sse_body);
    return recipients;
}

/* The memory store answers before returning; a networked store will make
 * these steps asynchronous (see store.h). */
typedef struct store_result {
    int status;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];   /* the channel's, for SSE event ids */
} store_result;

static void got_seq(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud)
{
    (void)st;
    store_result *r = ud;
    r->status = status;
    r->seq = seq;
    snprintf(r->epoch, sizeof r->epoch, "%s", epoch ? epoch : "");
}

static void appended(mp_store *st, int status, void *ud)
{
    (void)st;
    store_result *r = ud;
    r->status = status;
}

int mp_hub_publish(const char *name, const char *data, size_t data_len, const mp_publish_opts *opts,
                   mp_publish_result *out)
{
    static const mp_publish_opts defaults = {NULL, 0, 0, 1};
    if (!opts)
        opts = &defaults;
    store_result sr = {MP_STORE_EUNAVAIL, 0, ""};
    mp_store_next_seq(mp.store, name, got_seq, &sr);
    if (sr.status < 0) {
        mp.stats.publishes_refused++;
        return sr.status;
    }
    uint64_t seq = sr.seq;
    snprintf(out->id, sizeof out->id, "%s-%llx", mp.boot_id, (unsigned long long)next_message_id++);
    mp_frame *f = mp_envelope_frame(name, seq, out->id, data, data_len, 0);
    if (!f)
        return MP_STORE_ENOMEM;
    f->published = mp_clock_wall();   /* a real clock: ev_now would make publish-to-deliver 0 */
    if (opts->store) {
        /* Refused by the store: nobody gets it, so the publisher's error
         * answer is the whole truth (the seq stays a hole, see store.h). */
        mp_store_put put = {seq, out->id, f, opts->ttl_ms};
        sr.status = MP_STORE_EUNAVAIL;
        mp_store_append(mp.store, name, &put, appended, &sr);
        if (sr.status < 0) {
            mp.stats.publishes_refused++;
            mp_frame_unref(f);
            return sr.status;
        }
        mp.stats.messages_stored++;
    }
    out->seq = seq;
    out->recipients = 0;
    mp_channel *ch = mp_hub_channel(name, 0);
    if (ch)
        out->recipients = fanout(ch, seq, sr.epoch, out->id, data, data_len, opts, f);
    mp_frame_unref(f);
    mp.stats.messages_published++;
    mp.stats.frames_queued += out->recipients;
    return 0;
}

void mp_hub_free_all(void)
{
    mp_channel *ch, *tmp;
    HASH_ITER(hh, channels, ch, tmp) {
        HASH_DEL(channels, ch);
        free(ch);   /* subscriptions were freed with their connections */
    }
}
