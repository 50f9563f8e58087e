/* lua_host_int.h — the Lua host's private header: the state and the calls
 * its pieces (lua_host.c, lua_host_*.c) share. Nothing outside lua_host*.c
 * includes it; the rest of the server uses lua_host.h.
 *
 * Every function here works on the one state L and expects to be called
 * from the loop's thread; the readers take stack indexes of L.
 */
#ifndef MP_LUA_HOST_INT_H
#define MP_LUA_HOST_INT_H

#include <lua.h>
#include <stddef.h>

#include "lua_host.h"

/* ---- the state and calling into it (lua_host.c) ------------------------- */

extern lua_State *L;
extern int in_format;       /* a format hook is running: no publishing */

/* Loading the config file, and the plugin files it names, runs the
 * operator's Lua: a config that never returns must be refused, not hang the
 * start, `--check-config`, or (on SIGHUP, or a plugin file's hot reload) the
 * running server. Loading the examples takes well under a million
 * instructions. */
#define LOAD_BUDGET 50000000

/* core.lua's entry points called per request or per message, looked up by
 * name once (push_hot_fn); any other is pushed by name (push_core_fn). */
enum { HOT_AUTH, HOT_ROUTE, HOT_FORMAT, HOT_EVENT, HOT_COUNT };
void push_core_fn(const char *fn);
void push_hot_fn(int which);

/* pcall with the budget armed for the outermost call; nested calls (a hook
 * that publishes) run inside the outer budget. */
int budgeted_pcall(int budget, int nargs, int nresults);

/* Why a load failed (the error on top of the stack), into err. */
void load_error(const char *what, char *err, size_t errlen);

/* A plugin hook under the route's budget (0: plugin_budget); logs failures. */
int guarded_pcall(int budget, int nargs, int nresults, const char *what);

/* The budget of route route_index (0 if there is no such route). */
int route_budget(int route_index);

/* ---- reading what Lua returned (lua_host.c) ----------------------------- */

/* t[section][key] (or t[key] when section is NULL) at stack index idx. */
double num_field(int idx, const char *section, const char *key);
int bool_field(int idx, const char *key);
void str_field(int idx, const char *section, const char *key, char *out, size_t outlen);

/* String lists and strings copied into one allocation: list_bytes and
 * field_len size it first, the copy_* fill it, advancing *cursor. */
size_t list_bytes(int idx, const char *field, int *count);
size_t field_len(int idx, const char *field);
char *copy_str(char **cursor, const char *s, size_t len);
char *copy_field(char **cursor, int idx, const char *field);
void copy_list(char **cursor, int idx, const char *field, char **out, int n);

/* Denials: one made in C, one read from a plugin's answer at idx (logging
 * the hook errors it collected), and one for a call that raised. */
void set_denial(mp_denial *d, int status, const char *code, const char *message);
void read_denial(int idx, mp_denial *d);
void failed_call(mp_denial *d);

/* ---- the pieces' entries into each other -------------------------------- */

/* lua_host_config.c: the top level of the config table at idx (listening,
 * limits, history, admin, log), and cfg's routes from core.routes_for_c(). */
void read_config(int idx, mp_config *cfg);
int read_routes(mp_config *cfg);

/* lua_host_event.c: what a hook sees of a connection, pushed as a table. */
void push_conn(const mp_conn_info *c);

/* lua_host_helpers.c: moonpush.host (lua_api.c's helpers and the
 * server-only ones). */
int open_server_host(lua_State *l);

/* lua_host_admin.c: moonpush.admin_host; a WebSocket connection as the
 * admin and moonpush.connections describe it, appended to the list on top
 * of l (arg unused); t[k] = v for the table on top of l. */
int open_admin_host(lua_State *l);
void push_client(lua_State *l, mp_conn *c, void *arg);
void set_num(lua_State *l, const char *k, double v);

/* lua_host_watch.c: stops watching every plugin file. */
void unwatch_all(struct ev_loop *loop);

#endif
