/* admin_guard.c — see admin_guard.h. A small fixed table searched linearly:
 * admin logins are rare, and the listener is loopback only. */
#include "admin_guard.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct guard_slot {
    char addr[64];        /* "" = free */
    int failures;
    double last_failure;
    double blocked_until;
} guard_slot;

static guard_slot slots[MP_GUARD_SLOTS];

static guard_slot *find(const char *addr, double now)
{
    for (int i = 0; i < MP_GUARD_SLOTS; i++) {
        guard_slot *s = &slots[i];
        if (s->addr[0] && now - s->last_failure > MP_GUARD_FORGET && now >= s->blocked_until)
            s->addr[0] = '\0';   /* long quiet: forgiven */
        else if (s->addr[0] && strcmp(s->addr, addr) == 0)
            return s;
    }
    return NULL;
}

/* A free slot, or the one whose last failure is oldest. */
static guard_slot *make_room(void)
{
    guard_slot *oldest = &slots[0];
    for (int i = 0; i < MP_GUARD_SLOTS; i++) {
        if (!slots[i].addr[0])
            return &slots[i];
        if (slots[i].last_failure < oldest->last_failure)
            oldest = &slots[i];
    }
    return oldest;
}

int mp_guard_wait(const char *addr, double now)
{
    guard_slot *s = find(addr, now);
    if (!s || now >= s->blocked_until)
        return 0;
    return (int)ceil(s->blocked_until - now);
}

int mp_guard_failed(const char *addr, double now)
{
    guard_slot *s = find(addr, now);
    if (!s) {
        s = make_room();
        memset(s, 0, sizeof *s);
        snprintf(s->addr, sizeof s->addr, "%s", addr);
    }
    s->failures++;
    s->last_failure = now;
    if (s->failures >= MP_GUARD_FREE) {
        int over = s->failures - MP_GUARD_FREE;
        double delay = over >= 16 ? MP_GUARD_MAX_DELAY : ldexp(1.0, over);
        s->blocked_until = now + (delay < MP_GUARD_MAX_DELAY ? delay : MP_GUARD_MAX_DELAY);
    }
    return s->failures;
}

void mp_guard_succeeded(const char *addr)
{
    for (int i = 0; i < MP_GUARD_SLOTS; i++)
        if (slots[i].addr[0] && strcmp(slots[i].addr, addr) == 0)
            slots[i].addr[0] = '\0';
}
