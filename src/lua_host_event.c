/* lua_host_event.c — the event phase (core.event): on_connect, on_close,
 * on_ack, the client-message rate limit and on_message, each given what a
 * hook sees of the connection (push_conn, also used by a refresh).
 */
#include "lua_host_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void push_conn(const mp_conn_info *c)
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
