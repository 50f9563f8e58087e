/* auth_cache.h — a keep-alive connection's last auth answer, reused.
 *
 * A backend that publishes over one keep-alive connection sends the same
 * credentials with every request, and running the route's auth chain (Lua,
 * maybe a signature check) for each would be most of a publish's cost. The
 * connection keeps the identity of its last allowed request and hands out
 * copies while a request's auth inputs are byte-identical to that one's:
 * the same route, the same Authorization header(s), the same raw `token`
 * and `device` query parameters, the same config and plugin generation
 * (mp.stats.reloads: bumped by every successful config reload and plugin hot
 * reload) and before the identity's `expires`.
 *
 * Never cached: websocket and sse handshakes (one per connection anyway),
 * publish routes with a ratelimit hook (the publish-phase limit runs inside
 * the auth call and must see every request), identities the plugin returned
 * with cache = false. docs/plugins.md says what a plugin author may rely on.
 */
#ifndef MP_AUTH_CACHE_H
#define MP_AUTH_CACHE_H

#include <stddef.h>

#include "server.h"

/* Longer credentials are not cached (a JWT is well below this). */
#define MP_AUTH_KEY_MAX 8192

struct mp_identity;
typedef struct mp_auth_cache mp_auth_cache;

/* A request's auth inputs, gathered by the HTTP layer: length-prefixed
 * pieces, so no two different inputs read the same. */
typedef struct mp_auth_key {
    int route_index;
    int overflow;              /* longer than MP_AUTH_KEY_MAX: never cached */
    size_t len;
    char bytes[MP_AUTH_KEY_MAX];
} mp_auth_key;

void mp_auth_key_init(mp_auth_key *k, int route_index);

/* One Authorization header's value (every one the request has, in order). */
void mp_auth_key_header(mp_auth_key *k, const char *value);

/* The raw query string: its `token` and `device` parameters, and any whose
 * name is encoded (it might decode to one of them), are part of the key. */
void mp_auth_key_query(mp_auth_key *k, const char *query);

/* Whether requests on this route may use the cache at all. */
int mp_auth_cache_eligible(const mp_route *r);

/* A copy of the cached identity (caller frees) if k equals the cached
 * request's key and the answer is still valid; else NULL. */
struct mp_identity *mp_auth_cache_get(const mp_auth_cache *cache, const mp_auth_key *k);

/* Remembers a copy of id as the answer for k, replacing what *cache held.
 * An identity marked no_cache, or an overflowed key, empties it. */
void mp_auth_cache_put(mp_auth_cache **cache, const mp_auth_key *k, const struct mp_identity *id);

void mp_auth_cache_free(mp_auth_cache *cache);

#endif
