/* lua_host.c — see lua_host.h. Every Lua API call in moonpush is in this
 * file. Hook calls run under pcall with an instruction budget (a count hook),
 * so a plugin that raises or loops fails its own request and nothing else. */
#include "lua_host.h"

#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"

static lua_State *L;
static int core_ref = LUA_NOREF;
static int budget = 1000000;

/* ---- C helpers offered to Lua (package "moonpush.host") ----------------- */

static int l_log(lua_State *l)
{
    static const char *names[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(l, 1, "info", names);
    const char *msg = luaL_checkstring(l, 2);
    mp_log(level, "plugin", "text=\"%s\"", msg);
    return 0;
}

static int l_now(lua_State *l)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(l, (double)tv.tv_sec * 1000.0 + (double)tv.tv_usec / 1000.0);
    return 1;
}

static int open_host(lua_State *l)
{
    static const luaL_Reg fns[] = {{"log", l_log}, {"now", l_now}, {NULL, NULL}};
    lua_newtable(l);
    luaL_register(l, NULL, fns);
    return 1;
}

/* ---- budget ------------------------------------------------------------- */

static void budget_hook(lua_State *l, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(l, NULL, 0, 0);
    luaL_error(l, "instruction budget exceeded");
}

/* pcall with the budget armed; returns lua_pcall's code. */
static int guarded_pcall(int nargs, int nresults)
{
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, budget);
    int rc = lua_pcall(L, nargs, nresults, 0);
    lua_sethook(L, NULL, 0, 0);
    return rc;
}

/* ---- config ------------------------------------------------------------- */

static double num_field(int idx, const char *section, const char *key)
{
    double v;
    if (section) {
        lua_getfield(L, idx, section);
        lua_getfield(L, -1, key);
        v = lua_tonumber(L, -1);
        lua_pop(L, 2);
    } else {
        lua_getfield(L, idx, key);
        v = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    return v;
}

static int read_routes(int idx, mp_config *cfg)
{
    lua_getfield(L, idx, "routes");
    int n = (int)lua_objlen(L, -1);
    cfg->routes = calloc((size_t)n, sizeof *cfg->routes);
    if (!cfg->routes)
        return -1;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        mp_route *r = &cfg->routes[i];
        lua_getfield(L, -1, "path");
        r->path = strdup(lua_tostring(L, -1));
        r->path_len = strlen(r->path);
        lua_pop(L, 1);
        lua_getfield(L, -1, "type");
        const char *t = lua_tostring(L, -1);
        r->type = strcmp(t, "websocket") == 0 ? MP_ROUTE_WEBSOCKET
                : strcmp(t, "publish") == 0   ? MP_ROUTE_PUBLISH
                                              : MP_ROUTE_HEALTH;
        lua_pop(L, 1);
        lua_getfield(L, -1, "has_auth");
        r->has_auth = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    cfg->nroutes = n;
    lua_pop(L, 1);
    return 0;
}

static void read_config(int idx, mp_config *cfg)
{
    lua_getfield(L, idx, "listen_host");
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    cfg->listen_port = (int)num_field(idx, NULL, "listen_port");
    cfg->max_connections = (int)num_field(idx, NULL, "max_connections");
    budget = (int)num_field(idx, NULL, "plugin_budget");
    cfg->max_header_bytes = (size_t)num_field(idx, "limits", "max_header_bytes");
    cfg->max_body_bytes = (size_t)num_field(idx, "limits", "max_body_bytes");
    cfg->max_batch = (size_t)num_field(idx, "limits", "max_batch");
    cfg->max_message_bytes = (size_t)num_field(idx, "limits", "max_message_bytes");
    cfg->max_outbound_bytes = (size_t)num_field(idx, "limits", "max_outbound_bytes");
    cfg->max_subscriptions = (size_t)num_field(idx, "limits", "max_subscriptions");
    cfg->max_channels = (size_t)num_field(idx, "limits", "max_channels");
    cfg->request_timeout = num_field(idx, "timeouts", "request_ms") / 1000.0;
    cfg->idle_timeout = num_field(idx, "timeouts", "idle_ms") / 1000.0;
    cfg->ping_interval = num_field(idx, "timeouts", "ping_ms") / 1000.0;
}

static void set_lua_path(void)
{
    char dir[PATH_MAX];
    const char *env = getenv("MOONPUSH_LUA_DIR");
    if (env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        snprintf(dir, sizeof dir, "%s/lua", n > 0 ? dirname(exe) : ".");
    }
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

int mp_lua_init(const char *config_path, mp_config *cfg, char *err, size_t errlen)
{
    L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "cannot create a Lua state");
        return -1;
    }
    luaL_openlibs(L);
    set_lua_path();
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_host);
    lua_setfield(L, -2, "moonpush.host");
    lua_pop(L, 2);

    lua_getglobal(L, "require");
    lua_pushstring(L, "moonpush.core");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return -1;
    }
    lua_pushvalue(L, -1);
    core_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "load");
    lua_pushstring(L, config_path);
    if (lua_pcall(L, 1, 2, 0) != 0 || lua_isnil(L, -2)) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return -1;
    }
    lua_pop(L, 1);
    read_config(lua_gettop(L), cfg);
    int rc = read_routes(lua_gettop(L), cfg);
    lua_settop(L, 0);
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

/* ---- auth --------------------------------------------------------------- */

static void push_request(const mp_http_req *req)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, req->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, req->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, req->query);
    lua_setfield(L, -2, "query_string");
    lua_pushstring(L, req->conn->remote);
    lua_setfield(L, -2, "remote_addr");
    lua_createtable(L, 0, req->nheaders);
    for (int i = 0; i < req->nheaders; i++) {
        lua_pushstring(L, req->headers[i].value);
        lua_setfield(L, -2, req->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
}

static void fill_denial(int idx, mp_denial *deny)
{
    lua_getfield(L, idx, "status");
    deny->status = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 401;
    lua_getfield(L, idx, "code");
    snprintf(deny->code, sizeof deny->code, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "unauthorized");
    lua_getfield(L, idx, "message");
    snprintf(deny->message, sizeof deny->message, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "denied");
    lua_getfield(L, idx, "log");
    if (lua_isstring(L, -1))
        mp_warn("plugin error", "route_error=\"%s\"", lua_tostring(L, -1));
    lua_pop(L, 4);
}

/* Sums the lengths of a string list at idx (on the stack) for one allocation. */
static size_t list_bytes(int idx, const char *field, int *count)
{
    lua_getfield(L, idx, field);
    int n = (int)lua_objlen(L, -1);
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

static char *copy_str(char **cursor, const char *s, size_t len)
{
    char *dst = *cursor;
    memcpy(dst, s, len);
    dst[len] = '\0';
    *cursor += len + 1;
    return dst;
}

static char *copy_field(char **cursor, int idx, const char *field)
{
    lua_getfield(L, idx, field);
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    char *out = copy_str(cursor, s ? s : "", s ? len : 0);
    lua_pop(L, 1);
    return out;
}

static void copy_list(char **cursor, int idx, const char *field, char **out, int n)
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

static size_t field_len(int idx, const char *field)
{
    lua_getfield(L, idx, field);
    size_t len = 0;
    lua_tolstring(L, -1, &len);
    lua_pop(L, 1);
    return len + 1;
}

/* The identity table at idx, as one allocation. */
static mp_identity *read_identity(int idx)
{
    int nallow, nsub;
    size_t bytes = field_len(idx, "user") + field_len(idx, "device") + field_len(idx, "kind") +
                   list_bytes(idx, "allow", &nallow) + list_bytes(idx, "subscribe", &nsub);
    size_t ptrs = sizeof(char *) * (size_t)(nallow + nsub);
    mp_identity *id = malloc(sizeof *id + ptrs + bytes);
    if (!id)
        return NULL;
    id->allow = (char **)(id + 1);
    id->subscribe = id->allow + nallow;
    id->nallow = nallow;
    id->nsubscribe = nsub;
    char *cursor = (char *)(id->allow + nallow + nsub);
    id->user = copy_field(&cursor, idx, "user");
    id->device = copy_field(&cursor, idx, "device");
    id->kind = copy_field(&cursor, idx, "kind");
    copy_list(&cursor, idx, "allow", id->allow, nallow);
    copy_list(&cursor, idx, "subscribe", id->subscribe, nsub);
    return id;
}

int mp_lua_auth(const mp_http_req *req, mp_identity **out, mp_denial *deny)
{
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, core_ref);
    lua_getfield(L, -1, "auth");
    lua_pushinteger(L, req->route_index + 1);
    push_request(req);
    int rc = guarded_pcall(2, 2);
    int result = -1;
    if (rc != 0) {
        mp_warn("auth chain failed", "route=%s error=\"%s\"", req->route->path, lua_tostring(L, -1));
        deny->status = 500;
        snprintf(deny->code, sizeof deny->code, "plugin_error");
        snprintf(deny->message, sizeof deny->message, "%s",
                 strstr(lua_tostring(L, -1) ? lua_tostring(L, -1) : "", "instruction budget")
                     ? "a plugin ran past its instruction budget" : "a plugin failed");
    } else if (lua_istable(L, -2)) {
        *out = read_identity(lua_gettop(L) - 1);
        if (*out)
            result = 0;
        else {
            deny->status = 503;
            snprintf(deny->code, sizeof deny->code, "unavailable");
            snprintf(deny->message, sizeof deny->message, "server out of memory");
        }
    } else if (lua_istable(L, -1)) {
        fill_denial(lua_gettop(L), deny);
    } else {
        deny->status = 401;
        snprintf(deny->code, sizeof deny->code, "unauthorized");
        snprintf(deny->message, sizeof deny->message, "denied");
    }
    lua_settop(L, top);
    return result;
}

int mp_identity_allows(const mp_identity *id, const char *name)
{
    for (int i = 0; i < id->nallow; i++) {
        const char *p = id->allow[i];
        size_t plen = strlen(p);
        if (plen > 0 && p[plen - 1] == '*') {
            if (strncmp(name, p, plen - 1) == 0)
                return 1;
        } else if (strcmp(name, p) == 0) {
            return 1;
        }
    }
    return 0;
}

void mp_lua_close(void)
{
    if (L)
        lua_close(L);
    L = NULL;
}

void mp_config_free(mp_config *cfg)
{
    for (int i = 0; i < cfg->nroutes; i++)
        free(cfg->routes[i].path);
    free(cfg->routes);
    cfg->routes = NULL;
    cfg->nroutes = 0;
}
