/* admin_guard.h — failed admin logins, counted per remote address.
 *
 * The TCP admin listener takes a token; without a limit a client could try
 * hundreds a second. Each address may fail MP_GUARD_FREE times; every
 * failure after that shuts it out for a delay that doubles (1 s, 2 s, 4 s ...
 * up to MP_GUARD_MAX_DELAY), and while it is shut out its connections are
 * answered with an error and closed before any token is looked at. A login
 * that succeeds clears the address's record; a record with no failure for
 * MP_GUARD_FORGET seconds is dropped. At most MP_GUARD_SLOTS addresses are
 * tracked (the stalest record makes room), so memory stays bounded whatever
 * connects.
 */
#ifndef MP_ADMIN_GUARD_H
#define MP_ADMIN_GUARD_H

#define MP_GUARD_FREE 5          /* failures before the first delay */
#define MP_GUARD_MAX_DELAY 300.0 /* seconds */
#define MP_GUARD_FORGET 900.0    /* seconds without a failure */
#define MP_GUARD_SLOTS 256

/* Seconds (rounded up) the address must still wait, 0 if it may try now. */
int mp_guard_wait(const char *addr, double now);

/* Records a failed login; returns the address's failures so far. */
int mp_guard_failed(const char *addr, double now);

/* A successful login: forgets the address's failures. */
void mp_guard_succeeded(const char *addr);

#endif
