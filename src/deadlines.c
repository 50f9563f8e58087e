/* deadlines.c — see deadlines.h. */
#include "deadlines.h"

#include <stdlib.h>

static mp_deadline **heap;     /* heap[0] is the earliest */
static unsigned count, capacity;
static ev_timer timer;
static struct ev_loop *loop;
static mp_deadline_cb expired;

static void place(unsigned i, mp_deadline *d)
{
    heap[i] = d;
    d->slot = i + 1;
}

static void sift_up(unsigned i)
{
    mp_deadline *d = heap[i];
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (heap[parent]->at <= d->at)
            break;
        place(i, heap[parent]);
        i = parent;
    }
    place(i, d);
}

static void sift_down(unsigned i)
{
    mp_deadline *d = heap[i];
    for (;;) {
        unsigned child = 2 * i + 1;
        if (child >= count)
            break;
        if (child + 1 < count && heap[child + 1]->at < heap[child]->at)
            child++;
        if (d->at <= heap[child]->at)
            break;
        place(i, heap[child]);
        i = child;
    }
    place(i, d);
}

static void arm(void)
{
    if (!loop)
        return;
    ev_timer_stop(loop, &timer);
    if (count == 0)
        return;
    double in = heap[0]->at - ev_time();
    ev_timer_set(&timer, in > 0 ? in : 0, 0.);
    ev_timer_start(loop, &timer);
}

static void unlink_at(unsigned i)
{
    mp_deadline *gone = heap[i];
    gone->slot = 0;
    if (--count == i)
        return;
    place(i, heap[count]);
    if (i > 0 && heap[(i - 1) / 2]->at > heap[i]->at)
        sift_up(i);
    else
        sift_down(i);
}

static void on_timer(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    double now = ev_time();
    /* Only what had passed when we started: a callback that sets its
     * deadline again into the past cannot keep us looping. */
    unsigned budget = count;
    while (count > 0 && budget-- > 0 && heap[0]->at <= now) {
        mp_deadline *d = heap[0];
        unlink_at(0);
        expired(d);
    }
    arm();
}

void mp_deadlines_init(struct ev_loop *l, mp_deadline_cb cb)
{
    loop = l;
    expired = cb;
    ev_timer_init(&timer, on_timer, 0., 0.);
}

int mp_deadlines_set(mp_deadline *d, double at)
{
    if (d->slot) {
        unsigned i = d->slot - 1;
        double before = d->at;
        d->at = at;
        if (at < before)
            sift_up(i);
        else
            sift_down(i);
    } else {
        if (count == capacity) {
            unsigned cap = capacity ? capacity * 2 : 64;
            mp_deadline **grown = realloc(heap, sizeof *heap * cap);
            if (!grown)
                return -1;
            heap = grown;
            capacity = cap;
        }
        d->at = at;
        place(count++, d);
        sift_up(count - 1);
    }
    arm();   /* the earliest may have changed either way (rare: a handshake, a refresh) */
    return 0;
}

void mp_deadlines_remove(mp_deadline *d)
{
    if (!d->slot)
        return;
    int was_first = d->slot == 1;
    unlink_at(d->slot - 1);
    if (was_first)
        arm();
}

unsigned mp_deadlines_count(void)
{
    return count;
}

void mp_deadlines_stop(void)
{
    if (loop)
        ev_timer_stop(loop, &timer);
    for (unsigned i = 0; i < count; i++)
        heap[i]->slot = 0;   /* a late remove of one of them is then a no-op */
    free(heap);
    heap = NULL;
    count = capacity = 0;
}
