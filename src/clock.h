/* clock.h — real clocks for durations.
 *
 * libev's ev_now() is the time the loop iteration started: everything done
 * within one iteration (read a request, run its hooks, answer it; publish
 * and write the frame) measures 0 against it. Durations worth reporting take
 * one real clock read at each end instead:
 *   - mp_clock_mono: a local duration (request start to answer), immune to
 *     wall-clock steps;
 *   - mp_clock_wall: a timestamp that must compare across processes (a
 *     message's publish time travels through the store, as published_ms,
 *     and is compared on the node that writes or gets the ack).
 * Each is one clock_gettime (vDSO, no syscall on Linux).
 */
#ifndef MP_CLOCK_H
#define MP_CLOCK_H

#include <time.h>

static inline double mp_clock_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double mp_clock_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
