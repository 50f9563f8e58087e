/* reload.c — swapping the config of a running server (SIGHUP, admin
 * reload()). The Lua side validates the new config whole; only then are
 * routes, limits, timeouts, history policies and plugin watches replaced.
 * Listeners and connections stay; a connection keeps its route when the
 * route's path survives (else it runs without plugins until it closes).
 * TLS listeners reread their certificate and key: the new ones serve new
 * connections, open ones keep theirs; a bad file refuses the whole reload.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lua_host.h"
#include "net.h"
#include "reload.h"
#include "server.h"
#include "store.h"
#include "tls.h"
#include "ws.h"

/* The store's limits from the config's history section. */
void mp_reload_store_policies(mp_store_policy *out, mp_store_policy *def)
{
    const mp_history_config *h = &mp.cfg.history;
    for (int i = 0; i < h->npolicies; i++) {
        out[i].pattern = h->policies[i].pattern;
        out[i].max_messages = h->policies[i].max_messages;
        out[i].max_age_ms = h->policies[i].max_age_ms;
    }
    def->pattern = "*";
    def->max_messages = h->max_messages;
    def->max_age_ms = h->max_age_ms;
}

mp_store *mp_reload_open_store(void)
{
    const mp_history_config *h = &mp.cfg.history;
    mp_store_policy policies[h->npolicies > 0 ? h->npolicies : 1];
    mp_store_config sc;
    mp_store_config_defaults(&sc);
    mp_reload_store_policies(policies, &sc.default_policy);
    sc.policies = policies;
    sc.npolicies = (size_t)h->npolicies;
    sc.max_channels = h->max_channels;
    sc.max_bytes = h->max_bytes;
    sc.channel_idle_ms = h->channel_idle_ms;
    sc.max_cursors = h->max_cursors;
    sc.cursor_ttl_ms = h->cursor_ttl_ms;
    return mp_store_mem_new(&sc);
}

/* Connections keep their route across a reload when its path survives. */
static void remap_routes(char **old_paths, int nold)
{
    int map[nold > 0 ? nold : 1];
    for (int i = 0; i < nold; i++) {
        map[i] = -1;
        for (int k = 0; k < mp.cfg.nroutes; k++)
            if (strcmp(old_paths[i], mp.cfg.routes[k].path) == 0)
                map[i] = k;
    }
    mp_ws_remap_routes(map);
    mp_sse_stream.remap_routes(map);
}

/* The whole config again, or nothing. Listeners and connections stay. */
int mp_server_reload(char *summary, size_t summary_len, char *err, size_t errlen)
{
    int nold = mp.cfg.nroutes;
    char *old_paths[nold > 0 ? nold : 1];
    for (int i = 0; i < nold; i++)
        old_paths[i] = strdup(mp.cfg.routes[i].path);
    int rc = mp_tls_reload_prepare(err, errlen);
    if (rc < 0)
        mp.stats.reload_failures++;
    else if ((rc = mp_lua_reload_config(&mp.cfg, summary, summary_len, err, errlen)) < 0)
        mp_tls_reload_abort();
    if (rc < 0) {
        mp_error("config reload refused, the running config stays", "error=\"%s\"", mp_log_q(err));
    } else {
        mp_tls_reload_commit();
        remap_routes(old_paths, nold);
        const mp_history_config *h = &mp.cfg.history;
        mp_store_policy policies[h->npolicies > 0 ? h->npolicies : 1], def;
        mp_reload_store_policies(policies, &def);
        if (mp_store_set_policies(mp.store, policies, (size_t)h->npolicies, &def) != 0)
            mp_warn("history policies not applied", NULL);
        mp_net_apply_timeouts();
        mp_lua_watch_plugins(mp.loop);
        mp_info("config reloaded", "changes=\"%s\"", mp_log_q(summary));
    }
    for (int i = 0; i < nold; i++)
        free(old_paths[i]);
    return rc;
}

