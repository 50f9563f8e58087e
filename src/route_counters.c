/* route_counters.c — see route_counters.h: a small table searched by path
 * (routes are few), the last slot shared by every path past the bound. */
#include "route_counters.h"

#include <stdio.h>
#include <string.h>

static struct {
    char path[64];
    mp_route_counters c;
} routes[MP_ROUTE_COUNTERS_MAX + 1];
static int nroutes;

mp_route_counters *mp_route_counters_of(const char *path)
{
    for (int i = 0; i < nroutes; i++)
        if (strcmp(routes[i].path, path) == 0)
            return &routes[i].c;
    if (nroutes < MP_ROUTE_COUNTERS_MAX) {
        snprintf(routes[nroutes].path, sizeof routes[nroutes].path, "%s", path);
        return &routes[nroutes++].c;
    }
    snprintf(routes[MP_ROUTE_COUNTERS_MAX].path, sizeof routes[0].path, "other");
    return &routes[MP_ROUTE_COUNTERS_MAX].c;
}

void mp_route_counters_denied(const char *route_path, int status)
{
    mp_route_counters *c = mp_route_counters_of(route_path);
    if (status == 429)
        c->ratelimit_denials++;
    else if (status == 401 || status == 403)
        c->auth_denials++;
}

int mp_route_counters_count(void)
{
    return nroutes + (routes[MP_ROUTE_COUNTERS_MAX].path[0] ? 1 : 0);
}

const mp_route_counters *mp_route_counters_at(int i, const char **path)
{
    int slot = i < nroutes ? i : MP_ROUTE_COUNTERS_MAX;
    *path = routes[slot].path;
    return &routes[slot].c;
}
