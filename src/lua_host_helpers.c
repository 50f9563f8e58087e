/* lua_host_helpers.c — the server-only helpers plugins get in moonpush.host
 * besides lua_api.c's pure ones: publish, online, channel_info, connections
 * (docs/plugins.md). They reach the hub and delivery; a connection is
 * described by push_client (lua_host_admin.c).
 */
#include "lua_host_int.h"

#include <lauxlib.h>
#include <stdio.h>

#include "delivery.h"
#include "hub.h"
#include "store.h"

int luaopen_moonpush_host(lua_State *L);   /* lua_api.c */

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

int open_server_host(lua_State *l)
{
    luaopen_moonpush_host(l);
    static const luaL_Reg fns[] = {
        {"publish", l_publish}, {"online", l_online}, {"channel_info", l_channel_info},
        {"connections", l_connections}, {NULL, NULL}};
    luaL_register(l, NULL, fns);
    return 1;
}
