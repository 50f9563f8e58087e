/* lua_host.h — the one boundary between C and Lua.
 *
 * One LuaJIT state per process. lua/moonpush/core.lua loads and validates
 * the config and the plugins it names; C reads the result into mp_config and
 * calls hooks only through the functions below, never through the Lua API
 * elsewhere. Every call runs under pcall with the route's instruction budget:
 * a plugin that raises or loops fails its own request and nothing else.
 *
 * The identity and denial types the hooks answer with are in identity.h,
 * the request they see in request.h. The implementation is split by concern
 * over lua_host.c (the state, budget, protected calls) and lua_host_*.c;
 * lua_host_int.h is their private header.
 */
#ifndef MP_LUA_HOST_H
#define MP_LUA_HOST_H

#include "identity.h"
#include "request.h"
#include "server.h"

/* A message after the route hooks: where it goes and what it carries. One
 * allocation per message; release with free(). */
typedef struct mp_routed {
    int nchannels;
    char **channels;
    int nkinds;           /* 0: every device kind */
    char **kinds;
    const char *data;     /* JSON text: inside this allocation when a hook
                             changed it, else the caller's datas[i] itself
                             (as published; it must outlive this struct) */
    size_t data_len;
} mp_routed;

/* What a connection event hook sees of a connection. */
typedef struct mp_conn_info {
    unsigned long long id;
    const char *user, *device, *kind, *remote;
} mp_conn_info;

/* Creates the state and loads the config file into cfg. On failure returns
 * -1 with a reason in err. */
int mp_lua_init(const char *config_path, mp_config *cfg, char *err, size_t errlen);

/* Runs the route's Origin check (websocket), connect/publish rate limit and
 * auth chain, and checks the identity (schema, role of the route, expiry;
 * core.lua). Returns 0 with *out set (caller frees), or -1 with deny filled.
 * A route without an auth hook (config.lua lets only `anonymous = true`
 * routes have none) allows everything: the publisher "anonymous" with
 * allow = {"*"}. */
int mp_lua_auth(const mp_http_req *req, mp_identity **out, mp_denial *deny);

/* A client's refresh frame on a WebSocket route: runs the route's auth chain
 * over the new token (no connect rate limit: the frame already passed the
 * message one). Returns 0 with *out (caller frees; user and expires are what
 * matter), or -1 with deny. */
int mp_lua_refresh(int route_index, const mp_conn_info *conn, const char *token, mp_identity **out,
                   mp_denial *deny);

/* Runs the route's route hooks over n messages (channel names and JSON
 * data). Returns 0 with out[0..n) set (caller frees each; out[i]->data may
 * point at datas[i]), or -1 with deny. */
int mp_lua_route(const mp_http_req *req, const char *publisher, int n, const char *const *channels,
                 const char *const *datas, mp_routed **out, mp_denial *deny);

/* Runs the route's format hooks for one message. Returns 1 with *out a
 * malloc'd payload (caller frees), 0 for "standard envelope", -1 if the hook
 * failed (logged). Publishing from inside a format hook is refused. */
int mp_lua_format(int route_index, const char *channel, unsigned long long seq, const char *id,
                  const char *data, size_t data_len, char **out, size_t *out_len);

/* on_connect / on_close (arg: close code, reason) events; errors are logged. */
void mp_lua_conn_event(int route_index, const char *name, const mp_conn_info *conn, int code, const char *reason);

/* on_ack: a client acked seq on channel (errors are logged). */
void mp_lua_ack_event(int route_index, const mp_conn_info *conn, const char *channel, unsigned long long seq);

/* The client-message rate limit. Returns 0 if allowed, -1 with deny. */
int mp_lua_message_ratelimit(int route_index, const mp_conn_info *conn, mp_denial *deny);

/* on_message for a client frame of unknown type. Returns 1 with *reply (JSON
 * text to send back, malloc'd) or NULL, or -1 with deny. */
int mp_lua_on_message(int route_index, const mp_conn_info *conn, const char *frame, size_t len,
                      char **reply, mp_denial *deny);

/* Reloads the config file: all or nothing. On success cfg's routes, limits
 * and timeouts are replaced (listen stays) and summary says what changed. */
int mp_lua_reload_config(mp_config *cfg, char *summary, size_t summary_len, char *err, size_t errlen);

/* Watches every plugin file and reloads a changed one (ev_stat). */
void mp_lua_watch_plugins(struct ev_loop *loop);

/* Runs an admin chunk in the session's environment (its variables last as
 * long as the admin connection). Returns 0 with *output (malloc'd, printed
 * result), 1 if the chunk is incomplete (send more lines), -1 with *output
 * the error. */
int mp_lua_admin_eval(unsigned long session, const char *code, char **output);

/* Completion candidates for prefix as a JSON array text (malloc'd). */
char *mp_lua_admin_complete(unsigned long session, const char *prefix);

/* The admin connection closed: forget its session's variables. */
void mp_lua_admin_end(unsigned long session);

typedef struct mp_plugin_stat {
    char name[64];
    uint64_t calls, errors;
    double seconds;
} mp_plugin_stat;

/* Per-plugin hook statistics (core.lua counts them); returns how many. */
int mp_lua_plugin_stats(mp_plugin_stat *out, int max);

void mp_lua_close(void);
void mp_config_free(mp_config *cfg);

#endif
