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

#include "http.h"

struct mp_identity;
typedef struct mp_auth_cache mp_auth_cache;

/* Whether req's route may use the cache at all. */
int mp_auth_cache_eligible(const mp_http_req *req);

/* A copy of the cached identity (caller frees) if req's auth inputs match
 * the cached request's and it is still valid; else NULL. */
struct mp_identity *mp_auth_cache_get(const mp_auth_cache *cache, const mp_http_req *req);

/* Remembers a copy of id as the answer for req, replacing what *cache held.
 * An identity marked no_cache, or a key too long to keep, empties it. */
void mp_auth_cache_put(mp_auth_cache **cache, const mp_http_req *req, const struct mp_identity *id);

void mp_auth_cache_free(mp_auth_cache *cache);

#endif
