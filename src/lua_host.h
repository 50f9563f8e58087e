/* lua_host.h — the one boundary between C and Lua.
 *
 * One LuaJIT state per process. It loads the config (lua/moonpush/config.lua
 * validates it and the plugins it names) and runs plugin hooks; C reads the
 * validated config into mp_config and calls hooks through the functions
 * below, never through the Lua API elsewhere.
 */
#ifndef MP_LUA_HOST_H
#define MP_LUA_HOST_H

#include "http.h"
#include "server.h"

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
} mp_identity;

typedef struct mp_denial {
    int status;
    char code[40];
    char message[200];
} mp_denial;

/* Creates the state and loads the config file into cfg. On failure returns
 * -1 with a reason in err. */
int mp_lua_init(const char *config_path, mp_config *cfg, char *err, size_t errlen);

/* Runs the route's auth chain. Returns 0 with *out set (caller frees), or -1
 * with deny filled (401/403 from the plugin, 500 if the plugin failed). A
 * route without an auth hook allows everything (*out has allow = {"*"}). */
int mp_lua_auth(const mp_http_req *req, mp_identity **out, mp_denial *deny);

/* 1 if name matches one of the identity's patterns ("*", "prefix*", exact). */
int mp_identity_allows(const mp_identity *id, const char *name);

void mp_lua_close(void);
void mp_config_free(mp_config *cfg);

#endif
