/* lua_host.c — the Lua state: created and closed here, every call into it
 * made under an instruction budget (see lua_host.h).
 *
 * Holds what the other lua_host_*.c files share through lua_host_int.h: the
 * state L, core.lua's entry points (looked up once), the budgeted and
 * guarded protected calls, readers of fields of what Lua returned, and
 * denials read from a plugin's answer. Each hook phase has its own file
 * (lua_host_auth.c, _route.c, _format.c, _event.c); the config is read in
 * lua_host_config.c, the helpers Lua gets from the server in
 * lua_host_helpers.c and lua_host_admin.c, plugin files are watched in
 * lua_host_watch.c. Every Lua API call of the server is in these files
 * (lua_api.c holds the pure helpers they register).
 */
#include "lua_host_int.h"

#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

lua_State *L;
static int core_ref = LUA_NOREF;
static int call_depth;      /* hooks may publish, publishing may format: nest */
int in_format;              /* no publishing from inside a format hook */

/* ---- calling Lua -------------------------------------------------------- */

/* Past the budget, raise — and keep raising at every instruction until the
 * outermost call returns, so a plugin that catches the error with pcall
 * cannot carry on: the first instruction outside its pcall raises again. */
#define BUDGET_REPEAT 1

/* The count hook stays set for the life of the state: LuaJIT rewrites its
 * whole dispatch table each time hooks are switched on or off, which per
 * hook call (on, then off) cost more than some hooks. Outside a guarded
 * call the count is merely re-armed: the core's own code has no budget. */
#define BUDGET_IDLE INT_MAX

static void budget_hook(lua_State *l, lua_Debug *ar)
{
    (void)ar;
    if (call_depth == 0) {
        lua_sethook(l, budget_hook, LUA_MASKCOUNT, BUDGET_IDLE);
        return;
    }
    lua_sethook(l, budget_hook, LUA_MASKCOUNT, BUDGET_REPEAT);
    luaL_error(l, "instruction budget exceeded");
}

/* Pushes core[fn]. */
void push_core_fn(const char *fn)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, core_ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
}

/* The entry points called per request or per message, looked up by name
 * once (core.lua's functions never change) instead of on every call. */
static const char *const hot_names[HOT_COUNT] = {"auth", "route", "format", "event"};
static int hot_refs[HOT_COUNT];

static void remember_hot_fns(void)
{
    for (int i = 0; i < HOT_COUNT; i++) {
        push_core_fn(hot_names[i]);
        hot_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

void push_hot_fn(int which)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, hot_refs[which]);
}

/* pcall with the budget armed for the outermost call; nested calls (a hook
 * that publishes) run inside the outer budget. */
int budgeted_pcall(int budget, int nargs, int nresults)
{
    if (call_depth++ == 0)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, budget);
    int rc = lua_pcall(L, nargs, nresults, 0);
    if (--call_depth == 0)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, BUDGET_IDLE);   /* same mode: no dispatch rewrite */
    return rc;
}

/* Why a load failed (the error on top of the stack), into err; what = the
 * file. Past the budget the message says so instead of where the error was
 * raised last (in core.lua, on the way out). */
void load_error(const char *what, char *err, size_t errlen)
{
    const char *e = lua_tostring(L, -1);
    if (e && strstr(e, "instruction budget exceeded"))
        snprintf(err, errlen, "%s: loading ran past the instruction budget (%d Lua instructions): does it end?",
                 what, LOAD_BUDGET);
    else
        snprintf(err, errlen, "%s", e ? e : "error without a message");
}

/* A plugin hook under the route's budget (0: plugin_budget); logs failures. */
int guarded_pcall(int budget, int nargs, int nresults, const char *what)
{
    int rc = budgeted_pcall(budget > 0 ? budget : mp.cfg.plugin_budget > 0 ? mp.cfg.plugin_budget : 1000000,
                            nargs, nresults);
    if (rc != 0) {
        mp.stats.plugin_errors++;
        mp_warn("plugin call failed", "phase=%s error=\"%s\"", what, mp_log_q(lua_tostring(L, -1)));
    }
    return rc;
}

int route_budget(int route_index)
{
    return route_index >= 0 && route_index < mp.cfg.nroutes ? mp.cfg.routes[route_index].budget : 0;
}

/* ---- reading what Lua returned ------------------------------------------ */

double num_field(int idx, const char *section, const char *key)
{
    if (section) {
        lua_getfield(L, idx, section);
        lua_getfield(L, -1, key);
    } else {
        lua_pushnil(L);
        lua_getfield(L, idx, key);
    }
    double v = lua_tonumber(L, -1);
    lua_pop(L, 2);
    return v;
}

int bool_field(int idx, const char *key)
{
    lua_getfield(L, idx, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

void str_field(int idx, const char *section, const char *key, char *out, size_t outlen)
{
    lua_getfield(L, idx, section);
    lua_getfield(L, -1, key);
    snprintf(out, outlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 2);
}

/* The Lua runtime's directory, relative to the binary so that both layouts
 * work wherever they are put: the source tree (./moonpush next to lua/) and
 * an install (PREFIX/bin/moonpush, PREFIX/share/moonpush/lua, see the
 * Makefile's install target). MOONPUSH_LUA_DIR overrides both. */
static void find_lua_dir(char *dir, size_t len)
{
    const char *env = getenv("MOONPUSH_LUA_DIR");
    if (env) {
        snprintf(dir, len, "%s", env);
        return;
    }
    char exe[PATH_MAX], probe[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    const char *bin = n > 0 ? dirname(exe) : ".";
    snprintf(probe, sizeof probe, "%s/lua/moonpush/core.lua", bin);
    if (access(probe, R_OK) == 0)
        snprintf(dir, len, "%s/lua", bin);
    else
        snprintf(dir, len, "%s/../share/moonpush/lua", bin);
}

static void set_lua_path(void)
{
    char dir[PATH_MAX];
    find_lua_dir(dir, sizeof dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_getfield(L, -2, "preload");
    lua_pushcfunction(L, open_server_host);
    lua_setfield(L, -2, "moonpush.host");
    lua_pushcfunction(L, open_admin_host);
    lua_setfield(L, -2, "moonpush.admin_host");
    lua_pop(L, 3);
}

int mp_lua_init(const char *config_path, mp_config *cfg, char *err, size_t errlen)
{
    L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "cannot create a Lua state");
        return -1;
    }
    luaL_openlibs(L);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, BUDGET_IDLE);
    set_lua_path();
    lua_getglobal(L, "require");
    lua_pushstring(L, "moonpush.core");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return -1;
    }
    core_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    remember_hot_fns();
    push_core_fn("load");
    lua_pushstring(L, config_path);
    if (budgeted_pcall(LOAD_BUDGET, 1, 2) != 0 || lua_isnil(L, -2)) {
        load_error(config_path, err, errlen);
        lua_settop(L, 0);
        return -1;
    }
    lua_pop(L, 1);
    read_config(lua_gettop(L), cfg);
    lua_settop(L, 0);
    if (read_routes(cfg) < 0) {
        snprintf(err, errlen, "cannot read routes");
        return -1;
    }
    return 0;
}

/* ---- denials ------------------------------------------------------------ */

void set_denial(mp_denial *d, int status, const char *code, const char *message)
{
    d->status = status;
    d->retry_after = 0;
    snprintf(d->code, sizeof d->code, "%s", code);
    snprintf(d->message, sizeof d->message, "%s", message);
}

void read_denial(int idx, mp_denial *d)
{
    if (!lua_istable(L, idx)) {
        set_denial(d, 401, "unauthorized", "denied");
        return;
    }
    d->status = (int)num_field(idx, NULL, "status");
    if (d->status < 400 || d->status > 599)
        d->status = 500;
    d->retry_after = (int)(num_field(idx, NULL, "retry_after") + 0.999);
    lua_getfield(L, idx, "code");
    snprintf(d->code, sizeof d->code, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "denied");
    lua_getfield(L, idx, "message");
    snprintf(d->message, sizeof d->message, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "denied");
    lua_getfield(L, idx, "log");
    if (lua_isstring(L, -1)) {
        mp.stats.plugin_errors++;
        mp_warn("plugin error", "error=\"%s\"", mp_log_q(lua_tostring(L, -1)));
    }
    lua_pop(L, 3);
}

/* The plugin core.lua was running when a call had to be aborted. */
static const char *running_plugin(void)
{
    push_core_fn("running");
    const char *name = lua_isstring(L, -1) ? lua_tostring(L, -1) : "?";
    lua_pop(L, 1);   /* the string stays reachable from core.running */
    return name;
}

void failed_call(mp_denial *d)
{
    const char *e = lua_tostring(L, -1);
    char msg[160];
    snprintf(msg, sizeof msg, "plugin %s %s", running_plugin(),
             e && strstr(e, "instruction budget") ? "ran past its instruction budget" : "failed");
    set_denial(d, 500, "plugin_error", msg);
}

/* ---- copying what Lua returned into one allocation ---------------------- */

/* String lists: sizes first, then one allocation holds pointers and bytes. */
size_t list_bytes(int idx, const char *field, int *count)
{
    lua_getfield(L, idx, field);
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    size_t bytes = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        size_t len = 0;
        lua_tolstring(L, -1, &len);
        bytes += len + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    *count = n;
    return bytes;
}

char *copy_str(char **cursor, const char *s, size_t len)
{
    char *dst = *cursor;
    if (len)
        memcpy(dst, s, len);
    dst[len] = '\0';
    *cursor += len + 1;
    return dst;
}

char *copy_field(char **cursor, int idx, const char *field)
{
    lua_getfield(L, idx, field);
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    char *out = copy_str(cursor, s ? s : "", s ? len : 0);
    lua_pop(L, 1);
    return out;
}

void copy_list(char **cursor, int idx, const char *field, char **out, int n)
{
    lua_getfield(L, idx, field);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        size_t len = 0;
        const char *s = lua_tolstring(L, -1, &len);
        out[i] = copy_str(cursor, s ? s : "", s ? len : 0);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

size_t field_len(int idx, const char *field)
{
    lua_getfield(L, idx, field);
    size_t len = 0;
    lua_tolstring(L, -1, &len);
    lua_pop(L, 1);
    return len + 1;
}

void mp_lua_close(void)
{
    if (mp.loop)
        unwatch_all(mp.loop);
    if (L)
        lua_close(L);
    L = NULL;
}
