/* auth_cache.c — see auth_cache.h. One entry per connection: a backend
 * sends one set of credentials per connection, and one entry cannot grow. */
#include "auth_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "lua_host.h"
#include "server.h"

/* Longer credentials are not cached (a JWT is well below this). */
#define KEY_MAX 8192

struct mp_auth_cache {
    int route_index;
    uint64_t generation;      /* mp.stats.reloads when stored */
    mp_identity *id;
    size_t key_len;
    char key[];               /* the auth inputs, length-prefixed pieces */
};

int mp_auth_cache_eligible(const mp_http_req *req)
{
    const mp_route *r = req->route;
    if (r->type == MP_ROUTE_WEBSOCKET || r->type == MP_ROUTE_SSE)
        return 0;
    /* core.auth runs the publish-phase rate limit after the auth chain:
     * skipping the call would skip the limit. */
    if (r->type == MP_ROUTE_PUBLISH && (r->hooks & MP_HOOK_RATELIMIT))
        return 0;
    return 1;
}

/* Appends "<len>:<bytes>" after a tag; -1 when out would overflow. */
static int key_piece(char *out, size_t *len, char tag, const char *s, size_t n)
{
    char head[32];
    int h = snprintf(head, sizeof head, "%c%zu:", tag, n);
    if (*len + (size_t)h + n > KEY_MAX)
        return -1;
    memcpy(out + *len, head, (size_t)h);
    memcpy(out + *len + h, s, n);
    *len += (size_t)h + n;
    return 0;
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

/* The request's auth inputs into out (KEY_MAX bytes); length or -1. */
static long build_key(const mp_http_req *req, char *out)
{
    size_t len = 0;
    for (int i = 0; i < req->nheaders; i++) {
        const char *v = req->headers[i].value;
        if (strcmp(req->headers[i].name, "authorization") == 0 && key_piece(out, &len, 'a', v, strlen(v)) < 0)
            return -1;
    }
    for (const char *p = req->query; *p;) {
        size_t n = strcspn(p, "&");
        size_t name_len = strcspn(p, "=&");
        if (name_len > n)
            name_len = n;
        if (auth_param(p, name_len) && key_piece(out, &len, 'q', p, n) < 0)
            return -1;
        p += n;
        if (*p == '&')
            p++;
    }
    return (long)len;
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

mp_identity *mp_auth_cache_get(const mp_auth_cache *cache, const mp_http_req *req)
{
    if (!cache || cache->route_index != req->route_index || cache->generation != mp.stats.reloads)
        return NULL;
    if (cache->id->expires > 0 && cache->id->expires <= mp_clock_wall())
        return NULL;
    char key[KEY_MAX];
    long len = build_key(req, key);
    if (len < 0 || (size_t)len != cache->key_len || memcmp(key, cache->key, (size_t)len) != 0)
        return NULL;
    return identity_copy(cache->id);
}

void mp_auth_cache_put(mp_auth_cache **cache, const mp_http_req *req, const mp_identity *id)
{
    mp_auth_cache_free(*cache);
    *cache = NULL;
    if (id->no_cache)
        return;
    char key[KEY_MAX];
    long len = build_key(req, key);
    if (len < 0)
        return;
    mp_auth_cache *c = malloc(sizeof *c + (size_t)len);
    if (!c)
        return;
    c->id = identity_copy(id);
    if (!c->id) {
        free(c);
        return;
    }
    c->route_index = req->route_index;
    c->generation = mp.stats.reloads;
    c->key_len = (size_t)len;
    memcpy(c->key, key, (size_t)len);
    *cache = c;
}

void mp_auth_cache_free(mp_auth_cache *cache)
{
    if (cache) {
        free(cache->id);
        free(cache);
    }
}
