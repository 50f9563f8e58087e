/* lua_host_auth.c — the auth phase: a request's route runs its Origin
 * check, connect/publish rate limit and auth chain (core.auth), and a
 * WebSocket refresh frame its auth chain over the new token (core.refresh);
 * the identity returned is copied into one C allocation.
 */
#include "lua_host_int.h"

#include <stdlib.h>

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
