/* lua_host_config.c — the config core.lua validated, read into C structs
 * (mp_config in server.h): at start (mp_lua_init), on a reload of the whole
 * file, and the routes again after a plugin file's hot reload (hook flags
 * may change). Lua validated everything already; C only copies.
 */
#include "lua_host_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cors.h"
#include "log.h"

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
int read_routes(mp_config *cfg)
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

/* The top level of the config table at idx: where to listen (listeners,
 * TLS), the limits. */
void read_config(int idx, mp_config *cfg)
{
    lua_getfield(L, idx, "listen_host");
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    cfg->listen_port = (int)num_field(idx, NULL, "listen_port");
    read_listeners(idx, cfg);
    read_limits(idx, cfg);
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

void mp_config_free(mp_config *cfg)
{
    free_policies(&cfg->history);
    free_routes(cfg);
}
