/* store_redis_cursor.c — the Redis store's device cursors.
 *
 * A device's cursors live in one hash on the shard of its user (the key is
 * built by cursor_key below). An advance is two steps: the channel's
 * position on the channel's shard, then the cursor script on the user's.
 */
#include "store_redis_int.h"

/* ---- operations: cursors --------------------------------------------------- */

static int user_shard(rstore *st, const char *user) { return mp_redis_shard_of(st->r, user, strlen(user)); }

/* The one place cursor keys are built. 0 if a name is empty or too long. */
static size_t cursor_key(char out[KEY_MAX], const char *user, const char *device)
{
    size_t ul = name_len(user), dl = name_len(device);
    if (!ul || !dl)
        return 0;
    return (size_t)snprintf(out, KEY_MAX, "mp:cur:%zu:{%s}:%s", ul, user, device);
}

static void got_cursor(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_cursor_cb cb = (mp_store_cursor_cb)o->cb;
    char epoch[MP_STORE_EPOCH_MAX];
    unsigned long long seq;
    int n = 0;
    if (rep && rep->type == REDIS_REPLY_NIL) {
        if (cb) cb(&o->st->base, MP_STORE_ENOENT, NULL, o->ud);
    } else if (rep && rep->type == REDIS_REPLY_STRING &&
               sscanf(rep->str, "%31s %llu%n", epoch, &seq, &n) == 2 && (size_t)n == rep->len) {
        mp_store_cursor c = { seq, epoch };
        if (cb) cb(&o->st->base, MP_STORE_OK, &c, o->ud);
    } else {
        int status = rs_script_failed(o->st, "cursor_get", rep);
        if (cb) cb(&o->st->base, status, NULL, o->ud);
    }
    free(o);
}

void rs_cursor_get(mp_store *base, const char *user, const char *device, const char *channel,
                          mp_store_cursor_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device);
    int status;
    op *o = rs_op_start(st, klen && channel_ok(channel), (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    char ttl[24];
    const char *a[3] = { key, channel, ttl };
    size_t l[3] = { klen, strlen(channel),
                    (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)st->cursor_ttl_ms) };
    mp_redis_eval(st->r, user_shard(st, user), st->s_cget, got_cursor, o, 1, 3, a, l);
}

static void cursor_moved(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_cursor_cb cb = (mp_store_cursor_cb)o->cb;
    char status_s[8], epoch[MP_STORE_EPOCH_MAX];
    uint64_t seq;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        str_of(rep->element[0], status_s, sizeof status_s) < 0 || str_of(rep->element[1], epoch, sizeof epoch) < 0 ||
        u64_of(rep->element[2], &seq) < 0) {
        int status = rs_script_failed(o->st, "cursor_advance", rep);
        if (cb) cb(&o->st->base, status, NULL, o->ud);
        free(o);
        return;
    }
    int status = strcmp(status_s, "OK") == 0      ? MP_STORE_OK
                 : strcmp(status_s, "STALE") == 0 ? MP_STORE_STALE
                 : strcmp(status_s, "EEPOCH") == 0 ? MP_STORE_EEPOCH
                                                   : MP_STORE_ERANGE;
    mp_store_cursor c = { seq, epoch };
    if (cb) cb(&o->st->base, status, status >= 0 ? &c : NULL, o->ud);
    free(o);
}

/* Step 1 answered: the channel's position, then the cursor on the user's shard. */
static void cursor_position(mp_redis *r, const redisReply *rep, void *ud)
{
    op *o = ud;
    rstore *st = o->st;
    char epoch[MP_STORE_EPOCH_MAX];
    uint64_t last;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        str_of(rep->element[0], epoch, sizeof epoch) < 0 || u64_of(rep->element[1], &last) < 0) {
        cursor_moved(r, rep && rep->type == REDIS_REPLY_ERROR ? rep : NULL, o);
        return;
    }
    char key[KEY_MAX], lastb[24], seqb[24], ttl[24];
    size_t klen = cursor_key(key, o->user, o->device);
    const char *a[7] = { key, o->channel, epoch, lastb, seqb, o->epoch, ttl };
    size_t l[7] = { klen, strlen(o->channel), strlen(epoch),
                    (size_t)snprintf(lastb, sizeof lastb, "%llu", (unsigned long long)last),
                    (size_t)snprintf(seqb, sizeof seqb, "%llu", (unsigned long long)o->seq), strlen(o->epoch),
                    (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)st->cursor_ttl_ms) };
    mp_redis_eval(st->r, user_shard(st, o->user), st->s_cadv, cursor_moved, o, 1, 7, a, l);
}

void rs_cursor_advance(mp_store *base, const char *user, const char *device, const char *channel,
                              uint64_t seq, const char *epoch, mp_store_cursor_cb cb, void *ud)
{
    rstore *st = (rstore *)base;
    char key[KEY_MAX];
    int status;
    op *o = rs_op_start(st, cursor_key(key, user, device) && channel_ok(channel) && epoch_ok(epoch), (void *)cb, ud,
                     &status);
    if (!o) {
        if (cb) cb(base, status, NULL, ud);
        return;
    }
    snprintf(o->user, sizeof o->user, "%s", user);
    snprintf(o->device, sizeof o->device, "%s", device);
    snprintf(o->channel, sizeof o->channel, "%s", channel);
    snprintf(o->epoch, sizeof o->epoch, "%s", epoch ? epoch : "");
    o->seq = seq;
    args a;
    int shard;
    if (rs_chan_args(st, &a, channel, &shard) < 0) {
        mp_redis_fail(st->r, cursor_position, o);
        return;
    }
    arg_s(&a, seq == 0 ? "1" : "0");   /* seq 0 records a starting position: the channel needs an epoch */
    eval(st, shard, st->s_position, &a, 2, cursor_position, o);
}

static void device_deleted(mp_redis *r, const redisReply *rep, void *ud)
{
    (void)r;
    op *o = ud;
    mp_store_done_cb cb = (mp_store_done_cb)o->cb;
    int status = rep && rep->type == REDIS_REPLY_INTEGER ? MP_STORE_OK : rs_script_failed(o->st, "cursor_delete", rep);
    if (cb) cb(&o->st->base, status, o->ud);
    free(o);
}

void rs_cursor_delete_device(mp_store *base, const char *user, const char *device, mp_store_done_cb cb,
                                    void *ud)
{
    rstore *st = (rstore *)base;
    char key[KEY_MAX];
    size_t klen = cursor_key(key, user, device);
    int status;
    op *o = rs_op_start(st, klen != 0, (void *)cb, ud, &status);
    if (!o) {
        if (cb) cb(base, status, ud);
        return;
    }
    const char *a[1] = { key };
    mp_redis_eval(st->r, user_shard(st, user), st->s_cdel, device_deleted, o, 1, 1, a, &klen);
}

