/* identity.h — who a request or connection is, and why one was refused.
 *
 * The route's auth plugin decides (lua_host.h reads its answer into these
 * types); the protocol handlers keep an identity for a connection's life
 * and check names against its patterns here. No dependencies: anything that
 * answers a denial (http) or keeps an identity (ws) uses it without knowing
 * the Lua host.
 */
#ifndef MP_IDENTITY_H
#define MP_IDENTITY_H

/* Who a request or connection is, as the route's auth plugin decided. One
 * allocation (strings follow the struct); release with free(). */
typedef struct mp_identity {
    char *user;           /* WebSocket: user id; publish: publisher name */
    char *device;
    char *kind;
    int nallow;
    char **allow;         /* channel patterns it may subscribe / publish to */
    int nsubscribe;
    char **subscribe;     /* channels asked for at connect (query `channels`) */
    double expires;       /* unix seconds after which it is void; 0: never */
    int no_cache;         /* the plugin said cache = false (auth_cache.h) */
} mp_identity;

/* A refusal: the HTTP status (or WS close) and the JSON error it answers. */
typedef struct mp_denial {
    int status;
    int retry_after;      /* seconds, for 429; 0 if none */
    char code[40];
    char message[200];
} mp_denial;

/* 1 if name matches one of the identity's patterns ("*", "prefix*", exact). */
int mp_identity_allows(const mp_identity *id, const char *name);

/* The same for a device (WebSocket) identity: its own user:<user> is always
 * allowed, and another user's personal channel only by a pattern that names
 * the user: namespace itself ("user:bob", "user:*", "user:b*"): "*" or "u*"
 * never reach other users' personal channels. */
int mp_identity_allows_device(const mp_identity *id, const char *name);

#endif
