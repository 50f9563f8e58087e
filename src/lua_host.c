/* lua_host.c — see lua_host.h. Every Lua API call of the server is in this
 * file (lua_api.c holds the pure helpers it registers). */
#include "lua_host.h"

#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cors.h"
#include "delivery.h"
#include "hub.h"
#include "log.h"
#include "store.h"
#include "ws.h"

int luaopen_moonpush_host(lua_State *L);   /* lua_api.c */

static lua_State *L;
static int core_ref = LUA_NOREF;
static int call_depth;      /* hooks may publish, publishing may format: nest */
static int in_format;       /* no publishing from inside a format hook */

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
static void push_core_fn(const char *fn)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, core_ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
}

/* The entry points called per request or per message, looked up by name
 * once (core.lua's functions never change) instead of on every call. */
enum { HOT_AUTH, HOT_ROUTE, HOT_FORMAT, HOT_EVENT, HOT_COUNT };
static const char *const hot_names[HOT_COUNT] = {"auth", "route", "format", "event"};
static int hot_refs[HOT_COUNT];

static void remember_hot_fns(void)
{
    for (int i = 0; i < HOT_COUNT; i++) {
        push_core_fn(hot_names[i]);
        hot_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

static void push_hot_fn(int which)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, hot_refs[which]);
}

/* pcall with the budget armed for the outermost call; nested calls (a hook
 * that publishes) run inside the outer budget. */
static int budgeted_pcall(int budget, int nargs, int nresults)
{
    if (call_depth++ == 0)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, budget);
    int rc = lua_pcall(L, nargs, nresults, 0);
    if (--call_depth == 0)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, BUDGET_IDLE);   /* same mode: no dispatch rewrite */
    return rc;
}

/* Loading the config file, and the plugin files it names, runs the
 * operator's Lua: a config that never returns must be refused, not hang the
 * start, `--check-config`, or (on SIGHUP, or a plugin file's hot reload) the
 * running server. Loading the examples takes well under a million
 * instructions. */
#define LOAD_BUDGET 50000000

/* Why a load failed (the error on top of the stack), into err; what = the
 * file. Past the budget the message says so instead of where the error was
 * raised last (in core.lua, on the way out). */
static void load_error(const char *what, char *err, size_t errlen)
{
    const char *e = lua_tostring(L, -1);
    if (e && strstr(e, "instruction budget exceeded"))
        snprintf(err, errlen, "%s: loading ran past the instruction budget (%d Lua instructions): does it end?",
                 what, LOAD_BUDGET);
    else
        snprintf(err, errlen, "%s", e ? e : "error without a message");
}

/* A plugin hook under the route's budget (0: plugin_budget); logs failures. */
static int guarded_pcall(int budget, int nargs, int nresults, const char *what)
{
    int rc = budgeted_pcall(budget > 0 ? budget : mp.cfg.plugin_budget > 0 ? mp.cfg.plugin_budget : 1000000,
                            nargs, nresults);
    if (rc != 0) {
        mp.stats.plugin_errors++;
        mp_warn("plugin call failed", "phase=%s error=\"%s\"", what, mp_log_q(lua_tostring(L, -1)));
    }
    return rc;
}

static int route_budget(int route_index)
{
    return route_index >= 0 && route_index < mp.cfg.nroutes ? mp.cfg.routes[route_index].budget : 0;
}

/* ---- server-only helpers (moonpush.publish / online / channel_info) ------ */

static int l_publish(lua_State *l)
{
    size_t nlen, dlen;
    const char *name = luaL_checklstring(l, 1, &nlen);
    const char *data = luaL_checklstring(l, 2, &dlen);
    if (in_format)
        return luaL_error(l, "publish is not allowed inside a format hook");
    if (!mp_hub_valid_name(name, nlen))
        return luaL_error(l, "bad channel name '%s'", name);
    mp_publish_result r;
    int status = mp_hub_publish(name, data, dlen, NULL, &r);
    if (status < 0) {
        lua_pushnil(l);
        lua_pushstring(l, mp_store_strerror(status));
        return 2;
    }
    lua_createtable(l, 0, 4);
    lua_pushstring(l, name);
    lua_setfield(l, -2, "channel");
    lua_pushnumber(l, (double)r.seq);
    lua_setfield(l, -2, "seq");
    lua_pushstring(l, r.id);
    lua_setfield(l, -2, "id");
    lua_pushnumber(l, r.recipients);
    lua_setfield(l, -2, "recipients");
    return 1;
}

static int l_online(lua_State *l)
{
    char name[MP_NAME_MAX + 8];
    snprintf(name, sizeof name, "user:%s", luaL_checkstring(l, 1));
    mp_channel *ch = mp_hub_channel(name, 0);
    lua_pushinteger(l, ch ? (lua_Integer)mp_hub_channel_subscribers(ch) : 0);
    return 1;
}

static int l_channel_info(lua_State *l)
{
    const char *name = luaL_checkstring(l, 1);
    mp_channel *ch = mp_hub_channel(name, 0);
    char epoch[32];
    uint64_t last = 0;
    mp_delivery_position(name, epoch, &last);
    if (!ch && last == 0) {
        lua_pushnil(l);
        return 1;
    }
    lua_createtable(l, 0, 3);
    lua_pushinteger(l, ch ? (lua_Integer)mp_hub_channel_subscribers(ch) : 0);
    lua_setfield(l, -2, "subscribers");
    lua_pushnumber(l, (double)last);
    lua_setfield(l, -2, "seq");
    lua_pushstring(l, epoch);
    lua_setfield(l, -2, "epoch");
    return 1;
}

/* ---- admin-only helpers (moonpush.admin_host) ---------------------------- */

static void set_num(lua_State *l, const char *k, double v)
{
    lua_pushnumber(l, v);
    lua_setfield(l, -2, k);
}

static int l_admin_stats(lua_State *l)
{
    const mp_stats *st = &mp.stats;
    mp_store_stats ss;
    mp_store_get_stats(mp.store, &ss);
    lua_createtable(l, 0, 32);
    set_num(l, "connections", mp.nconns);
    set_num(l, "websockets", mp.nws);
    set_num(l, "sse_streams", mp.nsse);
    set_num(l, "channels", (double)mp_hub_channel_count());
    set_num(l, "uptime_s", ev_now(mp.loop) - mp.started);
    set_num(l, "connections_accepted", (double)st->connections_accepted);
    set_num(l, "connections_rejected", (double)st->connections_rejected);
    set_num(l, "http_requests", (double)st->http_requests);
    set_num(l, "handshakes", (double)st->ws_handshakes);
    set_num(l, "auth_denials", (double)st->auth_denials);
    set_num(l, "messages_published", (double)st->messages_published);
    set_num(l, "frames_queued", (double)st->frames_queued);
    set_num(l, "messages_replayed", (double)st->messages_replayed);
    set_num(l, "acks", (double)st->acks);
    set_num(l, "resends", (double)st->resends);
    set_num(l, "writev_calls", (double)st->writev_calls);
    set_num(l, "slow_consumer_closes", (double)st->slow_consumer_closes);
    set_num(l, "idle_timeout_closes", (double)st->idle_timeout_closes);
    set_num(l, "ack_timeout_closes", (double)st->ack_timeout_closes);
    set_num(l, "replaced_closes", (double)st->replaced_closes);
    set_num(l, "kicks", (double)st->kicks);
    set_num(l, "plugin_errors", (double)st->plugin_errors);
    set_num(l, "reloads", (double)st->reloads);
    set_num(l, "reload_failures", (double)st->reload_failures);
    lua_createtable(l, 0, 8);
    set_num(l, "messages", (double)ss.messages);
    set_num(l, "bytes", (double)ss.bytes);
    set_num(l, "channels", (double)ss.channels);
    set_num(l, "cursors", (double)ss.cursors);
    set_num(l, "trimmed", (double)ss.trimmed);
    set_num(l, "expired", (double)ss.expired);
    set_num(l, "evicted_channels", (double)ss.evicted_channels);
    lua_setfield(l, -2, "store");
    return 1;
}

static void push_client(lua_State *l, mp_conn *c, void *arg)
{
    (void)arg;
    mp_ws_desc d;
    if (mp_ws_describe(c, &d) < 0)
        return;
    lua_createtable(l, 0, 8);
    set_num(l, "id", (double)c->id);
    lua_pushstring(l, d.user);
    lua_setfield(l, -2, "user");
    lua_pushstring(l, d.device);
    lua_setfield(l, -2, "device");
    lua_pushstring(l, d.kind);
    lua_setfield(l, -2, "kind");
    lua_pushstring(l, d.route_index >= 0 && d.route_index < mp.cfg.nroutes ? mp.cfg.routes[d.route_index].path : "");
    lua_setfield(l, -2, "route");
    lua_pushstring(l, mp_conn_remote(c));
    lua_setfield(l, -2, "remote");
    set_num(l, "queued_bytes", (double)c->out.bytes);
    lua_newtable(l);
    int i = 1;
    for (const mp_sub *s = d.subs; s; s = s->conn_next) {
        lua_pushstring(l, mp_hub_channel_name(s->ch));
        lua_rawseti(l, -2, i++);
    }
    lua_setfield(l, -2, "channels");
    lua_rawseti(l, -2, (int)lua_objlen(l, -2) + 1);
}

static void push_client_cb(mp_conn *c, void *arg)
{
    push_client((lua_State *)arg, c, NULL);
}

static int l_admin_clients(lua_State *l)
{
    lua_newtable(l);
    mp_net_each_ws(push_client_cb, l);
    return 1;
}

typedef struct kick_req {
    const char *user;
    unsigned long long id;
    const char *reason;
    int count;
} kick_req;

static void kick_one(mp_conn *c, void *arg)
{
    kick_req *k = arg;
    mp_ws_desc d;
    if (mp_ws_describe(c, &d) < 0)
        return;
    if ((k->user && strcmp(d.user, k->user) == 0) || (!k->user && c->id == k->id)) {
        mp_conn_close_ws(c, 4003, k->reason);
        mp.stats.kicks++;
        k->count++;
    }
}

static int l_admin_kick(lua_State *l)
{
    kick_req k = {NULL, 0, luaL_optstring(l, 2, "kicked"), 0};
    if (lua_type(l, 1) == LUA_TNUMBER)
        k.id = (unsigned long long)lua_tonumber(l, 1);
    else
        k.user = luaL_checkstring(l, 1);
    mp_net_each_ws(kick_one, &k);
    if (k.user)
        mp_info("admin kick", "target=%s count=%d", k.user, k.count);
    else
        mp_info("admin kick", "target=conn:%llu count=%d", k.id, k.count);
    lua_pushinteger(l, k.count);
    return 1;
}

typedef struct admin_history {
    lua_State *l;
    int ok;
} admin_history;

static void got_admin_history(mp_store *st, int status, const mp_store_history *h, void *ud)
{
    (void)st;
    admin_history *a = ud;
    lua_State *l = a->l;
    if (status < 0 || !h)
        return;
    a->ok = 1;
    lua_createtable(l, 0, 5);
    lua_pushstring(l, h->epoch);
    lua_setfield(l, -2, "epoch");
    set_num(l, "first_seq", (double)h->first_seq);
    set_num(l, "last_seq", (double)h->last_seq);
    lua_pushboolean(l, h->more);
    lua_setfield(l, -2, "more");
    lua_createtable(l, (int)h->count, 0);
    for (size_t i = 0; i < h->count; i++) {
        size_t len;
        const uint8_t *p = mp_ws_frame_payload(h->items[i].frame, &len);
        lua_pushlstring(l, (const char *)p, len);
        lua_rawseti(l, -2, (int)i + 1);
    }
    lua_setfield(l, -2, "messages");
}

static int l_admin_history(lua_State *l)
{
    const char *channel = luaL_checkstring(l, 1);
    double since = luaL_optnumber(l, 2, 0), limit = luaL_optnumber(l, 3, 100);
    if (since < 0 || limit < 1 || limit > 1000)
        return luaL_error(l, "since >= 0 and 1 <= limit <= 1000");
    admin_history a = {l, 0};
    mp_store_read(mp.store, channel, NULL, (uint64_t)since, (size_t)limit, got_admin_history, &a);
    if (!a.ok) {
        lua_pushnil(l);
        lua_pushstring(l, "the history could not be read");
        return 2;
    }
    return 1;
}

static int l_admin_reload(lua_State *l)
{
    char summary[1024], err[512];
    /* The reload replaces the Lua config this very call runs under; it is
     * done by the time we return, and nothing below touches the old one. */
    if (mp_server_reload(summary, sizeof summary, err, sizeof err) < 0) {
        lua_pushnil(l);
        lua_pushstring(l, err);
        return 2;
    }
    lua_pushstring(l, summary);
    return 1;
}

static int l_admin_log_level(lua_State *l)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (lua_gettop(l) >= 1 && !lua_isnil(l, 1)) {
        const char *want = luaL_checkstring(l, 1);
        for (int i = 0; i < 4; i++) {
            if (strcmp(want, names[i]) == 0) {
                mp_log_level = i;
                lua_pushboolean(l, 1);
                return 1;
            }
        }
        lua_pushnil(l);
        lua_pushstring(l, "log levels are debug, info, warn, error");
        return 2;
    }
    lua_pushstring(l, names[mp_log_level]);
    return 1;
}

static int open_admin_host(lua_State *l)
{
    static const luaL_Reg fns[] = {
        {"stats", l_admin_stats}, {"clients", l_admin_clients}, {"kick", l_admin_kick},
        {"history", l_admin_history}, {"reload", l_admin_reload}, {"log_level", l_admin_log_level},
        {NULL, NULL}};
    lua_newtable(l);
    luaL_register(l, NULL, fns);
    return 1;
}

/* connections(user): { { id, device, kind, route, channels = {...} }, ... } */
static int l_connections(lua_State *l)
{
    char name[MP_NAME_MAX + 8];
    snprintf(name, sizeof name, "user:%s", luaL_checkstring(l, 1));
    mp_channel *ch = mp_hub_channel(name, 0);
    lua_newtable(l);
    for (mp_sub *s = ch ? mp_hub_channel_subs(ch) : NULL; s; s = s->ch_next)
        push_client(l, s->conn, NULL);
    return 1;
}

static int open_server_host(lua_State *l)
{
    luaopen_moonpush_host(l);
    static const luaL_Reg fns[] = {
        {"publish", l_publish}, {"online", l_online}, {"channel_info", l_channel_info},
        {"connections", l_connections}, {NULL, NULL}};
    luaL_register(l, NULL, fns);
    return 1;
}

/* ---- reading what Lua returned ------------------------------------------ */

static double num_field(int idx, const char *section, const char *key)
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

static int bool_field(int idx, const char *key)
{
    lua_getfield(L, idx, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void free_routes(mp_config *cfg)
{
    for (int i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].path);
        mp_cors_free(cfg->routes[i].cors);
    }
    free(cfg->routes);
    cfg->routes = NULL;
    cfg->nroutes = 0;
}

/* A route's cors policy (core.routes_for_c's cors_* fields), or NULL. */
static mp_cors *read_cors(int t)
{
    lua_getfield(L, t, "cors_origins");
    lua_getfield(L, t, "cors_headers");
    mp_cors *c = lua_isstring(L, -2) ? mp_cors_new(lua_tostring(L, -2), lua_tostring(L, -1),
                                                   (int)num_field(t, NULL, "cors_max_age"))
                                     : NULL;
    lua_pop(L, 2);
    return c;
}

/* Replaces cfg's routes with core.routes_for_c(). */
static int read_routes(mp_config *cfg)
{
    push_core_fn("routes_for_c");
    if (lua_pcall(L, 0, 1, 0) != 0) {
        lua_pop(L, 1);
        return -1;
    }
    int n = (int)lua_objlen(L, -1);
    mp_route *routes = calloc((size_t)n, sizeof *routes);
    if (!routes) {
        lua_pop(L, 1);
        return -1;
    }
    static const struct { const char *name; unsigned flag; } hooks[] = {
        {"auth", MP_HOOK_AUTH}, {"ratelimit", MP_HOOK_RATELIMIT}, {"route", MP_HOOK_ROUTE},
        {"format", MP_HOOK_FORMAT}, {"on_connect", MP_HOOK_ON_CONNECT},
        {"on_close", MP_HOOK_ON_CLOSE}, {"on_message", MP_HOOK_ON_MESSAGE}, {"on_ack", MP_HOOK_ON_ACK}};
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        int t = lua_gettop(L);
        mp_route *r = &routes[i];
        lua_getfield(L, t, "path");
        r->path = strdup(lua_tostring(L, -1));
        r->path_len = strlen(r->path);
        lua_getfield(L, t, "type");
        const char *type = lua_tostring(L, -1);
        r->type = strcmp(type, "websocket") == 0 ? MP_ROUTE_WEBSOCKET
                : strcmp(type, "publish") == 0   ? MP_ROUTE_PUBLISH
                : strcmp(type, "history") == 0   ? MP_ROUTE_HISTORY
                : strcmp(type, "presence") == 0  ? MP_ROUTE_PRESENCE
                : strcmp(type, "metrics") == 0   ? MP_ROUTE_METRICS
                : strcmp(type, "sse") == 0       ? MP_ROUTE_SSE
                                                 : MP_ROUTE_HEALTH;
        lua_pop(L, 2);
        r->budget = (int)num_field(t, NULL, "budget");
        r->allow_duplicates = bool_field(t, "allow_duplicates");
        r->acks = bool_field(t, "acks");
        r->ack_timeout = num_field(t, NULL, "ack_timeout_ms") / 1000.0;
        r->ack_factor = num_field(t, NULL, "ack_factor");
        r->ack_jitter = num_field(t, NULL, "ack_jitter");
        r->ack_max_tries = (int)num_field(t, NULL, "ack_max_tries");
        r->cors = read_cors(t);
        r->deflate = bool_field(t, "deflate");
        r->deflate_threshold = (int)num_field(t, NULL, "deflate_threshold");
        r->deflate_level = (int)num_field(t, NULL, "deflate_level");
        for (size_t h = 0; h < sizeof hooks / sizeof hooks[0]; h++)
            if (bool_field(t, hooks[h].name))
                r->hooks |= hooks[h].flag;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    free_routes(cfg);
    cfg->routes = routes;
    cfg->nroutes = n;
    return 0;
}

static void free_policies(mp_history_config *h)
{
    for (int i = 0; i < h->npolicies; i++)
        free(h->policies[i].pattern);
    free(h->policies);
    h->policies = NULL;
    h->npolicies = 0;
}

static void read_history(int idx, mp_config *cfg)
{
    mp_history_config *h = &cfg->history;
    free_policies(h);
    h->max_messages = (uint32_t)num_field(idx, "history", "max_messages");
    h->max_age_ms = (uint64_t)num_field(idx, "history", "max_age_ms");
    h->max_channels = (size_t)num_field(idx, "history", "max_channels");
    h->max_bytes = (size_t)num_field(idx, "history", "max_bytes");
    h->channel_idle_ms = (uint64_t)num_field(idx, "history", "channel_idle_ms");
    h->max_cursors = (size_t)num_field(idx, "history", "max_cursors");
    h->cursor_ttl_ms = (uint64_t)num_field(idx, "history", "cursor_ttl_ms");
    lua_getfield(L, idx, "history");
    lua_getfield(L, -1, "channels");
    int n = (int)lua_objlen(L, -1);
    h->policies = n ? calloc((size_t)n, sizeof *h->policies) : NULL;
    for (int i = 0; h->policies && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        int t = lua_gettop(L);
        lua_getfield(L, t, "pattern");
        h->policies[i].pattern = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        h->policies[i].max_messages = (uint32_t)num_field(t, NULL, "max_messages");
        h->policies[i].max_age_ms = (uint64_t)num_field(t, NULL, "max_age_ms");
        h->npolicies = i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

static void str_field(int idx, const char *section, const char *key, char *out, size_t outlen)
{
    lua_getfield(L, idx, section);
    lua_getfield(L, -1, key);
    snprintf(out, outlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 2);
}

static void read_admin_and_log(int idx, mp_config *cfg)
{
    str_field(idx, "admin", "socket", cfg->admin_socket, sizeof cfg->admin_socket);
    str_field(idx, "admin", "listen_host", cfg->admin_host, sizeof cfg->admin_host);
    str_field(idx, "admin", "token", cfg->admin_token, sizeof cfg->admin_token);
    cfg->admin_port = (int)num_field(idx, "admin", "listen_port");
    char level[16], fmt[16];
    str_field(idx, "log", "level", level, sizeof level);
    str_field(idx, "log", "format", fmt, sizeof fmt);
    str_field(idx, "log", "file", cfg->log_file, sizeof cfg->log_file);
    cfg->log_level = strcmp(level, "debug") == 0 ? MP_LOG_DEBUG : strcmp(level, "warn") == 0 ? MP_LOG_WARN
                   : strcmp(level, "error") == 0 ? MP_LOG_ERROR : MP_LOG_INFO;
    cfg->log_json = strcmp(fmt, "json") == 0;
    lua_getfield(L, idx, "log");
    lua_getfield(L, -1, "access");
    cfg->log_access = lua_toboolean(L, -1);
    lua_pop(L, 2);
    lua_getfield(L, idx, "pid_file");
    snprintf(cfg->pid_file, sizeof cfg->pid_file, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
}

static void read_limits(int idx, mp_config *cfg)
{
    read_history(idx, cfg);
    read_admin_and_log(idx, cfg);
    cfg->max_connections = (int)num_field(idx, NULL, "max_connections");
    cfg->max_header_bytes = (size_t)num_field(idx, "limits", "max_header_bytes");
    cfg->max_body_bytes = (size_t)num_field(idx, "limits", "max_body_bytes");
    cfg->max_batch = (size_t)num_field(idx, "limits", "max_batch");
    cfg->max_message_bytes = (size_t)num_field(idx, "limits", "max_message_bytes");
    cfg->max_outbound_bytes = (size_t)num_field(idx, "limits", "max_outbound_bytes");
    cfg->max_subscriptions = (size_t)num_field(idx, "limits", "max_subscriptions");
    cfg->max_channels = (size_t)num_field(idx, "limits", "max_channels");
    cfg->socket_send_buffer = (int)num_field(idx, "limits", "socket_send_buffer");
    cfg->plugin_budget = (int)num_field(idx, NULL, "plugin_budget");
    cfg->request_timeout = num_field(idx, "timeouts", "request_ms") / 1000.0;
    cfg->idle_timeout = num_field(idx, "timeouts", "idle_ms") / 1000.0;
    cfg->ping_interval = num_field(idx, "timeouts", "ping_ms") / 1000.0;
    cfg->shutdown_grace = num_field(idx, "timeouts", "shutdown_ms") / 1000.0;
}

/* listeners = { { host, port, tls = { cert, key } | nil }, ... }, validated
 * by config.lua (at most MP_MAX_LISTENERS, bounded strings). */
static void read_listeners(int idx, mp_config *cfg)
{
    lua_getfield(L, idx, "listeners");
    int n = (int)lua_objlen(L, -1);
    cfg->nlisteners = 0;
    for (int i = 0; i < n && i < MP_MAX_LISTENERS; i++) {
        mp_listener_config *l = &cfg->listeners[cfg->nlisteners++];
        lua_rawgeti(L, -1, i + 1);
        int t = lua_gettop(L);
        lua_getfield(L, t, "host");
        snprintf(l->host, sizeof l->host, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
        lua_pop(L, 1);
        l->port = (int)num_field(t, NULL, "port");
        l->cert[0] = l->key[0] = '\0';
        lua_getfield(L, t, "tls");
        if (lua_istable(L, -1)) {
            str_field(t, "tls", "cert", l->cert, sizeof l->cert);
            str_field(t, "tls", "key", l->key, sizeof l->key);
        }
        lua_pop(L, 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
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
    int t = lua_gettop(L);
    lua_getfield(L, t, "listen_host");
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    cfg->listen_port = (int)num_field(t, NULL, "listen_port");
    read_listeners(t, cfg);
    read_limits(t, cfg);
    lua_settop(L, 0);
    if (read_routes(cfg) < 0) {
        snprintf(err, errlen, "cannot read routes");
        return -1;
    }
    return 0;
}

/* ---- denials ------------------------------------------------------------ */

static void set_denial(mp_denial *d, int status, const char *code, const char *message)
{
    d->status = status;
    d->retry_after = 0;
    snprintf(d->code, sizeof d->code, "%s", code);
    snprintf(d->message, sizeof d->message, "%s", message);
}

static void read_denial(int idx, mp_denial *d)
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

static void failed_call(mp_denial *d)
{
    const char *e = lua_tostring(L, -1);
    char msg[160];
    snprintf(msg, sizeof msg, "plugin %s %s", running_plugin(),
             e && strstr(e, "instruction budget") ? "ran past its instruction budget" : "failed");
    set_denial(d, 500, "plugin_error", msg);
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
    lua_pushstring(L, mp_conn_remote(req->conn));
    lua_setfield(L, -2, "remote_addr");
    lua_createtable(L, 0, req->nheaders);
    for (int i = 0; i < req->nheaders; i++) {
        lua_pushstring(L, req->headers[i].value);
        lua_setfield(L, -2, req->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
}

/* String lists: sizes first, then one allocation holds pointers and bytes. */
static size_t list_bytes(int idx, const char *field, int *count)
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

static char *copy_str(char **cursor, const char *s, size_t len)
{
    char *dst = *cursor;
    if (len)
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
    id->expires = num_field(idx, NULL, "expires");
    id->no_cache = num_field(idx, NULL, "no_cache") != 0;
    return id;
}

/* Reads core.auth's or core.refresh's answer (identity, denial) after a
 * guarded_pcall that returned rc; pops back to top. Returns 0 or -1. */
static int read_auth_answer(int rc, int top, mp_identity **out, mp_denial *deny)
{
    int result = -1;
    if (rc != 0) {
        failed_call(deny);
    } else if (lua_istable(L, -2)) {
        *out = read_identity(lua_gettop(L) - 1);
        if (*out)
            result = 0;
        else
            set_denial(deny, 503, "unavailable", "server out of memory");
    } else {
        read_denial(lua_gettop(L), deny);
    }
    lua_settop(L, top);
    return result;
}

int mp_lua_auth(const mp_http_req *req, mp_identity **out, mp_denial *deny)
{
    int top = lua_gettop(L);
    push_hot_fn(HOT_AUTH);
    lua_pushinteger(L, req->route_index + 1);
    push_request(req);
    return read_auth_answer(guarded_pcall(req->route->budget, 2, 2, "auth"), top, out, deny);
}

static void push_conn(const mp_conn_info *c);

int mp_lua_refresh(int route_index, const mp_conn_info *conn, const char *token, mp_identity **out,
                   mp_denial *deny)
{
    int top = lua_gettop(L);
    push_core_fn("refresh");
    lua_pushinteger(L, route_index + 1);
    push_conn(conn);
    lua_pushstring(L, token);
    return read_auth_answer(guarded_pcall(route_budget(route_index), 3, 2, "auth"), top, out, deny);
}

/* ---- publish: route hooks ----------------------------------------------- */

/* One allocation: the struct, its channel and kind pointers, then bytes for
 * the strings; *cursor is where the bytes start. */
static mp_routed *routed_alloc(int nch, int nkinds, size_t bytes, char **cursor)
{
    mp_routed *r = malloc(sizeof *r + sizeof(char *) * (size_t)(nch + nkinds) + bytes);
    if (!r)
        return NULL;
    r->channels = (char **)(r + 1);
    r->kinds = r->channels + nch;
    r->nchannels = nch;
    r->nkinds = nkinds;
    *cursor = (char *)(r->kinds + nkinds);
    return r;
}

/* core.route's answer for a message is a string when the hooks left it
 * alone apart from its channel: that one channel, every device kind, data
 * as published (used as it is: neither re-encoded nor copied). */
static mp_routed *read_routed_channel(int idx, const char *published)
{
    size_t len;
    const char *channel = lua_tolstring(L, idx, &len);
    char *cursor;
    mp_routed *r = routed_alloc(1, 0, len + 1, &cursor);
    if (r) {
        r->channels[0] = copy_str(&cursor, channel, len);
        r->data = published;
        r->data_len = strlen(published);
    }
    return r;
}

/* Otherwise a table { channels = {...}, kinds = {...}|nil, data = text|nil }
 * (data nil: as published). */
static mp_routed *read_routed(int idx, const char *published)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        return read_routed_channel(idx, published);
    int nch, nkinds;
    lua_getfield(L, idx, "data");
    size_t data_len = 0;
    const char *changed = lua_tolstring(L, -1, &data_len);
    size_t bytes = list_bytes(idx, "channels", &nch) + list_bytes(idx, "kinds", &nkinds) +
                   (changed ? data_len + 1 : 0);
    char *cursor;
    mp_routed *r = routed_alloc(nch, nkinds, bytes, &cursor);
    if (r) {
        copy_list(&cursor, idx, "channels", r->channels, nch);
        copy_list(&cursor, idx, "kinds", r->kinds, nkinds);
        r->data = changed ? copy_str(&cursor, changed, data_len) : published;
        r->data_len = changed ? data_len : strlen(published);
    }
    lua_pop(L, 1);
    return r;
}

/* Reads core.route's answers: one value for one message, else a list. */
static int read_route_answers(int idx, int n, const char *const *datas, mp_routed **out)
{
    for (int i = 0; i < n; i++) {
        if (n > 1)
            lua_rawgeti(L, idx, i + 1);
        else
            lua_pushvalue(L, idx);
        out[i] = read_routed(lua_gettop(L), datas[i]);
        lua_pop(L, 1);
        if (!out[i]) {
            for (int k = 0; k < i; k++)
                free(out[k]);
            return -1;
        }
    }
    return 0;
}

int mp_lua_route(const mp_http_req *req, const char *publisher, int n, const char *const *channels,
                 const char *const *datas, mp_routed **out, mp_denial *deny)
{
    int top = lua_gettop(L);
    /* core.route(i, route path, publisher, remote, list, channel, data):
     * plain values, so no table is keyed from C; a batch comes as one flat
     * list { ch1, data1, ch2, ... }, a single message (the usual request) as
     * channel and data with list nil, and Lua makes no list for it either. */
    push_hot_fn(HOT_ROUTE);
    lua_pushinteger(L, req->route_index + 1);
    lua_pushstring(L, req->route->path);
    lua_pushstring(L, publisher);
    lua_pushstring(L, mp_conn_remote(req->conn));
    if (n == 1) {
        lua_pushnil(L);
        lua_pushstring(L, channels[0]);
        lua_pushstring(L, datas[0]);
    } else {
        lua_createtable(L, 2 * n, 0);
        for (int i = 0; i < n; i++) {
            lua_pushstring(L, channels[i]);
            lua_rawseti(L, -2, 2 * i + 1);
            lua_pushstring(L, datas[i]);
            lua_rawseti(L, -2, 2 * i + 2);
        }
    }
    int result = -1;
    if (guarded_pcall(req->route->budget, n == 1 ? 7 : 5, 2, "route") != 0) {
        failed_call(deny);
    } else if (lua_isnil(L, -2)) {
        read_denial(lua_gettop(L), deny);
    } else if (read_route_answers(lua_gettop(L) - 1, n, datas, out) < 0) {
        set_denial(deny, 503, "unavailable", "server out of memory");
    } else {
        result = 0;
    }
    lua_settop(L, top);
    return result;
}

/* ---- delivery: format hooks --------------------------------------------- */

int mp_lua_format(int route_index, const char *channel, unsigned long long seq, const char *id,
                  const char *data, size_t data_len, char **out, size_t *out_len)
{
    int top = lua_gettop(L);
    /* core.format(i, channel, seq, id, data_json): plain values, the message
     * table is made in Lua (no key interned from C per message) */
    push_hot_fn(HOT_FORMAT);
    lua_pushinteger(L, route_index + 1);
    lua_pushstring(L, channel);
    lua_pushnumber(L, (double)seq);
    lua_pushstring(L, id);
    lua_pushlstring(L, data, data_len);
    in_format = 1;
    int rc = guarded_pcall(route_budget(route_index), 5, 2, "format");
    in_format = 0;
    int result;
    if (rc != 0) {
        result = -1;
    } else if (lua_isstring(L, -2)) {
        size_t len;
        const char *s = lua_tolstring(L, -2, &len);
        *out = malloc(len + 1);
        if (*out) {
            memcpy(*out, s, len + 1);
            *out_len = len;
        }
        result = *out ? 1 : -1;
    } else if (lua_istable(L, -1)) {
        mp_denial d;
        read_denial(lua_gettop(L), &d);
        mp.stats.plugin_errors++;
        mp_warn("format hook refused a message", "route=%s channel=%s reason=\"%s\"",
                mp.cfg.routes[route_index].path, channel, mp_log_q(d.message));
        result = -1;
    } else {
        result = 0;
    }
    lua_settop(L, top);
    return result;
}

/* ---- connection events -------------------------------------------------- */

static void push_conn(const mp_conn_info *c)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", c->id);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, c->user);
    lua_setfield(L, -2, "user");
    lua_pushstring(L, c->device);
    lua_setfield(L, -2, "device");
    lua_pushstring(L, c->kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, c->remote);
    lua_setfield(L, -2, "remote_addr");
}

void mp_lua_conn_event(int route_index, const char *name, const mp_conn_info *conn, int code, const char *reason)
{
    int top = lua_gettop(L);
    push_hot_fn(HOT_EVENT);
    lua_pushinteger(L, route_index + 1);
    lua_pushstring(L, name);
    push_conn(conn);
    if (reason) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, reason);
        lua_setfield(L, -2, "reason");
    } else {
        lua_pushnil(L);
    }
    if (guarded_pcall(route_budget(route_index), 4, 2, name) == 0 && lua_istable(L, -1)) {
        mp_denial d;
        read_denial(lua_gettop(L), &d);   /* logs the collected hook errors */
    }
    lua_settop(L, top);
}

void mp_lua_ack_event(int route_index, const mp_conn_info *conn, const char *channel, unsigned long long seq)
{
    int top = lua_gettop(L);
    push_hot_fn(HOT_EVENT);
    lua_pushinteger(L, route_index + 1);
    lua_pushstring(L, "on_ack");
    push_conn(conn);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, channel);
    lua_setfield(L, -2, "channel");
    lua_pushnumber(L, (double)seq);
    lua_setfield(L, -2, "seq");
    if (guarded_pcall(route_budget(route_index), 4, 2, "on_ack") == 0 && lua_istable(L, -1)) {
        mp_denial d;
        read_denial(lua_gettop(L), &d);
    }
    lua_settop(L, top);
}

int mp_lua_message_ratelimit(int route_index, const mp_conn_info *conn, mp_denial *deny)
{
    int top = lua_gettop(L);
    push_hot_fn(HOT_EVENT);
    lua_pushinteger(L, route_index + 1);
    lua_pushstring(L, "ratelimit");
    push_conn(conn);
    int result = 0;
    if (guarded_pcall(route_budget(route_index), 3, 2, "ratelimit") != 0) {
        failed_call(deny);
        result = -1;
    } else if (lua_isnil(L, -2)) {
        read_denial(lua_gettop(L), deny);
        result = -1;
    }
    lua_settop(L, top);
    return result;
}

int mp_lua_on_message(int route_index, const mp_conn_info *conn, const char *frame, size_t len,
                      char **reply, mp_denial *deny)
{
    int top = lua_gettop(L);
    push_hot_fn(HOT_EVENT);
    lua_pushinteger(L, route_index + 1);
    lua_pushstring(L, "on_message");
    push_conn(conn);
    lua_pushlstring(L, frame, len);
    int result = -1;
    *reply = NULL;
    if (guarded_pcall(route_budget(route_index), 4, 2, "on_message") != 0) {
        failed_call(deny);
    } else if (lua_isstring(L, -2)) {
        *reply = strdup(lua_tostring(L, -2));
        result = 1;
    } else if (lua_istable(L, -1)) {
        read_denial(lua_gettop(L), deny);
    } else {
        result = 1;
    }
    lua_settop(L, top);
    return result;
}

/* ---- reload ------------------------------------------------------------- */

int mp_lua_reload_config(mp_config *cfg, char *summary, size_t summary_len, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    push_core_fn("reload_config");
    if (budgeted_pcall(LOAD_BUDGET, 0, 2) != 0 || lua_isnil(L, -2)) {
        load_error("the config file", err, errlen);
        lua_settop(L, top);
        mp.stats.reload_failures++;
        return -1;
    }
    snprintf(summary, summary_len, "%s", lua_tostring(L, -1));
    read_limits(lua_gettop(L) - 1, cfg);
    lua_settop(L, top);
    if (read_routes(cfg) < 0) {
        snprintf(err, errlen, "cannot read routes");
        mp.stats.reload_failures++;
        return -1;
    }
    mp.stats.reloads++;
    return 0;
}

/* A plugin file under watch. Editors write in steps (truncate, write,
 * rename), each an event: a reload waits until the file has been quiet for
 * RELOAD_SETTLE seconds so it never compiles a half-written file. */
#define RELOAD_SETTLE 0.2

typedef struct watched {
    ev_stat w;
    ev_timer settle;
    struct timespec mtime;      /* as last seen, to the nanosecond */
    off_t size;
    ino_t ino;
    struct watched *next;
    char path[];
} watched;

static watched *watches;
/* ev_stat compares mtime in whole seconds: a same-size edit within the
 * second it loaded would go unseen. A once-a-second nanosecond check of the
 * few watched files catches it. */
static ev_timer recheck;

static int remember_stat(watched *f)
{
    struct stat st;
    if (stat(f->path, &st) != 0)
        return 0;
    int changed = st.st_mtim.tv_sec != f->mtime.tv_sec || st.st_mtim.tv_nsec != f->mtime.tv_nsec ||
                  st.st_size != f->size || st.st_ino != f->ino;
    f->mtime = st.st_mtim;
    f->size = st.st_size;
    f->ino = st.st_ino;
    return changed;
}

/* Starts f from the stamp taken when its file was loaded (a table from
 * moonpush.host.file_stamp at idx, or false). Returns 0 if there is none. */
static int start_from_stamp(watched *f, int idx)
{
    if (!lua_istable(L, idx))
        return 0;
    lua_Number v[4];
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, idx, i + 1);
        v[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    f->mtime.tv_sec = (time_t)v[0];
    f->mtime.tv_nsec = (long)v[1];
    f->size = (off_t)v[2];
    f->ino = (ino_t)v[3];
    return 1;
}

static void reload_plugin_file(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop; (void)revents;
    watched *f = t->data;
    if (f->w.attr.st_nlink == 0)
        return;   /* removed, or mid-rename: keep serving the loaded version */
    int top = lua_gettop(L);
    push_core_fn("reload_file");
    lua_pushstring(L, f->path);
    if (budgeted_pcall(LOAD_BUDGET, 1, 2) != 0 || lua_isnil(L, -2)) {
        char err[512];
        load_error(f->path, err, sizeof err);
        mp.stats.reload_failures++;
        mp_error("plugin reload refused, old version keeps serving", "file=%s error=\"%s\"", f->path,
                 mp_log_q(err));
    } else {
        mp.stats.reloads++;
        mp_info("plugin reloaded", "file=%s routes=%d", f->path, (int)lua_tointeger(L, -2));
        read_routes(&mp.cfg);   /* hook flags may have changed; paths did not */
    }
    lua_settop(L, top);
}

static void schedule_reload(struct ev_loop *loop, watched *f)
{
    ev_timer_stop(loop, &f->settle);
    ev_timer_set(&f->settle, RELOAD_SETTLE, 0.);
    ev_timer_start(loop, &f->settle);
}

static void on_plugin_changed(struct ev_loop *loop, ev_stat *w, int revents)
{
    (void)revents;
    watched *f = (watched *)w;
    remember_stat(f);
    schedule_reload(loop, f);
}

static void on_recheck(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w; (void)revents;
    for (watched *f = watches; f; f = f->next)
        if (remember_stat(f))
            schedule_reload(loop, f);
}

static void unwatch_all(struct ev_loop *loop)
{
    ev_timer_stop(loop, &recheck);
    while (watches) {
        watched *f = watches;
        watches = f->next;
        ev_stat_stop(loop, &f->w);
        ev_timer_stop(loop, &f->settle);
        free(f);
    }
}

void mp_lua_watch_plugins(struct ev_loop *loop)
{
    unwatch_all(loop);
    int top = lua_gettop(L);
    push_core_fn("plugin_files");
    if (lua_pcall(L, 0, 2, 0) != 0) {
        lua_settop(L, top);
        return;
    }
    int files = lua_gettop(L) - 1, stamps = files + 1;
    int n = (int)lua_objlen(L, files);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, stamps, i);
        lua_rawgeti(L, files, i);
        const char *path = lua_tostring(L, -1);
        watched *f = calloc(1, sizeof *f + strlen(path) + 1);
        if (f) {
            strcpy(f->path, path);
            ev_stat_init(&f->w, on_plugin_changed, f->path, 0.);
            ev_stat_start(loop, &f->w);
            ev_init(&f->settle, reload_plugin_file);
            f->settle.data = f;
            f->size = -1;
            /* An edit between loading the file and this point (a config
             * load, then listening, then here) differs from the stamp: it
             * is reloaded like any later one. */
            int stamped = start_from_stamp(f, -2);
            if (remember_stat(f) && stamped)
                schedule_reload(loop, f);
            f->next = watches;
            watches = f;
        }
        lua_pop(L, 2);
    }
    lua_settop(L, top);
    ev_timer_init(&recheck, on_recheck, 1., 1.);
    ev_timer_start(loop, &recheck);
}

/* ---- admin ------------------------------------------------------------ */

static int push_admin_fn(const char *fn)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "moonpush.admin");
    if (lua_pcall(L, 1, 1, 0) != 0)
        return -1;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    return 0;
}

int mp_lua_admin_eval(unsigned long session, const char *code, char **output)
{
    int top = lua_gettop(L);
    int result = -1;
    if (push_admin_fn("eval") < 0) {
        *output = strdup(lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    lua_pushnumber(L, (double)session);
    lua_pushstring(L, code);
    if (guarded_pcall(0, 2, 3, "admin") != 0) {
        const char *e = lua_tostring(L, -1);
        *output = strdup(e && strstr(e, "instruction budget") ? "aborted: ran past the instruction budget" : (e ? e : "error"));
    } else if (lua_toboolean(L, -3)) {
        *output = strdup(lua_isstring(L, -2) ? lua_tostring(L, -2) : "");
        result = 0;
    } else if (lua_toboolean(L, -1)) {
        *output = NULL;
        result = 1;
    } else {
        const char *e = lua_tostring(L, -2);
        *output = strdup(e && strstr(e, "instruction budget") ? "aborted: ran past the instruction budget" : (e ? e : "error"));
    }
    lua_settop(L, top);
    return result;
}

void mp_lua_admin_end(unsigned long session)
{
    int top = lua_gettop(L);
    if (push_admin_fn("end_session") == 0) {
        lua_pushnumber(L, (double)session);
        lua_pcall(L, 1, 0, 0);
    }
    lua_settop(L, top);
}

char *mp_lua_admin_complete(unsigned long session, const char *prefix)
{
    int top = lua_gettop(L);
    char *out = NULL;
    if (push_admin_fn("complete") == 0) {
        lua_pushnumber(L, (double)session);
        lua_pushstring(L, prefix);
        if (guarded_pcall(0, 2, 1, "admin complete") == 0 && lua_istable(L, -1)) {
            size_t n = lua_objlen(L, -1), len = 2;
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (int)i);
                size_t k;
                lua_tolstring(L, -1, &k);
                len += k * 2 + 4;   /* quotes, comma, escaping room */
                lua_pop(L, 1);
            }
            out = malloc(len + 1);
            if (out) {
                size_t o = 0;
                out[o++] = '[';
                for (size_t i = 1; i <= n; i++) {
                    lua_rawgeti(L, -1, (int)i);
                    const char *c = lua_tostring(L, -1);
                    if (i > 1)
                        out[o++] = ',';
                    out[o++] = '"';
                    for (; c && *c; c++) {
                        if (*c == '"' || *c == '\\')
                            out[o++] = '\\';
                        out[o++] = *c;
                    }
                    out[o++] = '"';
                    lua_pop(L, 1);
                }
                out[o++] = ']';
                out[o] = '\0';
            }
        }
    }
    lua_settop(L, top);
    return out ? out : strdup("[]");
}

int mp_lua_plugin_stats(mp_plugin_stat *out, int max)
{
    int top = lua_gettop(L), n = 0;
    push_core_fn("plugin_stats");
    if (lua_pcall(L, 0, 1, 0) == 0 && lua_istable(L, -1)) {
        int len = (int)lua_objlen(L, -1);
        for (int i = 1; i <= len && n < max; i++, n++) {
            lua_rawgeti(L, -1, i);
            int t = lua_gettop(L);
            lua_getfield(L, t, "name");
            snprintf(out[n].name, sizeof out[n].name, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
            lua_pop(L, 1);
            out[n].calls = (uint64_t)num_field(t, NULL, "calls");
            out[n].errors = (uint64_t)num_field(t, NULL, "errors");
            out[n].seconds = num_field(t, NULL, "seconds");
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return n;
}

/* ---- misc --------------------------------------------------------------- */

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

int mp_identity_allows_device(const mp_identity *id, const char *name)
{
    static const char personal[] = "user:";
    const size_t plen = sizeof personal - 1;
    if (strncmp(name, personal, plen) != 0)
        return mp_identity_allows(id, name);
    if (strcmp(name + plen, id->user) == 0)
        return 1;
    for (int i = 0; i < id->nallow; i++) {
        const char *p = id->allow[i];
        size_t n = strlen(p);
        if (n > 0 && p[n - 1] == '*') {
            if (n - 1 >= plen && strncmp(name, p, n - 1) == 0)
                return 1;
        } else if (strcmp(name, p) == 0) {
            return 1;
        }
    }
    return 0;
}

void mp_lua_close(void)
{
    if (mp.loop)
        unwatch_all(mp.loop);
    if (L)
        lua_close(L);
    L = NULL;
}

void mp_config_free(mp_config *cfg)
{
    free_policies(&cfg->history);
    free_routes(cfg);
}
