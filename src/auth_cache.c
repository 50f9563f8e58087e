/* auth_cache.c — see auth_cache.h. One entry per connection: a backend
 * sends one set of credentials per connection, and one entry cannot grow. */
#include "auth_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "identity.h"
#include "server.h"

struct mp_auth_cache {
    uint64_t generation;      /* mp.stats.reloads when stored */
    mp_identity *id;
    int route_index;
    size_t key_len;
    char key[];               /* the key's bytes (not a whole mp_auth_key) */
};

int mp_auth_cache_eligible(const mp_route *r)
{
    if (r->type == MP_ROUTE_WEBSOCKET || r->type == MP_ROUTE_SSE)
        return 0;
    /* core.auth runs the publish-phase rate limit after the auth chain:
     * skipping the call would skip the limit. */
    if (r->type == MP_ROUTE_PUBLISH && (r->hooks & MP_HOOK_RATELIMIT))
        return 0;
    return 1;
}

void mp_auth_key_init(mp_auth_key *k, int route_index)
{
    k->route_index = route_index;
    k->overflow = 0;
    k->len = 0;
}

/* Appends "<tag><len>:<bytes>"; past the bound the key overflows. */
static void key_piece(mp_auth_key *k, char tag, const char *s, size_t n)
{
    char head[32];
    int h = snprintf(head, sizeof head, "%c%zu:", tag, n);
    if (k->overflow || k->len + (size_t)h + n > MP_AUTH_KEY_MAX) {
        k->overflow = 1;
        return;
    }
    memcpy(k->bytes + k->len, head, (size_t)h);
    memcpy(k->bytes + k->len + h, s, n);
    k->len += (size_t)h + n;
}

void mp_auth_key_header(mp_auth_key *k, const char *value)
{
    key_piece(k, 'a', value, strlen(value));
}

/* Whether a raw query parameter can reach the auth chain as `token` or
 * the identity as `device`: by name, or by an encoded name that might
 * decode to one (kept whole: never guessed). */
static int auth_param(const char *p, size_t name_len)
{
    if ((name_len == 5 && memcmp(p, "token", 5) == 0) || (name_len == 6 && memcmp(p, "device", 6) == 0))
        return 1;
    for (size_t i = 0; i < name_len; i++)
        if (p[i] == '%' || p[i] == '+')
            return 1;
    return 0;
}

void mp_auth_key_query(mp_auth_key *k, const char *query)
{
    for (const char *p = query; *p;) {
        size_t n = strcspn(p, "&");
        size_t name_len = strcspn(p, "=&");
        if (name_len > n)
            name_len = n;
        if (auth_param(p, name_len))
            key_piece(k, 'q', p, n);
        p += n;
        if (*p == '&')
            p++;
    }
}

/* Bytes of an identity's strings and list pointers after its struct. */
static size_t identity_tail(const mp_identity *id)
{
    size_t n = strlen(id->user) + strlen(id->device) + strlen(id->kind) + 3;
    for (int i = 0; i < id->nallow; i++)
        n += strlen(id->allow[i]) + 1;
    for (int i = 0; i < id->nsubscribe; i++)
        n += strlen(id->subscribe[i]) + 1;
    return n + sizeof(char *) * (size_t)(id->nallow + id->nsubscribe);
}

static char *copy_str(char **cursor, const char *s)
{
    size_t n = strlen(s) + 1;
    char *dst = memcpy(*cursor, s, n);
    *cursor += n;
    return dst;
}

/* A copy in one allocation, laid out as lua_host.c's read_identity does. */
static mp_identity *identity_copy(const mp_identity *src)
{
    mp_identity *id = malloc(sizeof *id + identity_tail(src));
    if (!id)
        return NULL;
    *id = *src;
    id->allow = (char **)(id + 1);
    id->subscribe = id->allow + src->nallow;
    char *cursor = (char *)(id->subscribe + src->nsubscribe);
    id->user = copy_str(&cursor, src->user);
    id->device = copy_str(&cursor, src->device);
    id->kind = copy_str(&cursor, src->kind);
    for (int i = 0; i < src->nallow; i++)
        id->allow[i] = copy_str(&cursor, src->allow[i]);
    for (int i = 0; i < src->nsubscribe; i++)
        id->subscribe[i] = copy_str(&cursor, src->subscribe[i]);
    return id;
}

static int same_key(const mp_auth_cache *c, const mp_auth_key *k)
{
    return c->route_index == k->route_index && c->key_len == k->len && memcmp(c->key, k->bytes, k->len) == 0;
}

mp_identity *mp_auth_cache_get(const mp_auth_cache *cache, const mp_auth_key *k)
{
    if (!cache || k->overflow || cache->generation != mp.stats.reloads || !same_key(cache, k))
        return NULL;
    if (cache->id->expires > 0 && cache->id->expires <= mp_clock_wall())
        return NULL;
    return identity_copy(cache->id);
}

void mp_auth_cache_put(mp_auth_cache **cache, const mp_auth_key *k, const mp_identity *id)
{
    mp_auth_cache_free(*cache);
    *cache = NULL;
    if (id->no_cache || k->overflow)
        return;
    mp_auth_cache *c = malloc(sizeof *c + k->len);
    if (!c)
        return;
    c->id = identity_copy(id);
    if (!c->id) {
        free(c);
        return;
    }
    c->generation = mp.stats.reloads;
    c->route_index = k->route_index;
    c->key_len = k->len;
    memcpy(c->key, k->bytes, k->len);
    *cache = c;
}

void mp_auth_cache_free(mp_auth_cache *cache)
{
    if (cache) {
        free(cache->id);
        free(cache);
    }
}
