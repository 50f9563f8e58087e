/* lua_host_format.c — the format phase: a message's payload for the
 * subscribers of a route with format hooks (core.format). Publishing from
 * inside a format hook is refused (in_format, see lua_host_helpers.c).
 */
#include "lua_host_int.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

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
