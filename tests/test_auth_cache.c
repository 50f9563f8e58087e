/* Unit tests for the keep-alive auth cache's key and validity
 * (auth_cache.h): what makes two requests "the same credentials". */
#include <stdlib.h>
#include <string.h>

#include "auth_cache.h"
#include "check.h"
#include "clock.h"
#include "identity.h"
#include "server.h"

mp_server mp;

static mp_identity *identity(double expires, int no_cache)
{
    mp_identity *id = calloc(1, sizeof *id);
    id->user = "pub";
    id->device = "default";
    id->kind = "default";
    id->expires = expires;
    id->no_cache = no_cache;
    return id;
}

static void key(mp_auth_key *k, int route, const char *auth, const char *query)
{
    mp_auth_key_init(k, route);
    if (auth)
        mp_auth_key_header(k, auth);
    mp_auth_key_query(k, query);
}

/* Stores (route 0, auth, query) and asks with the second triple. */
static int hit(const char *auth, const char *query, int route2, const char *auth2, const char *query2)
{
    mp_auth_cache *c = NULL;
    mp_auth_key k;
    mp_identity *id = identity(0, 0);
    key(&k, 0, auth, query);
    mp_auth_cache_put(&c, &k, id);
    key(&k, route2, auth2, query2);
    mp_identity *got = mp_auth_cache_get(c, &k);
    int ok = got != NULL;
    if (got)
        CHECK(strcmp(got->user, "pub") == 0);
    free(got);
    free(id);
    mp_auth_cache_free(c);
    return ok;
}

static void test_same_credentials_hit(void)
{
    CHECK(hit("Bearer a", "", 0, "Bearer a", ""));
    CHECK(hit(NULL, "token=a&channel=x", 0, NULL, "channel=y&token=a"));   /* other params: same */
    CHECK(!hit("Bearer a", "", 0, "Bearer b", ""));
    CHECK(!hit("Bearer a", "", 0, "Bearer a", "token=b"));
    CHECK(!hit("Bearer a", "", 1, "Bearer a", ""));                        /* another route */
    CHECK(!hit(NULL, "token=a", 0, NULL, "token=a&device=d"));
    CHECK(!hit(NULL, "token=a", 0, NULL, "%74oken=b&token=a"));            /* decodes to token */
    CHECK(!hit(NULL, "token=a", 0, NULL, "token=a&token=b"));
}

/* Pieces are length-prefixed: moving bytes between them changes the key. */
static void test_piece_boundaries(void)
{
    mp_auth_key a, b;
    mp_auth_key_init(&a, 0);
    mp_auth_key_header(&a, "x");
    mp_auth_key_header(&a, "yz");
    mp_auth_key_init(&b, 0);
    mp_auth_key_header(&b, "xy");
    mp_auth_key_header(&b, "z");
    CHECK(a.len != b.len || memcmp(a.bytes, b.bytes, a.len) != 0);
}

static void test_overflow_and_opt_out_never_cache(void)
{
    char *big = malloc(MP_AUTH_KEY_MAX + 1);
    memset(big, 'a', MP_AUTH_KEY_MAX);
    big[MP_AUTH_KEY_MAX] = '\0';
    CHECK(!hit(big, "", 0, big, ""));
    free(big);

    mp_auth_cache *c = NULL;
    mp_auth_key k;
    mp_identity *id = identity(0, 1);
    key(&k, 0, "Bearer a", "");
    mp_auth_cache_put(&c, &k, id);
    CHECK(mp_auth_cache_get(c, &k) == NULL);
    free(id);
    mp_auth_cache_free(c);
}

static void test_expiry_and_reload(void)
{
    mp_auth_cache *c = NULL;
    mp_auth_key k;
    key(&k, 0, "Bearer a", "");
    mp_identity *gone = identity(mp_clock_wall() - 1, 0);
    mp_auth_cache_put(&c, &k, gone);
    CHECK(mp_auth_cache_get(c, &k) == NULL);
    mp_identity *live = identity(mp_clock_wall() + 60, 0);
    mp_auth_cache_put(&c, &k, live);
    mp_identity *got = mp_auth_cache_get(c, &k);
    CHECK(got != NULL);
    free(got);
    mp.stats.reloads++;                       /* a config or plugin reload */
    CHECK(mp_auth_cache_get(c, &k) == NULL);
    free(gone);
    free(live);
    mp_auth_cache_free(c);
}

int main(void)
{
    RUN(test_same_credentials_hit);
    RUN(test_piece_boundaries);
    RUN(test_overflow_and_opt_out_never_cache);
    RUN(test_expiry_and_reload);
    return check_report("test_auth_cache");
}
