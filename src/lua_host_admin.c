/* lua_host_admin.c — the admin REPL's side of the Lua state: the helpers
 * only admin code gets (moonpush.admin_host: stats, clients, kick, history,
 * reload, log_level), and the evaluation of an admin connection's chunks
 * and completions in its session (lua/moonpush/admin.lua), plus the
 * per-plugin statistics /metrics and the admin read.
 */
#include "lua_host_int.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "log.h"
#include "store.h"
#include "ws.h"

/* ---- admin-only helpers (moonpush.admin_host) ---------------------------- */

void set_num(lua_State *l, const char *k, double v)
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

void push_client(lua_State *l, mp_conn *c, void *arg)
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
        mp_conn_close_stream(c, 4003, k->reason);
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
        const uint8_t *p = mp_frame_ws_payload(h->items[i].frame, &len);
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

int open_admin_host(lua_State *l)
{
    static const luaL_Reg fns[] = {
        {"stats", l_admin_stats}, {"clients", l_admin_clients}, {"kick", l_admin_kick},
        {"history", l_admin_history}, {"reload", l_admin_reload}, {"log_level", l_admin_log_level},
        {NULL, NULL}};
    lua_newtable(l);
    luaL_register(l, NULL, fns);
    return 1;
}
/* ---- evaluating admin chunks ------------------------------------------ */

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
