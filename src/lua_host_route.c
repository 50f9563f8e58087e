/* lua_host_route.c — the route phase: a publish request's messages through
 * the route's route hooks (core.route), each answer copied into one
 * mp_routed allocation (channels, device kinds, data).
 */
#include "lua_host_int.h"

#include <stdlib.h>
#include <string.h>

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
