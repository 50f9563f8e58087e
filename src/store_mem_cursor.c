/* store_mem_cursor.c — device cursors of the memory store.
 *
 * Owns the cursor of each (user, device, channel): the last seq that device
 * acked and its epoch. Cursors are in a uthash table by key and, for
 * "delete all of a device", in a list per device (a small table of devices
 * by user + device); an LRU list orders them for max_cursors and
 * cursor_ttl_ms.
 */
#include <stdlib.h>

#include "store_mem_int.h"

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

void mem_cursor_get(mp_store *base, const char *user, const char *device, const char *channel,
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

void mem_cursor_advance(mp_store *base, const char *user, const char *device, const char *channel,
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
    chan *ch = seq ? mem_find_chan(st, channel, name_len(channel))
                   : mem_get_or_create_chan(st, channel, name_len(channel), now_ms(st), &status);
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

void mem_cursor_delete_device(mp_store *base, const char *user, const char *device,
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

size_t mem_cursor_sweep(mem_store *st, uint64_t now)
{
    size_t n = 0;
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

void mem_cursor_free_all(mem_store *st)
{
    while (st->cursors)
        free_cursor(st, st->cursors);
}
