/* store.c — what every store backend shares (see store.h): the status
 * texts, the policy table, publish's checks and where a reader's since
 * stands, so the memory and Redis stores answer alike. */
#include "store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"

const mp_store_policy *mp_store_policy_match(const mp_store_policy *p, size_t n,
                                             const mp_store_policy *def, const char *channel)
{
    for (size_t i = 0; i < n; i++) {
        const char *pat = p[i].pattern;
        size_t len = strlen(pat);
        if (len && pat[len - 1] == '*') {
            if (strncmp(channel, pat, len - 1) == 0)
                return &p[i];
        } else if (strcmp(channel, pat) == 0) {
            return &p[i];
        }
    }
    return def;
}

static int policy_valid(const mp_store_policy *p, int needs_pattern)
{
    if (p->max_messages > MP_STORE_MESSAGES_LIMIT)
        return 0;
    if (!needs_pattern)
        return 1;
    if (!p->pattern || !*p->pattern)
        return 0;
    const char *star = strchr(p->pattern, '*');
    return !star || star[1] == '\0';
}

static void free_table(mp_store_policy *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)p[i].pattern);
    free(p);
}

int mp_store_policies_set(mp_store_policies *t, const mp_store_policy *p, size_t n, const mp_store_policy *def)
{
    for (size_t i = 0; i < n; i++)
        if (!policy_valid(&p[i], 1))
            return MP_STORE_EINVAL;
    if (def && !policy_valid(def, 0))
        return MP_STORE_EINVAL;
    mp_store_policy *copy = n ? calloc(n, sizeof *copy) : NULL;
    if (n && !copy)
        return MP_STORE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        copy[i] = p[i];
        if (!(copy[i].pattern = strdup(p[i].pattern))) {
            free_table(copy, i);
            return MP_STORE_ENOMEM;
        }
    }
    free_table(t->p, t->n);
    t->p = copy;
    t->n = n;
    if (def) {
        t->def = *def;
        t->def.pattern = NULL;
    }
    return MP_STORE_OK;
}

void mp_store_policies_free(mp_store_policies *t)
{
    free_table(t->p, t->n);
    t->p = NULL;
    t->n = 0;
}

static int kinds_valid(const char *kinds)
{
    if (!kinds)
        return 1;
    size_t n = strnlen(kinds, MP_STORE_KINDS_MAX);
    if (n >= MP_STORE_KINDS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)kinds[i] <= ' ')
            return 0;
    return 1;
}

int mp_store_msg_valid(const char *channel, const mp_store_msg *m)
{
    return channel && mp_envelope_safe(channel, strnlen(channel, MP_STORE_NAME_MAX + 1)) && m && m->id &&
           strnlen(m->id, MP_STORE_ID_MAX) < MP_STORE_ID_MAX && mp_envelope_safe(m->id, strlen(m->id)) &&
           m->data && m->data_len > 0 && kinds_valid(m->kinds);
}

uint64_t mp_store_clock_ms(uint64_t (*clock_ms)(void *), void *clock_ud)
{
    if (clock_ms)
        return clock_ms(clock_ud);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int mp_store_since_state(const mp_store_history *h, const char *reader_epoch, uint64_t since,
                         uint64_t *since_eff)
{
    *since_eff = since;
    if (reader_epoch && *reader_epoch && strcmp(reader_epoch, h->epoch) != 0) {
        *since_eff = 0;
        return MP_STORE_SINCE_EPOCH;
    }
    if (since > h->last_seq)
        return MP_STORE_SINCE_AHEAD;
    if (since + 1 < h->first_seq)
        return MP_STORE_SINCE_GAP;
    return MP_STORE_SINCE_OK;
}

const char *mp_store_strerror(int status)
{
    switch (status) {
    case MP_STORE_OK: return "ok";
    case MP_STORE_STALE: return "cursor already at or past that seq";
    case MP_STORE_ENOENT: return "no such channel or cursor";
    case MP_STORE_EINVAL: return "invalid name, id or seq";
    case MP_STORE_ESEQ: return "seq not handed out, or not after the last stored";
    case MP_STORE_ERANGE: return "seq beyond the last published";
    case MP_STORE_EEPOCH: return "epoch is not the channel's";
    case MP_STORE_ENOMEM: return "out of memory";
    case MP_STORE_EUNAVAIL: return "store unavailable";
    case MP_STORE_ECHANNELS: return "history.max_channels channels retain messages";
    case MP_STORE_EFULL: return "history.max_bytes reached";
    case MP_STORE_ECANCELED: return "watch cancelled";
    case MP_STORE_ENOTSUP: return "not supported by this store";
    default: return "unknown store error";
    }
}
