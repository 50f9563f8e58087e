/* identity.c — channel names checked against an identity's patterns (see
 * identity.h): plain patterns for publishers and readers, and for devices
 * the rule that keeps other users' personal channels out of reach of "*".
 */
#include "identity.h"

#include <string.h>

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
