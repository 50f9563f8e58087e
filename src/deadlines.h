/* deadlines.h — many timeouts of different lengths, one ev_timer.
 *
 * tlist.h serves sets whose members share one timeout. Token expiry does
 * not: every connection's identity may expire at its own wall-clock time.
 * libev's "Be smart about timeouts" again, with a binary min-heap keyed by
 * that time instead of a list: add, move and remove are O(log n), the one
 * ev_timer is armed for the earliest deadline, and its callback pops every
 * deadline that has passed. No timer per connection.
 *
 * Times are wall-clock unix seconds (what a JWT's exp is), compared with
 * ev_time() when the timer fires: a clock step is noticed at the next
 * firing, which checks again before expiring anything.
 */
#ifndef MP_DEADLINES_H
#define MP_DEADLINES_H

#include <ev.h>

typedef struct mp_deadline {
    double at;            /* unix seconds */
    unsigned slot;        /* 1 + index in the heap; 0 while on none */
} mp_deadline;

/* Called once per passed deadline, already off the heap. The callback may
 * set it again or free its owner. */
typedef void (*mp_deadline_cb)(mp_deadline *d);

/* Starts (or restarts) the set; the heap grows as needed. */
void mp_deadlines_init(struct ev_loop *loop, mp_deadline_cb cb);

/* Puts d on the heap at `at`, or moves it there if it is on already.
 * Returns 0, or -1 if out of memory (d is then on no heap). */
int mp_deadlines_set(mp_deadline *d, double at);

/* Takes d off the heap; a no-op if it is on none. */
void mp_deadlines_remove(mp_deadline *d);

/* How many deadlines are pending. */
unsigned mp_deadlines_count(void);

/* Stops the timer and frees the heap; deadlines still on it are taken off
 * (removing them later is a no-op). */
void mp_deadlines_stop(void);

#endif
