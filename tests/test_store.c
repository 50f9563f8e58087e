/* Unit tests for the memory store: seqs, history bounded by count, age and
 * ttl, epochs, reads and their positions, device cursors, the sweep and the
 * stats. Time is a fake clock the tests move by hand. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "envelope.h"
#include "frame.h"
#include "server.h"
#include "store.h"

mp_server mp;

static uint64_t fake_now = 1700000000000ull;

static uint64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

static mp_store_config config(void)
{
    mp_store_config cfg;
    mp_store_config_defaults(&cfg);
    cfg.clock_ms = fake_clock;
    return cfg;
}

static mp_store *new_store(uint32_t max_messages, uint64_t max_age_ms)
{
    mp_store_config cfg = config();
    cfg.default_policy.max_messages = max_messages;
    cfg.default_policy.max_age_ms = max_age_ms;
    return mp_store_mem_new(&cfg);
}

/* ---- synchronous wrappers: the memory store calls back before returning */

static int called;

static struct {
    int status;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];
} seq_out;

static void on_seq(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud)
{
    (void)st; (void)ud;
    called++;
    seq_out.status = status;
    seq_out.seq = seq;
    snprintf(seq_out.epoch, sizeof seq_out.epoch, "%s", epoch ? epoch : "");
}

static uint64_t next_seq(mp_store *st, const char *ch)
{
    int before = called;
    mp_store_next_seq(st, ch, on_seq, NULL);
    CHECK(called == before + 1);
    return seq_out.status == MP_STORE_OK ? seq_out.seq : 0;
}

static int done_status;

static void on_done(mp_store *st, int status, void *ud)
{
    (void)st; (void)ud;
    called++;
    done_status = status;
}

static int append(mp_store *st, const char *ch, uint64_t seq, mp_frame *f, uint64_t ttl_ms)
{
    char id[MP_STORE_ID_MAX];
    snprintf(id, sizeof id, "id-%llu", (unsigned long long)seq);
    mp_store_put m = { .seq = seq, .id = id, .frame = f, .ttl_ms = ttl_ms };
    int before = called;
    mp_store_append(st, ch, &m, on_done, NULL);
    CHECK(called == before + 1);
    return done_status;
}

static mp_frame *make_frame(uint64_t seq)
{
    char payload[64];
    int n = snprintf(payload, sizeof payload, "{\"seq\":%llu}", (unsigned long long)seq);
    return mp_frame_ws(MP_WS_TEXT, payload, (size_t)n);
}

/* Publishes one stored message; returns its seq. The frame is the store's
 * alone unless keep is given (then the caller holds one reference too). */
static uint64_t publish(mp_store *st, const char *ch, uint64_t ttl_ms, mp_frame **keep)
{
    uint64_t seq = next_seq(st, ch);
    mp_frame *f = make_frame(seq);
    CHECK(append(st, ch, seq, f, ttl_ms) == MP_STORE_OK);
    if (keep)
        *keep = f;
    else
        mp_frame_unref(f);
    return seq;
}

#define MAXGOT 64
static struct {
    int status;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t first, last;
    int state, more;
    size_t count;
    uint64_t seqs[MAXGOT];
    mp_frame *frames[MAXGOT];
    char ids[MAXGOT][MP_STORE_ID_MAX];
} got;

static void on_read(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st; (void)ud;
    called++;
    memset(&got, 0, sizeof got);
    got.status = status;
    if (!h)
        return;
    snprintf(got.epoch, sizeof got.epoch, "%s", h->epoch);
    got.first = h->first_seq;
    got.last = h->last_seq;
    got.state = h->since_state;
    got.more = h->more;
    got.count = h->count;
    for (size_t i = 0; i < h->count && i < MAXGOT; i++) {
        got.seqs[i] = h->items[i].seq;
        got.frames[i] = h->items[i].frame;
        memcpy(got.ids[i], h->items[i].id, MP_STORE_ID_MAX);
    }
}

static int read_since(mp_store *st, const char *ch, const char *epoch, uint64_t since, size_t max)
{
    int before = called;
    mp_store_read(st, ch, epoch, since, max, on_read, NULL);
    CHECK(called == before + 1);
    return got.status;
}

static struct {
    int status;
    uint64_t seq;
    char epoch[MP_STORE_EPOCH_MAX];
} cur;

static void on_cursor(mp_store *st, int status, const mp_store_cursor *c, void *ud)
{
    (void)st; (void)ud;
    called++;
    memset(&cur, 0, sizeof cur);
    cur.status = status;
    if (c) {
        cur.seq = c->seq;
        snprintf(cur.epoch, sizeof cur.epoch, "%s", c->epoch);
    }
}

static int cursor_get(mp_store *st, const char *user, const char *dev, const char *ch)
{
    int before = called;
    mp_store_cursor_get(st, user, dev, ch, on_cursor, NULL);
    CHECK(called == before + 1);
    return cur.status;
}

static int cursor_advance(mp_store *st, const char *user, const char *dev, const char *ch, uint64_t seq,
                          const char *epoch)
{
    int before = called;
    mp_store_cursor_advance(st, user, dev, ch, seq, epoch, on_cursor, NULL);
    CHECK(called == before + 1);
    return cur.status;
}

static mp_store_stats stats(mp_store *st)
{
    mp_store_stats s;
    mp_store_get_stats(st, &s);
    return s;
}

/* ---- seqs and appends --------------------------------------------------- */

static void test_next_seq_counts_per_channel(void)
{
    mp_store *st = new_store(10, 0);
    CHECK(next_seq(st, "a") == 1);
    CHECK(next_seq(st, "a") == 2);
    CHECK(next_seq(st, "b") == 1);
    char epoch_a[MP_STORE_EPOCH_MAX];
    next_seq(st, "a");
    strcpy(epoch_a, seq_out.epoch);
    CHECK(seq_out.seq == 3 && strlen(epoch_a) > 0 && strlen(epoch_a) < MP_STORE_EPOCH_MAX);
    next_seq(st, "b");
    CHECK(strcmp(seq_out.epoch, epoch_a) != 0);          /* each channel its own epoch */
    CHECK(stats(st).channels == 2 && stats(st).channels_with_history == 0);
    mp_store_free(st);
}

static void test_append_and_read_in_order(void)
{
    mp_store *st = new_store(100, 0);
    mp_frame *f[5];
    for (int i = 0; i < 5; i++)
        CHECK(publish(st, "news", 0, &f[i]) == (uint64_t)i + 1);
    CHECK(read_since(st, "news", NULL, 0, 100) == MP_STORE_OK);
    CHECK(got.count == 5 && got.first == 1 && got.last == 5 && !got.more);
    CHECK(got.state == MP_STORE_SINCE_OK);
    for (int i = 0; i < 5; i++) {
        CHECK(got.seqs[i] == (uint64_t)i + 1);
        CHECK(got.frames[i] == f[i]);                   /* the same frame: zero copy */
    }
    CHECK(strcmp(got.ids[2], "id-3") == 0);
    read_since(st, "news", NULL, 2, 2);
    CHECK(got.count == 2 && got.seqs[0] == 3 && got.seqs[1] == 4 && got.more);
    read_since(st, "news", NULL, 5, 10);
    CHECK(got.count == 0 && !got.more && got.state == MP_STORE_SINCE_OK);
    read_since(st, "news", NULL, 0, 0);                  /* positions only */
    CHECK(got.count == 0 && got.more && got.first == 1 && got.last == 5);
    for (int i = 0; i < 5; i++) {
        CHECK(f[i]->refs == 2);                         /* ours + the store's */
        mp_frame_unref(f[i]);
    }
    mp_store_free(st);
}

static void test_append_seq_rules(void)
{
    mp_store *st = new_store(100, 0);
    mp_frame *f = make_frame(1);
    CHECK(append(st, "x", 1, f, 0) == MP_STORE_ESEQ);   /* never handed out: unknown channel */
    uint64_t s1 = next_seq(st, "x");
    CHECK(append(st, "x", s1 + 1, f, 0) == MP_STORE_ESEQ);  /* not handed out yet */
    CHECK(append(st, "x", s1, f, 0) == MP_STORE_OK);
    CHECK(append(st, "x", s1, f, 0) == MP_STORE_ESEQ);      /* twice */
    uint64_t s2 = next_seq(st, "x"), s3 = next_seq(st, "x");
    CHECK(append(st, "x", s3, f, 0) == MP_STORE_OK);        /* s2 is store=false: a hole */
    CHECK(append(st, "x", s2, f, 0) == MP_STORE_ESEQ);      /* out of order */
    CHECK(append(st, "x", 0, f, 0) == MP_STORE_EINVAL);
    mp_store_put bad = { .seq = next_seq(st, "x"), .id = "0123456789012345678901234567890123", .frame = f };
    mp_store_append(st, "x", &bad, on_done, NULL);
    CHECK(done_status == MP_STORE_EINVAL);                  /* id too long */
    read_since(st, "x", NULL, 0, 10);
    CHECK(got.count == 2 && got.seqs[0] == s1 && got.seqs[1] == s3 && got.first == 1);
    CHECK(f->refs == 3);
    mp_store_free(st);
    CHECK(f->refs == 1);                                    /* free drops the store's refs */
    mp_frame_unref(f);
}

static void test_names_are_bounded(void)
{
    mp_store *st = new_store(10, 0);
    char long_name[MP_STORE_NAME_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    mp_store_next_seq(st, long_name, on_seq, NULL);
    CHECK(seq_out.status == MP_STORE_EINVAL);
    mp_store_next_seq(st, "", on_seq, NULL);
    CHECK(seq_out.status == MP_STORE_EINVAL);
    long_name[MP_STORE_NAME_MAX] = '\0';                    /* exactly 128: fine */
    CHECK(next_seq(st, long_name) == 1);
    CHECK(read_since(st, "", NULL, 0, 1) == MP_STORE_EINVAL);
    CHECK(cursor_get(st, "", "d", "c") == MP_STORE_EINVAL);
    CHECK(cursor_advance(st, "u", long_name, long_name, 1, NULL) == MP_STORE_OK);
    long_name[MP_STORE_NAME_MAX] = 'n';
    CHECK(cursor_advance(st, "u", long_name, "c", 1, NULL) == MP_STORE_EINVAL);
    mp_store_free(st);
}

static void test_append_past_max_trims_oldest_and_unrefs(void)
{
    mp_store *st = new_store(3, 0);
    mp_frame *f[10];
    for (int i = 0; i < 10; i++)
        publish(st, "c", 0, &f[i]);
    for (int i = 0; i < 10; i++)
        CHECK(f[i]->refs == (i < 7 ? 1u : 2u));         /* trimmed: the store let go */
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 3 && got.seqs[0] == 8 && got.seqs[2] == 10);
    CHECK(got.first == 8 && got.last == 10);
    CHECK(got.state == MP_STORE_SINCE_GAP);              /* 1..7 are gone */
    mp_store_stats s = stats(st);
    CHECK(s.messages == 3 && s.trimmed == 7 && s.expired == 0);
    size_t bytes = 0;
    for (int i = 7; i < 10; i++)
        bytes += mp_frame_size(f[i]);
    CHECK(s.bytes == bytes);
    for (int i = 0; i < 10; i++)
        mp_frame_unref(f[i]);
    mp_store_free(st);
}

static void test_ring_wraps_and_grows(void)
{
    mp_store *st = new_store(50, 0);
    for (int round = 0; round < 7; round++) {
        for (int i = 0; i < 23; i++)
            publish(st, "w", 0, NULL);
        uint64_t last = (uint64_t)(round + 1) * 23;
        read_since(st, "w", NULL, 0, MAXGOT);
        size_t want = last < 50 ? last : 50;
        CHECK(got.count == want && got.last == last && got.seqs[got.count - 1] == last);
        for (size_t i = 1; i < got.count; i++)
            CHECK(got.seqs[i] == got.seqs[i - 1] + 1);
        read_since(st, "w", NULL, last - 5, 3);          /* binary search across the wrap */
        CHECK(got.count == 3 && got.seqs[0] == last - 4 && got.more);
    }
    mp_store_free(st);
}

/* ---- age, ttl, sweep ------------------------------------------------------ */

static void test_age_expiry_at_read(void)
{
    mp_store *st = new_store(100, 10000);
    mp_frame *a, *b;
    publish(st, "c", 0, &a);
    fake_now += 6000;
    publish(st, "c", 0, &b);
    fake_now += 4000;                                    /* a is exactly 10 s old */
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 1 && got.seqs[0] == 2 && got.first == 2);
    CHECK(a->refs == 1 && b->refs == 2);                 /* the read released it */
    read_since(st, "c", NULL, 1, 10);
    CHECK(got.state == MP_STORE_SINCE_OK);               /* since 1 missed nothing */
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.state == MP_STORE_SINCE_GAP);
    CHECK(stats(st).expired == 1);
    fake_now += 6000;
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 0 && got.first == 3 && got.last == 2);
    CHECK(b->refs == 1 && stats(st).messages == 0 && stats(st).bytes == 0);
    CHECK(stats(st).channels_with_history == 0 && stats(st).channels == 1);
    mp_frame_unref(a);
    mp_frame_unref(b);
    mp_store_free(st);
}

static void test_age_expiry_at_sweep(void)
{
    mp_store *st = new_store(100, 10000);
    mp_frame *f[4];
    for (int i = 0; i < 4; i++) {
        publish(st, i < 2 ? "early" : "late", 0, &f[i]);
        fake_now += 1000;
    }
    CHECK(mp_store_sweep(st) == 0);                       /* nothing due yet */
    fake_now += 7000;                                     /* early's two are 11 s and 10 s old */
    CHECK(mp_store_sweep(st) == 2);
    CHECK(f[0]->refs == 1 && f[1]->refs == 1 && f[2]->refs == 2 && f[3]->refs == 2);
    mp_store_stats s = stats(st);
    CHECK(s.messages == 2 && s.expired == 2 && s.channels_with_history == 1);
    CHECK(s.bytes == mp_frame_size(f[2]) + mp_frame_size(f[3]));
    fake_now += 10000;
    CHECK(mp_store_sweep(st) == 2);
    CHECK(f[2]->refs == 1 && f[3]->refs == 1 && stats(st).messages == 0);
    CHECK(stats(st).channels == 2);                       /* not idle yet: seq and epoch kept */
    for (int i = 0; i < 4; i++)
        mp_frame_unref(f[i]);
    mp_store_free(st);
}

static void test_ttl_per_message(void)
{
    mp_store *st = new_store(100, 60000);
    mp_frame *f[4];
    publish(st, "c", 0, &f[0]);
    publish(st, "c", 1000, &f[1]);                        /* shorter than max_age */
    publish(st, "c", 120000, &f[2]);                      /* longer: max_age wins */
    publish(st, "c", 0, &f[3]);
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 4);
    fake_now += 1000;
    read_since(st, "c", NULL, 0, 10);                    /* gone at read, from the middle */
    CHECK(got.count == 3 && got.seqs[0] == 1 && got.seqs[1] == 3 && got.seqs[2] == 4);
    CHECK(got.first == 1 && got.state == MP_STORE_SINCE_OK);  /* ttl is not a gap */
    CHECK(f[1]->refs == 1);
    fake_now += 59000;                                    /* everything reaches max_age */
    CHECK(mp_store_sweep(st) == 3);
    for (int i = 0; i < 4; i++)
        CHECK(f[i]->refs == 1);
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 0 && got.first == 5 && got.state == MP_STORE_SINCE_GAP);
    for (int i = 0; i < 4; i++)
        mp_frame_unref(f[i]);
    mp_store_free(st);
}

static void test_ttl_expiry_is_not_a_gap(void)
{
    mp_store *st = new_store(100, 60000);
    publish(st, "c", 100, NULL);                          /* the oldest, with a short ttl */
    publish(st, "c", 0, NULL);
    fake_now += 100;
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 1 && got.seqs[0] == 2 && got.first == 1 && got.state == MP_STORE_SINCE_OK);
    CHECK(stats(st).expired == 1);
    publish(st, "c", 60001, NULL);                        /* a ttl past max_age: max_age rules */
    fake_now += 60000;
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 0 && got.first == 4 && got.state == MP_STORE_SINCE_GAP);
    mp_store_free(st);
}

static void test_ttl_released_by_sweep_alone(void)
{
    mp_store *st = new_store(100, 0);                     /* no age limit at all */
    mp_frame *keep, *brief;
    publish(st, "c", 0, &keep);
    publish(st, "c", 500, &brief);
    publish(st, "c", 0, NULL);
    fake_now += 499;
    CHECK(mp_store_sweep(st) == 0);
    fake_now += 1;
    CHECK(mp_store_sweep(st) == 1);                       /* found without a read */
    CHECK(brief->refs == 1 && keep->refs == 2 && stats(st).messages == 2);
    fake_now += 1000000;
    CHECK(mp_store_sweep(st) == 0);                       /* no age: kept */
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 2 && got.seqs[0] == 1 && got.seqs[1] == 3);
    mp_frame_unref(keep);
    mp_frame_unref(brief);
    mp_store_free(st);
}

static void test_many_short_ttls_with_trimming(void)
{
    /* Short-ttl messages trimmed before they expire leave stale heap nodes;
     * they must neither leak nor release the wrong message. */
    mp_store *st = new_store(4, 100000);
    mp_frame *f[200];
    for (int i = 0; i < 200; i++) {
        publish(st, "c", i % 2 ? 50000 : 0, &f[i]);
        fake_now += 10;
    }
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 4 && got.seqs[0] == 197 && got.seqs[3] == 200);
    fake_now += 50000;                                    /* odd ones (ttl) are past */
    mp_store_sweep(st);
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 2 && got.seqs[0] == 197 && got.seqs[1] == 199);
    int held = 0;
    for (int i = 0; i < 200; i++) {
        held += f[i]->refs == 2;
        mp_frame_unref(f[i]);
    }
    CHECK(held == 2);
    mp_store_free(st);
}

static void test_ttl_holes_do_not_trim_live_messages(void)
{
    mp_store *st = new_store(3, 0);
    mp_frame *keep;
    publish(st, "c", 0, &keep);                           /* long-lived, the oldest */
    for (int i = 0; i < 50; i++) {
        publish(st, "c", 10, NULL);                       /* each gone before the next */
        fake_now += 10;
    }
    publish(st, "c", 0, NULL);
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 2 && got.seqs[0] == 1 && got.seqs[1] == 52);
    CHECK(keep->refs == 2 && stats(st).trimmed == 0 && stats(st).expired == 50);
    publish(st, "c", 0, NULL);
    publish(st, "c", 0, NULL);                            /* now 4 live: the oldest goes */
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.count == 3 && got.seqs[0] == 52 && keep->refs == 1 && stats(st).trimmed == 1);
    mp_frame_unref(keep);
    mp_store_free(st);
}

/* ---- a random walk against a reference model ------------------------------ */

#define WALK_STEPS 30000
#define WALK_CH 3

typedef struct { uint64_t seq, expires; mp_frame *f; int alive, by_ttl; } model_msg;

static struct {
    model_msg *m;
    size_t n, head;
    uint64_t last, floor;
} model[WALK_CH];

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng % n;
}

static size_t model_live(int c)
{
    size_t live = 0;
    for (size_t i = model[c].head; i < model[c].n; i++)
        live += (size_t)model[c].m[i].alive;
    return live;
}

/* The rules of store.h: a message lost (trimmed, or aged out by max_age
 * while the oldest) moves first_seq; one that ran out its own ttl doesn't;
 * one released by its ttl behind an older message leaves a hole. */
static void model_pop_front(int c, int trim)
{
    model_msg *m = &model[c].m[model[c].head++];
    if (m->alive && (trim || !m->by_ttl))
        model[c].floor = m->seq;
    m->alive = 0;
}

static void model_expire(int c, uint64_t now)
{
    while (model[c].head < model[c].n &&
           (!model[c].m[model[c].head].alive || model[c].m[model[c].head].expires <= now))
        model_pop_front(c, 0);
    for (size_t i = model[c].head; i < model[c].n; i++)
        if (model[c].m[i].expires <= now)
            model[c].m[i].alive = 0;
    while (model[c].head < model[c].n && !model[c].m[model[c].head].alive)
        model_pop_front(c, 0);
}

static void test_random_walk_matches_model(void)
{
    static const char *names[WALK_CH] = { "w0", "w1", "w2" };
    static const uint32_t maxes[] = { 1, 3, 6 };
    static const uint64_t ages[] = { 0, 600, 2000 };
    mp_store_policy pol = { NULL, 3, 2000 };
    mp_store_config cfg = config();
    cfg.default_policy = pol;
    cfg.channel_idle_ms = UINT64_MAX;
    mp_store *st = mp_store_mem_new(&cfg);
    for (int c = 0; c < WALK_CH; c++)
        model[c].m = calloc(WALK_STEPS, sizeof(model_msg));
    int mismatches = 0, reported = 0;
    for (int step = 0; step < WALK_STEPS && mismatches < 5; step++) {
        uint64_t r = rnd(100);
        int c = (int)rnd(WALK_CH);
        if (r < 40) {
            uint64_t seq = next_seq(st, names[c]);
            mismatches += seq != ++model[c].last;
            if (rnd(100) < 15)
                continue;                                  /* store=false */
            uint64_t k = rnd(4), ttl = k < 2 ? 0 : k == 2 ? 1 + rnd(800) : 1 + rnd(5000);
            mp_frame *f = make_frame(seq);
            mismatches += append(st, names[c], seq, f, ttl) != MP_STORE_OK;
            model_expire(c, fake_now);
            while (model[c].head < model[c].n &&
                   (model_live(c) >= pol.max_messages || !model[c].m[model[c].head].alive))
                model_pop_front(c, 1);
            uint64_t life = pol.max_age_ms ? pol.max_age_ms : UINT64_MAX;
            int by_ttl = ttl && ttl < life;
            if (by_ttl)
                life = ttl;
            model[c].m[model[c].n++] = (model_msg){ seq, life == UINT64_MAX ? UINT64_MAX : fake_now + life, f, 1, by_ttl };
        } else if (r < 60) {
            fake_now += rnd(400);
        } else if (r < 80) {
            uint64_t since = rnd(model[c].last + 3);
            size_t max = (size_t)rnd(9);
            int bad_epoch = rnd(10) == 0;
            read_since(st, names[c], bad_epoch ? "nope-1" : NULL, since, max);
            model_expire(c, fake_now);
            if (model[c].last == 0)
                continue;                                  /* channel not created yet */
            uint64_t after = bad_epoch ? 0 : since;
            size_t n = 0;
            int more = 0;
            for (size_t i = model[c].head; i < model[c].n; i++) {
                model_msg *m = &model[c].m[i];
                if (!m->alive || m->seq <= after)
                    continue;
                if (n == max) { more = 1; break; }
                mismatches += n >= got.count || got.seqs[n] != m->seq || got.frames[n] != m->f;
                n++;
            }
            int state = bad_epoch ? MP_STORE_SINCE_EPOCH
                        : since > model[c].last ? MP_STORE_SINCE_AHEAD
                        : since + 1 < model[c].floor + 1 ? MP_STORE_SINCE_GAP : MP_STORE_SINCE_OK;
            mismatches += n != got.count || more != got.more || got.first != model[c].floor + 1 ||
                          got.last != model[c].last || got.state != state;
        } else if (r < 92) {
            mp_store_sweep(st);
            for (int k = 0; k < WALK_CH; k++)
                model_expire(k, fake_now);
        } else if (r < 93) {
            pol.max_messages = maxes[rnd(3)];
            pol.max_age_ms = ages[rnd(3)];
            mismatches += mp_store_set_policies(st, NULL, 0, &pol) != MP_STORE_OK;
        } else {
            if (r == 99) {                                 /* after a sweep: exactly the model */
                mp_store_sweep(st);
                for (int k = 0; k < WALK_CH; k++)
                    model_expire(k, fake_now);
            }
            mp_store_stats s = stats(st);
            size_t live = 0, bytes = 0;
            for (int k = 0; k < WALK_CH; k++)
                for (size_t i = model[k].head; i < model[k].n; i++)
                    if (model[k].m[i].alive) {
                        live++;
                        bytes += mp_frame_size(model[k].m[i].f);
                    }
            if (r == 99) {
                mismatches += s.messages != live || s.bytes != bytes;
                for (int k = 0; k < WALK_CH; k++)
                    for (size_t i = 0; i < model[k].n; i++)
                        mismatches += model[k].m[i].f->refs != 1u + (unsigned)model[k].m[i].alive;
            } else {
                /* the store may hold expired ones until they are read or swept */
                mismatches += s.messages < live || s.bytes < bytes;
            }
        }
        if (mismatches && !reported++)
            fprintf(stderr, "walk: first mismatch at step %d (r=%llu)\n", step, (unsigned long long)r);
    }
    CHECK(mismatches == 0);
    mp_store_free(st);
    for (int c = 0; c < WALK_CH; c++) {
        for (size_t i = 0; i < model[c].n; i++) {
            CHECK(model[c].m[i].f->refs == 1);
            mp_frame_unref(model[c].m[i].f);
        }
        free(model[c].m);
    }
}

/* ---- reads: positions ---------------------------------------------------- */

static void test_since_beyond_head(void)
{
    mp_store *st = new_store(10, 0);
    publish(st, "c", 0, NULL);
    publish(st, "c", 0, NULL);
    read_since(st, "c", NULL, 7, 10);
    CHECK(got.status == MP_STORE_OK && got.count == 0 && got.state == MP_STORE_SINCE_AHEAD);
    read_since(st, "c", NULL, 2, 10);
    CHECK(got.count == 0 && got.state == MP_STORE_SINCE_OK);
    /* since + 1 wraps to 0 here: still ahead, and nothing is read */
    read_since(st, "c", NULL, UINT64_MAX, 10);
    CHECK(got.status == MP_STORE_OK && got.count == 0 && got.state == MP_STORE_SINCE_AHEAD);
    mp_store_free(st);
}

static void test_since_older_than_first_retained(void)
{
    mp_store *st = new_store(3, 0);
    for (int i = 0; i < 6; i++)
        publish(st, "c", 0, NULL);                        /* retained: 4 5 6 */
    read_since(st, "c", NULL, 3, 10);
    CHECK(got.state == MP_STORE_SINCE_OK && got.count == 3 && got.seqs[0] == 4);
    read_since(st, "c", NULL, 2, 10);
    CHECK(got.state == MP_STORE_SINCE_GAP && got.count == 3 && got.seqs[0] == 4);
    mp_store_free(st);
}

static void test_store_false_is_not_a_gap(void)
{
    mp_store *st = new_store(2, 0);
    next_seq(st, "c");                                    /* 1: store=false */
    publish(st, "c", 0, NULL);                            /* 2 */
    next_seq(st, "c");                                    /* 3: store=false */
    publish(st, "c", 0, NULL);                            /* 4 */
    read_since(st, "c", NULL, 0, 10);
    CHECK(got.state == MP_STORE_SINCE_OK && got.count == 2 && got.first == 1);
    publish(st, "c", 0, NULL);                            /* 5 trims 2 */
    read_since(st, "c", NULL, 2, 10);
    CHECK(got.state == MP_STORE_SINCE_OK && got.first == 3 && got.seqs[0] == 4);
    read_since(st, "c", NULL, 1, 10);
    CHECK(got.state == MP_STORE_SINCE_GAP);
    mp_store_free(st);
}

static void test_unknown_channel_reads_empty(void)
{
    mp_store *st = new_store(10, 0);
    CHECK(read_since(st, "nobody", NULL, 0, 10) == MP_STORE_OK);
    CHECK(got.count == 0 && got.last == 0 && got.first == 1 && strcmp(got.epoch, "") == 0);
    CHECK(got.state == MP_STORE_SINCE_OK);
    read_since(st, "nobody", NULL, 3, 10);
    CHECK(got.state == MP_STORE_SINCE_AHEAD);
    read_since(st, "nobody", "abc-1", 3, 10);
    CHECK(got.state == MP_STORE_SINCE_EPOCH);
    CHECK(stats(st).channels == 0);                       /* reads create nothing */
    mp_store_free(st);
}

static int nested_reads;

static void on_read_then_publish(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)ud;
    CHECK(status == MP_STORE_OK && h->count == 2);
    mp_frame *first = h->items[0].frame;
    uint32_t refs = first->refs;
    publish(st, "c", 0, NULL);                            /* trims items[0] from the store */
    CHECK(first->refs == refs - 1 && first->refs >= 1);   /* still ours until we return */
    CHECK(h->items[0].seq == 1 && strcmp(h->items[0].id, "id-1") == 0);
    read_since(st, "c", NULL, 0, 10);                     /* a nested read */
    CHECK(got.count == 2 && got.seqs[0] == 2 && got.seqs[1] == 3);
    CHECK(h->items[1].seq == 2);                          /* our items untouched */
    nested_reads++;
}

static void test_read_items_survive_changes_in_callback(void)
{
    mp_store *st = new_store(2, 0);
    mp_frame *f1;
    publish(st, "c", 0, &f1);
    publish(st, "c", 0, NULL);
    mp_store_read(st, "c", NULL, 0, 10, on_read_then_publish, NULL);
    CHECK(nested_reads == 1);
    CHECK(f1->refs == 1);                                 /* the read let go after the callback */
    mp_frame_unref(f1);
    mp_store_free(st);
}

/* ---- epochs ---------------------------------------------------------------- */

static void test_epoch_differs_between_instances(void)
{
    mp_store *a = new_store(10, 0), *b = new_store(10, 0);
    next_seq(a, "c");
    char ea[MP_STORE_EPOCH_MAX];
    strcpy(ea, seq_out.epoch);
    next_seq(b, "c");
    CHECK(seq_out.seq == 1 && strcmp(ea, seq_out.epoch) != 0);
    mp_store_free(a);
    mp_store_free(b);
}

static void test_trim_and_expiry_keep_epoch(void)
{
    mp_store *st = new_store(2, 1000);
    publish(st, "c", 0, NULL);
    char e[MP_STORE_EPOCH_MAX];
    strcpy(e, seq_out.epoch);
    for (int i = 0; i < 5; i++)
        publish(st, "c", 0, NULL);
    fake_now += 5000;
    mp_store_sweep(st);
    read_since(st, "c", e, 6, 10);
    CHECK(strcmp(got.epoch, e) == 0 && got.state == MP_STORE_SINCE_OK && got.first == 7);
    mp_store_free(st);
}

static void test_flush_changes_epoch_keeps_seq(void)
{
    mp_store *st = new_store(10, 0);
    mp_frame *f;
    publish(st, "c", 0, &f);
    publish(st, "c", 0, NULL);
    char old[MP_STORE_EPOCH_MAX];
    strcpy(old, seq_out.epoch);
    mp_store_flush(st, "c", on_done, NULL);
    CHECK(done_status == MP_STORE_OK && f->refs == 1 && stats(st).messages == 0);
    read_since(st, "c", old, 2, 10);
    CHECK(strcmp(got.epoch, old) != 0 && got.state == MP_STORE_SINCE_EPOCH);
    CHECK(got.count == 0 && got.first == 3 && got.last == 2);
    char fresh[MP_STORE_EPOCH_MAX];
    strcpy(fresh, got.epoch);
    CHECK(publish(st, "c", 0, NULL) == 3);                /* seq goes on */
    CHECK(strcmp(seq_out.epoch, fresh) == 0);
    read_since(st, "c", old, 2, 10);                      /* old epoch: from the start */
    CHECK(got.state == MP_STORE_SINCE_EPOCH && got.count == 1 && got.seqs[0] == 3);
    read_since(st, "c", fresh, 2, 10);
    CHECK(got.state == MP_STORE_SINCE_OK && got.count == 1);
    mp_store_flush(st, "nope", on_done, NULL);
    CHECK(done_status == MP_STORE_ENOENT);
    publish(st, "d", 0, NULL);
    mp_store_flush(st, NULL, on_done, NULL);              /* all */
    CHECK(done_status == MP_STORE_OK && stats(st).messages == 0 && stats(st).bytes == 0);
    read_since(st, "c", fresh, 3, 10);
    CHECK(got.state == MP_STORE_SINCE_EPOCH);
    mp_frame_unref(f);
    mp_store_free(st);
}

/* Past max_channels only a state that retains nothing makes room: the
 * least recently used one, with a new epoch and seq from 1 if it returns. */
static void test_max_channels_drops_only_states_without_history(void)
{
    mp_store_config cfg = config();
    cfg.max_channels = 3;
    mp_store *st = mp_store_mem_new(&cfg);
    mp_frame *fa;
    publish(st, "a", 0, &fa);
    CHECK(next_seq(st, "e1") == 1);                       /* no history: droppable */
    char e1[MP_STORE_EPOCH_MAX];
    strcpy(e1, seq_out.epoch);
    publish(st, "b", 0, NULL);
    CHECK(next_seq(st, "c") == 1);                        /* drops e1, not a (older) */
    CHECK(stats(st).evicted_channels == 1 && stats(st).channels == 3);
    read_since(st, "a", NULL, 0, 10);
    CHECK(got.last == 1 && got.count == 1 && fa->refs == 2);
    CHECK(next_seq(st, "e1") == 1 && strcmp(seq_out.epoch, e1) != 0);   /* drops c */
    read_since(st, "e1", e1, 1, 10);
    CHECK(got.state == MP_STORE_SINCE_EPOCH);
    CHECK(stats(st).evicted_channels == 2);
    mp_frame_unref(fa);
    mp_store_free(st);
}

/* When every state retains messages, a new channel is refused and nothing
 * anyone stored is touched: many new names cannot evict `news`. */
static void test_max_channels_refuses_new_channel_when_all_hold_history(void)
{
    mp_store_config cfg = config();
    cfg.max_channels = 2;
    mp_store *st = mp_store_mem_new(&cfg);
    publish(st, "news", 0, NULL);
    publish(st, "news", 0, NULL);
    char epoch[MP_STORE_EPOCH_MAX];
    strcpy(epoch, seq_out.epoch);
    publish(st, "b", 0, NULL);
    for (int i = 0; i < 50; i++) {
        char name[32];
        snprintf(name, sizeof name, "random-%d", i);
        CHECK(next_seq(st, name) == 0 && seq_out.status == MP_STORE_ECHANNELS);
    }
    CHECK(cursor_advance(st, "u", "d", "random-x", 0, NULL) == MP_STORE_ECHANNELS);
    read_since(st, "news", epoch, 0, 10);
    CHECK(got.state == MP_STORE_SINCE_OK && got.count == 2 && got.last == 2);
    CHECK(stats(st).evicted_channels == 0 && stats(st).channels == 2);
    CHECK(next_seq(st, "news") == 3);                     /* existing channels go on */
    mp_store_free(st);
}

/* Past max_bytes an append is refused; other channels keep every message,
 * and a channel at max_messages still replaces its oldest. */
static void test_max_bytes_refuses_appends(void)
{
    mp_store_config cfg = config();
    cfg.default_policy.max_messages = 2;
    mp_frame *probe = make_frame(1);
    size_t fs = mp_frame_size(probe);
    mp_frame_unref(probe);
    cfg.max_bytes = 4 * fs;                               /* frames for seqs 1..9 are equal size */
    mp_store *st = mp_store_mem_new(&cfg);
    publish(st, "a", 0, NULL);
    publish(st, "a", 0, NULL);
    publish(st, "b", 0, NULL);
    publish(st, "b", 0, NULL);
    CHECK(stats(st).bytes == 4 * fs);
    uint64_t seq = next_seq(st, "c");
    mp_frame *f = make_frame(seq);
    CHECK(append(st, "c", seq, f, 0) == MP_STORE_EFULL);  /* full: refused */
    mp_frame_unref(f);
    mp_store_stats s = stats(st);
    CHECK(s.bytes == 4 * fs && s.messages == 4 && s.evicted_channels == 0 && s.trimmed == 0);
    read_since(st, "a", NULL, 0, 10);
    CHECK(got.count == 2 && got.first == 1);
    CHECK(publish(st, "b", 0, NULL) == 3);                /* replaces b's oldest: fits */
    s = stats(st);
    CHECK(s.bytes == 4 * fs && s.trimmed == 1);
    mp_store_free(st);
}

static void test_idle_empty_channel_freed_by_sweep(void)
{
    mp_store_config cfg = config();
    cfg.channel_idle_ms = 5000;
    cfg.default_policy.max_age_ms = 2000;
    mp_store *st = mp_store_mem_new(&cfg);
    uint64_t t0 = fake_now;
    publish(st, "c", 0, NULL);
    char e[MP_STORE_EPOCH_MAX];
    strcpy(e, seq_out.epoch);
    next_seq(st, "quiet");
    fake_now = t0 + 4000;
    next_seq(st, "quiet");                                /* use: its idle clock restarts */
    CHECK(mp_store_sweep(st) == 1);                       /* c's message expired */
    CHECK(stats(st).messages == 0 && stats(st).channels == 2);   /* empty, not idle yet */
    fake_now = t0 + 5000;
    CHECK(mp_store_sweep(st) == 1);                       /* c: unused for 5 s */
    CHECK(stats(st).channels == 1 && stats(st).idle_channels == 1);
    fake_now = t0 + 8999;
    CHECK(mp_store_sweep(st) == 0);
    fake_now = t0 + 9000;
    CHECK(mp_store_sweep(st) == 1 && stats(st).channels == 0);
    CHECK(next_seq(st, "c") == 1 && strcmp(seq_out.epoch, e) != 0);   /* new epoch, seq from 1 */
    mp_store_free(st);
}

/* ---- policies ---------------------------------------------------------------- */

static void test_policy_matching(void)
{
    mp_store_policy p[] = {
        { "orders:vip", 50, 0 },
        { "orders:*", 5, 0 },
        { "chat", 2, 0 },
        { "*", 7, 0 },
    };
    mp_store_policy def = { NULL, 3, 0 };
    CHECK(mp_store_policy_match(p, 4, &def, "orders:vip")->max_messages == 50);
    CHECK(mp_store_policy_match(p, 4, &def, "orders:1")->max_messages == 5);
    CHECK(mp_store_policy_match(p, 4, &def, "orders:")->max_messages == 5);
    CHECK(mp_store_policy_match(p, 4, &def, "chat")->max_messages == 2);
    CHECK(mp_store_policy_match(p, 4, &def, "chatter")->max_messages == 7);
    CHECK(mp_store_policy_match(p, 3, &def, "chatter") == &def);
    CHECK(mp_store_policy_match(p + 1, 2, &def, "orders:vip")->max_messages == 5);  /* first match wins */

    mp_store_config cfg = config();
    cfg.policies = p;
    cfg.npolicies = 3;
    cfg.default_policy = def;
    mp_store *st = mp_store_mem_new(&cfg);
    for (int i = 0; i < 10; i++) {
        publish(st, "orders:1", 0, NULL);
        publish(st, "chat", 0, NULL);
        publish(st, "other", 0, NULL);
    }
    read_since(st, "orders:1", NULL, 0, 100);
    CHECK(got.count == 5);
    read_since(st, "chat", NULL, 0, 100);
    CHECK(got.count == 2);
    read_since(st, "other", NULL, 0, 100);
    CHECK(got.count == 3);

    mp_store_policy bad = { "or*ders", 5, 0 };
    CHECK(mp_store_set_policies(st, &bad, 1, NULL) == MP_STORE_EINVAL);
    mp_store_policy huge = { "x", MP_STORE_MESSAGES_LIMIT + 1, 0 };
    CHECK(mp_store_set_policies(st, &huge, 1, NULL) == MP_STORE_EINVAL);
    mp_store_policy reload = { "chat", 1, 0 };            /* takes effect at the next append */
    CHECK(mp_store_set_policies(st, &reload, 1, NULL) == MP_STORE_OK);
    publish(st, "chat", 0, NULL);
    read_since(st, "chat", NULL, 0, 100);
    CHECK(got.count == 1 && got.seqs[0] == 11);
    publish(st, "orders:1", 0, NULL);                     /* orders:* is gone: default 3 */
    read_since(st, "orders:1", NULL, 0, 100);
    CHECK(got.count == 3);
    mp_store_free(st);
}

static void test_policy_without_history(void)
{
    mp_store_policy p[] = { { "live:*", 0, 0 } };
    mp_store_config cfg = config();
    cfg.policies = p;
    cfg.npolicies = 1;
    mp_store *st = mp_store_mem_new(&cfg);
    mp_frame *f;
    CHECK(publish(st, "live:x", 0, &f) == 1);             /* accepted, not retained */
    CHECK(f->refs == 1 && stats(st).messages == 0);
    read_since(st, "live:x", NULL, 0, 10);
    CHECK(got.count == 0 && got.last == 1 && got.state == MP_STORE_SINCE_OK);
    CHECK(append(st, "live:x", 1, f, 0) == MP_STORE_ESEQ);  /* still one append per seq */
    mp_frame_unref(f);
    mp_store_free(st);
}

/* ---- cursors ------------------------------------------------------------------ */

static void test_cursor_moves_forward_only(void)
{
    mp_store *st = new_store(10, 0);
    for (int i = 0; i < 5; i++)
        publish(st, "c", 0, NULL);
    CHECK(cursor_get(st, "alice", "phone", "c") == MP_STORE_ENOENT);
    CHECK(cursor_advance(st, "alice", "phone", "c", 3, NULL) == MP_STORE_OK);
    CHECK(cur.seq == 3 && strcmp(cur.epoch, seq_out.epoch) == 0);
    CHECK(cursor_advance(st, "alice", "phone", "c", 2, NULL) == MP_STORE_STALE && cur.seq == 3);
    CHECK(cursor_advance(st, "alice", "phone", "c", 3, NULL) == MP_STORE_STALE && cur.seq == 3);
    CHECK(cursor_advance(st, "alice", "phone", "c", 5, seq_out.epoch) == MP_STORE_OK && cur.seq == 5);
    CHECK(cursor_get(st, "alice", "phone", "c") == MP_STORE_OK && cur.seq == 5);
    CHECK(cursor_get(st, "alice", "laptop", "c") == MP_STORE_ENOENT);   /* per device */
    /* seq 0 is a starting position: stale once the cursor moved past it */
    CHECK(cursor_advance(st, "alice", "phone", "c", 0, NULL) == MP_STORE_STALE && cur.seq == 5);
    CHECK(stats(st).cursors == 1);
    mp_store_free(st);
}

static void test_cursor_at_zero_marks_a_starting_position(void)
{
    mp_store *st = new_store(10, 0);
    /* A device subscribes to a channel nothing was published on yet. */
    CHECK(cursor_advance(st, "bob", "tab", "fresh", 0, NULL) == MP_STORE_OK && cur.seq == 0);
    CHECK(stats(st).channels == 1);                          /* its state now exists */
    publish(st, "fresh", 0, NULL);
    CHECK(cursor_get(st, "bob", "tab", "fresh") == MP_STORE_OK && cur.seq == 0);
    CHECK(strcmp(cur.epoch, seq_out.epoch) == 0);            /* same epoch: seq 1 is owed */
    CHECK(cursor_advance(st, "bob", "tab", "fresh", 1, NULL) == MP_STORE_OK && cur.seq == 1);
    mp_store_free(st);
}

static void test_cursor_beyond_last_seq_refused(void)
{
    mp_store *st = new_store(10, 0);
    publish(st, "c", 0, NULL);
    next_seq(st, "c");                                     /* 2, store=false: still published */
    CHECK(cursor_advance(st, "u", "d", "c", 3, NULL) == MP_STORE_ERANGE);
    CHECK(cursor_get(st, "u", "d", "c") == MP_STORE_ENOENT);
    CHECK(cursor_advance(st, "u", "d", "c", 2, NULL) == MP_STORE_OK);
    CHECK(cursor_advance(st, "u", "d", "unknown", 1, NULL) == MP_STORE_ERANGE);
    CHECK(stats(st).cursors == 1);
    mp_store_free(st);
}

static void test_cursor_epochs(void)
{
    mp_store *st = new_store(10, 0);
    for (int i = 0; i < 4; i++)
        publish(st, "c", 0, NULL);
    char old[MP_STORE_EPOCH_MAX];
    strcpy(old, seq_out.epoch);
    CHECK(cursor_advance(st, "u", "d", "c", 4, NULL) == MP_STORE_OK);
    CHECK(cursor_advance(st, "u", "d", "c", 4, "other-1") == MP_STORE_EEPOCH);
    mp_store_flush(st, "c", NULL, NULL);
    CHECK(cursor_get(st, "u", "d", "c") == MP_STORE_OK && strcmp(cur.epoch, old) == 0);
    CHECK(cursor_advance(st, "u", "d", "c", 4, old) == MP_STORE_EEPOCH);  /* an ack from before */
    publish(st, "c", 0, NULL);                              /* 5, new epoch */
    CHECK(cursor_advance(st, "u", "d", "c", 2, NULL) == MP_STORE_OK);    /* replaces the old-epoch cursor */
    CHECK(cur.seq == 2 && strcmp(cur.epoch, old) != 0 && strcmp(cur.epoch, seq_out.epoch) == 0);
    mp_store_free(st);
}

static void test_cursor_lru_cap(void)
{
    mp_store_config cfg = config();
    cfg.max_cursors = 3;
    mp_store *st = mp_store_mem_new(&cfg);
    publish(st, "c", 0, NULL);
    CHECK(cursor_advance(st, "u", "d1", "c", 1, NULL) == MP_STORE_OK);
    CHECK(cursor_advance(st, "u", "d2", "c", 1, NULL) == MP_STORE_OK);
    CHECK(cursor_advance(st, "u", "d3", "c", 1, NULL) == MP_STORE_OK);
    CHECK(cursor_get(st, "u", "d1", "c") == MP_STORE_OK);   /* d1 used: d2 is now the oldest */
    CHECK(cursor_advance(st, "u", "d4", "c", 1, NULL) == MP_STORE_OK);
    CHECK(cursor_get(st, "u", "d2", "c") == MP_STORE_ENOENT);
    CHECK(cursor_get(st, "u", "d1", "c") == MP_STORE_OK);
    CHECK(cursor_get(st, "u", "d3", "c") == MP_STORE_OK);
    CHECK(cursor_get(st, "u", "d4", "c") == MP_STORE_OK);
    mp_store_stats s = stats(st);
    CHECK(s.cursors == 3 && s.evicted_cursors == 1);
    for (int i = 0; i < 100; i++) {                       /* churn stays bounded */
        char dev[16];
        snprintf(dev, sizeof dev, "x%d", i);
        cursor_advance(st, "v", dev, "c", 1, NULL);
    }
    CHECK(stats(st).cursors == 3 && stats(st).evicted_cursors == 101);
    mp_store_free(st);
}

static void test_cursor_ttl(void)
{
    mp_store_config cfg = config();
    cfg.cursor_ttl_ms = 10000;
    mp_store *st = mp_store_mem_new(&cfg);
    publish(st, "c", 0, NULL);
    cursor_advance(st, "u", "a", "c", 1, NULL);
    cursor_advance(st, "u", "b", "c", 1, NULL);
    cursor_advance(st, "u", "z", "c", 1, NULL);
    fake_now += 6000;
    CHECK(cursor_get(st, "u", "b", "c") == MP_STORE_OK);   /* use restarts b's ttl */
    CHECK(cursor_advance(st, "u", "z", "c", 1, NULL) == MP_STORE_STALE);   /* a stale ack too */
    fake_now += 4000;
    CHECK(cursor_get(st, "u", "a", "c") == MP_STORE_ENOENT);   /* expired at read, before the sweep */
    CHECK(stats(st).expired_cursors == 1 && stats(st).cursors == 2);
    fake_now += 5999;
    CHECK(mp_store_sweep(st) == 0);
    fake_now += 1;
    CHECK(mp_store_sweep(st) == 2);                        /* b and z, at the sweep */
    CHECK(stats(st).cursors == 0 && stats(st).expired_cursors == 3);
    mp_store_free(st);
}

static void test_cursor_delete_device(void)
{
    mp_store *st = new_store(10, 0);
    publish(st, "c1", 0, NULL);
    publish(st, "c2", 0, NULL);
    cursor_advance(st, "alice", "phone", "c1", 1, NULL);
    cursor_advance(st, "alice", "phone", "c2", 1, NULL);
    cursor_advance(st, "alice", "laptop", "c1", 1, NULL);
    cursor_advance(st, "bob", "phone", "c1", 1, NULL);
    mp_store_cursor_delete_device(st, "alice", "phone", on_done, NULL);
    CHECK(done_status == MP_STORE_OK && stats(st).cursors == 2);
    CHECK(cursor_get(st, "alice", "phone", "c1") == MP_STORE_ENOENT);
    CHECK(cursor_get(st, "alice", "phone", "c2") == MP_STORE_ENOENT);
    CHECK(cursor_get(st, "alice", "laptop", "c1") == MP_STORE_OK);
    CHECK(cursor_get(st, "bob", "phone", "c1") == MP_STORE_OK);
    mp_store_cursor_delete_device(st, "alice", "phone", on_done, NULL);   /* none left: fine */
    CHECK(done_status == MP_STORE_OK);
    mp_store_cursor_delete_device(st, "alice", "", on_done, NULL);
    CHECK(done_status == MP_STORE_EINVAL);
    cursor_advance(st, "alice", "phone", "c1", 1, NULL);  /* the device comes back */
    CHECK(stats(st).cursors == 3);
    mp_store_free(st);
}

static void test_cursor_keys_do_not_collide(void)
{
    mp_store *st = new_store(10, 0);
    publish(st, "c", 0, NULL);
    publish(st, "c", 0, NULL);
    publish(st, "b:c", 0, NULL);
    cursor_advance(st, "a", "b:c", "c", 1, NULL);
    cursor_advance(st, "a:b", "c", "c", 2, NULL);
    cursor_advance(st, "a", "b", "c", 1, NULL);
    CHECK(cursor_get(st, "a", "b:c", "c") == MP_STORE_OK && cur.seq == 1);
    CHECK(cursor_get(st, "a:b", "c", "c") == MP_STORE_OK && cur.seq == 2);
    CHECK(stats(st).cursors == 3);
    mp_store_cursor_delete_device(st, "a", "b", NULL, NULL);  /* not a prefix match on "b:c" */
    CHECK(cursor_get(st, "a", "b:c", "c") == MP_STORE_OK && stats(st).cursors == 2);
    mp_store_free(st);
}

/* ---- stats and the null callback ---------------------------------------------- */

static void test_stats(void)
{
    mp_store_config cfg = config();
    cfg.default_policy.max_messages = 2;
    cfg.max_channels = 3;
    mp_store *st = mp_store_mem_new(&cfg);
    mp_store_stats s = stats(st);
    CHECK(s.messages == 0 && s.bytes == 0 && s.channels == 0 && s.cursors == 0);
    mp_frame *f[3];
    publish(st, "a", 0, &f[0]);
    publish(st, "a", 0, &f[1]);
    publish(st, "a", 0, &f[2]);
    publish(st, "b", 0, NULL);
    next_seq(st, "c");
    cursor_advance(st, "u", "d", "a", 3, NULL);
    s = stats(st);
    CHECK(s.messages == 3 && s.channels == 3 && s.channels_with_history == 2 && s.cursors == 1);
    CHECK(s.trimmed == 1 && s.evicted_channels == 0);
    mp_frame *fb = make_frame(1);
    CHECK(s.bytes == mp_frame_size(f[1]) + mp_frame_size(f[2]) + mp_frame_size(fb));
    next_seq(st, "d");                                     /* replaces c, which retains nothing */
    s = stats(st);
    CHECK(s.evicted_channels == 1 && s.messages == 3);
    CHECK(s.channels == 3 && s.channels_with_history == 2);
    CHECK(f[0]->refs == 1 && f[1]->refs == 2 && f[2]->refs == 2);
    for (int i = 0; i < 3; i++)
        mp_frame_unref(f[i]);
    mp_frame_unref(fb);
    mp_store_free(st);
}

static void test_null_callbacks_and_strerror(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_next_seq(st, "c", NULL, NULL);
    mp_frame *f = make_frame(1);
    mp_store_put m = { .seq = 1, .id = "x", .frame = f };
    mp_store_append(st, "c", &m, NULL, NULL);
    mp_store_read(st, "c", NULL, 0, 10, NULL, NULL);
    mp_store_cursor_advance(st, "u", "d", "c", 1, NULL, NULL, NULL);
    mp_store_cursor_get(st, "u", "d", "c", NULL, NULL);
    mp_store_flush(st, "c", NULL, NULL);
    mp_store_cursor_delete_device(st, "u", "d", NULL, NULL);
    CHECK(f->refs == 1 && stats(st).cursors == 0);
    mp_frame_unref(f);
    CHECK(strcmp(mp_store_strerror(MP_STORE_OK), "ok") == 0);
    CHECK(strcmp(mp_store_strerror(MP_STORE_ERANGE), mp_store_strerror(MP_STORE_ESEQ)) != 0);
    CHECK(strlen(mp_store_strerror(12345)) > 0);
    mp_store_free(st);
    mp_store_free(NULL);
}

/* ---- v2: publish, watch, live delivery ----------------------------------- */

#define MAXLIVE 64

/* Every live event in order: 'm' message, 'r' reset, 'c' publish callback. */
static struct {
    int n;
    char kind[MAXLIVE];
    uint64_t seq[MAXLIVE];          /* message seq; reset: last_seq; callback: seq */
    uint64_t first[MAXLIVE];        /* reset: first_seq */
    int reason[MAXLIVE];
    int status[MAXLIVE];            /* callback status */
    char epoch[MAXLIVE][MP_STORE_EPOCH_MAX];
    char data[MAXLIVE][64];         /* message: the data pointer's text */
    char kinds[MAXLIVE][32];
    int payload_ok[MAXLIVE];        /* message: frame == the standard envelope */
} live;

static void live_clear(void) { memset(&live, 0, sizeof live); }

static int live_slot(char kind)
{
    int i = live.n < MAXLIVE ? live.n++ : MAXLIVE - 1;
    live.kind[i] = kind;
    return i;
}

static void on_live_message(mp_store *st, const mp_store_live *m, void *ud)
{
    (void)st; (void)ud;
    int i = live_slot('m');
    live.seq[i] = m->seq;
    snprintf(live.epoch[i], sizeof live.epoch[i], "%s", m->epoch);
    snprintf(live.data[i], sizeof live.data[i], "%.*s", (int)m->data_len, m->data);
    snprintf(live.kinds[i], sizeof live.kinds[i], "%s", m->kinds);
    mp_frame *want = mp_envelope_frame(m->channel, m->seq, m->id, m->data, m->data_len, m->published_ms);
    live.payload_ok[i] = want && mp_frame_size(want) == mp_frame_size(m->frame) &&
                         memcmp(mp_frame_bytes(want), mp_frame_bytes(m->frame), mp_frame_size(want)) == 0 &&
                         m->frame->published == (double)m->published_ms / 1000.0;
    mp_frame_unref(want);
}

static void on_live_reset(mp_store *st, const char *channel, const char *epoch, uint64_t first_seq,
                          uint64_t last_seq, int reason, void *ud)
{
    (void)st; (void)channel; (void)ud;
    int i = live_slot('r');
    live.seq[i] = last_seq;
    live.first[i] = first_seq;
    live.reason[i] = reason;
    snprintf(live.epoch[i], sizeof live.epoch[i], "%s", epoch);
}

static void on_published(mp_store *st, int status, uint64_t seq, const char *epoch, void *ud)
{
    (void)st; (void)ud;
    called++;
    int i = live_slot('c');
    live.status[i] = status;
    live.seq[i] = seq;
    snprintf(live.epoch[i], sizeof live.epoch[i], "%s", epoch ? epoch : "");
}

static const mp_store_live_handler live_handler = { on_live_message, on_live_reset, NULL };

static int publish_msg(mp_store *st, const char *ch, const char *data, int store)
{
    mp_store_msg m = { .id = "m-1", .data = data, .data_len = strlen(data), .store = store, .kinds = "pos,web" };
    int before = called;
    mp_store_publish(st, ch, &m, on_published, NULL);
    CHECK(called > before);   /* more when a handler published too */
    return live.status[live.n - 1];
}

static struct {
    int status;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
} watched;

static void on_watch(mp_store *st, int status, const char *epoch, uint64_t last_seq, void *ud)
{
    (void)st; (void)ud;
    called++;
    watched.status = status;
    snprintf(watched.epoch, sizeof watched.epoch, "%s", epoch ? epoch : "");
    watched.last = last_seq;
}

static int watch(mp_store *st, const char *ch)
{
    int before = called;
    mp_store_watch(st, ch, on_watch, NULL);
    CHECK(called == before + 1);
    return watched.status;
}

static void test_publish_retains_the_standard_envelope(void)
{
    mp_store *st = new_store(10, 0);
    live_clear();
    CHECK(publish_msg(st, "news", "{\"a\":1}", 1) == MP_STORE_OK && live.seq[0] == 1);
    CHECK(publish_msg(st, "news", "[2]", 1) == MP_STORE_OK && live.seq[1] == 2);
    CHECK(strcmp(live.epoch[0], live.epoch[1]) == 0 && live.epoch[0][0]);
    CHECK(read_since(st, "news", NULL, 0, 10) == MP_STORE_OK && got.count == 2);
    mp_frame *want = mp_envelope_frame("news", 2, "m-1", "[2]", 3, 0);
    const char *text = "{\"type\":\"message\",\"channel\":\"news\",\"seq\":2,\"id\":\"m-1\",\"data\":[2]}";
    size_t plen;
    const uint8_t *payload = mp_frame_ws_payload(got.frames[1], &plen);
    CHECK(plen == strlen(text) && memcmp(payload, text, plen) == 0);
    CHECK(mp_frame_size(want) == mp_frame_size(got.frames[1]) &&
          memcmp(mp_frame_bytes(want), mp_frame_bytes(got.frames[1]), mp_frame_size(want)) == 0);
    CHECK(strcmp(got.ids[1], "m-1") == 0 && strcmp(got.epoch, live.epoch[0]) == 0);
    mp_frame_unref(want);
    CHECK(live.n == 2);   /* nobody watches: callbacks only */
    mp_store_free(st);
}

static void test_on_message_comes_before_the_callback_in_order(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_set_live_handler(st, &live_handler);
    live_clear();
    CHECK(watch(st, "news") == MP_STORE_OK && strcmp(watched.epoch, "") == 0 && watched.last == 0);
    for (int i = 0; i < 3; i++)
        publish_msg(st, "news", "{\"n\":1}", 1);
    CHECK(live.n == 6);
    for (int i = 0; i < 3; i++) {
        CHECK(live.kind[2 * i] == 'm' && live.seq[2 * i] == (uint64_t)i + 1);
        CHECK(live.kind[2 * i + 1] == 'c' && live.seq[2 * i + 1] == (uint64_t)i + 1);
        CHECK(live.payload_ok[2 * i] && strcmp(live.data[2 * i], "{\"n\":1}") == 0);
        CHECK(strcmp(live.kinds[2 * i], "pos,web") == 0);
        CHECK(strcmp(live.epoch[2 * i], live.epoch[2 * i + 1]) == 0);
    }
    /* Only the watched channel is live. */
    publish_msg(st, "other", "1", 1);
    CHECK(live.n == 7 && live.kind[6] == 'c');
    mp_store_free(st);
}

static void test_store_false_is_still_live(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_set_live_handler(st, &live_handler);
    live_clear();
    watch(st, "news");
    publish_msg(st, "news", "1", 1);
    publish_msg(st, "news", "2", 0);
    publish_msg(st, "news", "3", 1);
    CHECK(live.n == 6 && live.kind[2] == 'm' && live.seq[2] == 2 && strcmp(live.data[2], "2") == 0);
    CHECK(read_since(st, "news", NULL, 0, 10) == MP_STORE_OK && got.count == 2 && got.seqs[0] == 1 &&
          got.seqs[1] == 3 && got.last == 3 && got.first == 1);
    mp_store_free(st);
}

static void test_refused_publish_delivers_nothing(void)
{
    mp_store_config cfg = config();
    cfg.max_channels = 1;
    cfg.max_bytes = 200;
    mp_store *st = mp_store_mem_new(&cfg);
    mp_store_set_live_handler(st, &live_handler);
    live_clear();
    watch(st, "a");
    watch(st, "b");
    CHECK(publish_msg(st, "a", "1", 1) == MP_STORE_OK);
    /* "a" retains a message: no room for "b"'s state. */
    CHECK(publish_msg(st, "b", "1", 1) == MP_STORE_ECHANNELS && live.seq[live.n - 1] == 0);
    /* Past max_bytes: refused, and the seq is not taken. */
    char big[200];
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(publish_msg(st, "a", big, 1) == MP_STORE_EFULL);
    CHECK(live.n == 4 && live.kind[0] == 'm' && live.kind[1] == 'c' && live.kind[2] == 'c' && live.kind[3] == 'c');
    CHECK(publish_msg(st, "a", "2", 1) == MP_STORE_OK && live.seq[live.n - 1] == 2 && live.kind[4] == 'm');
    mp_store_free(st);
}

static void test_publish_checks_its_input(void)
{
    mp_store *st = new_store(10, 0);
    live_clear();
    mp_store_msg ok = { .id = "x", .data = "1", .data_len = 1, .store = 1 };
    mp_store_msg m = ok;
    mp_store_publish(st, "has space", &m, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    mp_store_publish(st, "", &m, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    m.id = "a\"b";
    mp_store_publish(st, "c", &m, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    m = ok;
    m.id = "0123456789012345678901234567890123";
    mp_store_publish(st, "c", &m, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    m = ok;
    m.data_len = 0;
    mp_store_publish(st, "c", &m, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    m = ok;
    m.kinds = "pos, web";
    mp_store_publish(st, "c", &m, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    mp_store_publish(st, "c", NULL, on_published, NULL);
    CHECK(live.status[live.n - 1] == MP_STORE_EINVAL);
    CHECK(stats(st).channels == 0);
    mp_store_publish(st, "c", &ok, NULL, NULL);   /* NULL callback */
    CHECK(stats(st).messages == 1);
    mp_store_free(st);
}

/* A handler that publishes again on the channel it was called for. */
static int nested_left;

static void on_message_publishing(mp_store *st, const mp_store_live *m, void *ud)
{
    on_live_message(st, m, ud);
    if (nested_left-- > 0)
        publish_msg(st, m->channel, "\"again\"", 1);
    int i = live_slot('e');   /* end of this on_message */
    live.seq[i] = m->seq;
}

static void test_publish_from_a_handler_keeps_order(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_live_handler h = { on_message_publishing, on_live_reset, NULL };
    mp_store_set_live_handler(st, &h);
    live_clear();
    nested_left = 2;
    watch(st, "news");
    publish_msg(st, "news", "1", 1);
    /* m1, (nested publish: its callback), e1, m2, (callback of 3), e2, m3, e3, c1 */
    const char *want = "mcemcemec";
    CHECK(live.n == (int)strlen(want));
    uint64_t last = 0;
    for (int i = 0; i < live.n; i++) {
        CHECK(live.kind[i] == want[i]);
        if (live.kind[i] == 'm') {
            CHECK(live.seq[i] == last + 1);
            last = live.seq[i];
        }
    }
    mp_store_free(st);
}

static void test_watch_position_and_unwatch(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_set_live_handler(st, &live_handler);
    live_clear();
    publish_msg(st, "news", "1", 1);
    char epoch[MP_STORE_EPOCH_MAX];
    strcpy(epoch, live.epoch[0]);
    CHECK(watch(st, "news") == MP_STORE_OK && strcmp(watched.epoch, epoch) == 0 && watched.last == 1);
    publish_msg(st, "news", "2", 1);
    CHECK(watch(st, "news") == MP_STORE_OK && watched.last == 2);   /* idempotent */
    CHECK(watch(st, "bad name") == MP_STORE_EINVAL);
    mp_store_unwatch(st, "news");
    mp_store_unwatch(st, "news");
    mp_store_unwatch(st, "never");
    int n = live.n;
    publish_msg(st, "news", "3", 1);
    CHECK(live.n == n + 1 && live.kind[n] == 'c');
    /* A watch of a channel with no state yet adopts its first epoch quietly. */
    watch(st, "fresh");
    publish_msg(st, "fresh", "1", 1);
    CHECK(live.kind[n + 1] == 'm' && live.seq[n + 1] == 1 && live.kind[n + 2] == 'c');
    mp_store_free(st);
}

static void test_flush_resets_watchers(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_set_live_handler(st, &live_handler);
    live_clear();
    watch(st, "news");
    watch(st, "quiet");
    publish_msg(st, "news", "1", 1);
    publish_msg(st, "news", "2", 1);
    char old[MP_STORE_EPOCH_MAX];
    strcpy(old, live.epoch[0]);
    live_clear();
    int before = called;
    mp_store_flush(st, NULL, on_done, NULL);
    CHECK(called == before + 1 && done_status == MP_STORE_OK);
    /* "quiet" has no state: nothing to reset. */
    CHECK(live.n == 1 && live.kind[0] == 'r' && live.reason[0] == MP_STORE_SINCE_EPOCH);
    CHECK(live.first[0] == 3 && live.seq[0] == 2 && strcmp(live.epoch[0], old) != 0);
    char fresh[MP_STORE_EPOCH_MAX];
    strcpy(fresh, live.epoch[0]);
    publish_msg(st, "news", "3", 1);
    CHECK(live.n == 3 && live.kind[1] == 'm' && live.seq[1] == 3 && strcmp(live.epoch[1], fresh) == 0);
    mp_store_flush(st, "news", NULL, NULL);
    CHECK(live.n == 4 && live.kind[3] == 'r' && live.first[3] == 4 && live.seq[3] == 3);
    mp_store_free(st);
}

static void test_recreated_channel_resets_watchers(void)
{
    mp_store_config cfg = config();
    cfg.default_policy.max_messages = 0;     /* nothing retained: the state goes when idle */
    cfg.channel_idle_ms = 1000;
    mp_store *st = mp_store_mem_new(&cfg);
    mp_store_set_live_handler(st, &live_handler);
    live_clear();
    watch(st, "news");
    publish_msg(st, "news", "1", 1);
    publish_msg(st, "news", "2", 1);
    fake_now += 2000;
    mp_store_sweep(st);
    CHECK(stats(st).channels == 0);
    live_clear();
    publish_msg(st, "news", "3", 1);
    CHECK(live.n == 3 && live.kind[0] == 'r' && live.first[0] == 1 && live.seq[0] == 0);
    CHECK(live.kind[1] == 'm' && live.seq[1] == 1 && strcmp(live.epoch[0], live.epoch[1]) == 0);
    mp_store_free(st);
}

static void on_message_unwatching(mp_store *st, const mp_store_live *m, void *ud)
{
    on_live_message(st, m, ud);
    mp_store_unwatch(st, m->channel);
    publish_msg(st, m->channel, "\"after\"", 1);
}

static void test_unwatch_from_a_handler(void)
{
    mp_store *st = new_store(10, 0);
    mp_store_live_handler h = { on_message_unwatching, on_live_reset, NULL };
    mp_store_set_live_handler(st, &h);
    live_clear();
    watch(st, "news");
    publish_msg(st, "news", "1", 1);
    CHECK(live.n == 3 && live.kind[0] == 'm' && live.kind[1] == 'c' && live.kind[2] == 'c');
    CHECK(stats(st).messages == 2);
    mp_store_free(st);
}

int main(void)
{
    RUN(test_next_seq_counts_per_channel);
    RUN(test_append_and_read_in_order);
    RUN(test_append_seq_rules);
    RUN(test_names_are_bounded);
    RUN(test_append_past_max_trims_oldest_and_unrefs);
    RUN(test_ring_wraps_and_grows);
    RUN(test_age_expiry_at_read);
    RUN(test_age_expiry_at_sweep);
    RUN(test_ttl_per_message);
    RUN(test_ttl_expiry_is_not_a_gap);
    RUN(test_ttl_released_by_sweep_alone);
    RUN(test_many_short_ttls_with_trimming);
    RUN(test_ttl_holes_do_not_trim_live_messages);
    RUN(test_random_walk_matches_model);
    RUN(test_since_beyond_head);
    RUN(test_since_older_than_first_retained);
    RUN(test_store_false_is_not_a_gap);
    RUN(test_unknown_channel_reads_empty);
    RUN(test_read_items_survive_changes_in_callback);
    RUN(test_epoch_differs_between_instances);
    RUN(test_trim_and_expiry_keep_epoch);
    RUN(test_flush_changes_epoch_keeps_seq);
    RUN(test_max_channels_drops_only_states_without_history);
    RUN(test_max_channels_refuses_new_channel_when_all_hold_history);
    RUN(test_max_bytes_refuses_appends);
    RUN(test_idle_empty_channel_freed_by_sweep);
    RUN(test_policy_matching);
    RUN(test_policy_without_history);
    RUN(test_cursor_moves_forward_only);
    RUN(test_cursor_at_zero_marks_a_starting_position);
    RUN(test_cursor_beyond_last_seq_refused);
    RUN(test_cursor_epochs);
    RUN(test_cursor_lru_cap);
    RUN(test_cursor_ttl);
    RUN(test_cursor_delete_device);
    RUN(test_cursor_keys_do_not_collide);
    RUN(test_stats);
    RUN(test_null_callbacks_and_strerror);
    RUN(test_publish_retains_the_standard_envelope);
    RUN(test_on_message_comes_before_the_callback_in_order);
    RUN(test_store_false_is_still_live);
    RUN(test_refused_publish_delivers_nothing);
    RUN(test_publish_checks_its_input);
    RUN(test_publish_from_a_handler_keeps_order);
    RUN(test_watch_position_and_unwatch);
    RUN(test_flush_resets_watchers);
    RUN(test_recreated_channel_resets_watchers);
    RUN(test_unwatch_from_a_handler);
    return check_report("test_store");
}
