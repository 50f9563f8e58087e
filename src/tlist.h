/* tlist.h — many timeouts of one length, O(1) per activity.
 *
 * libev's "Be smart about timeouts", strategy 4: when every member of a set
 * shares the same timeout, keep them in a list ordered by when they were last
 * touched and arm one ev_timer for the oldest. Touching a member moves it to
 * the tail (O(1)); the timer callback pops every expired member from the head
 * and re-arms for the new head. No timer per connection, no heap.
 *
 * moonpush keeps a few such lists (request timeout for HTTP connections, idle
 * and awaiting-pong for WebSocket connections, lingering closes). A node is on
 * at most one list at a time.
 */
#ifndef MP_TLIST_H
#define MP_TLIST_H

#include <ev.h>

typedef struct mp_tnode {
    struct mp_tnode *prev, *next;
    struct mp_tlist *list;     /* NULL while on no list */
    ev_tstamp since;           /* when it was put at the tail */
} mp_tnode;

typedef struct mp_tlist mp_tlist;

/* Called once per expired node, already unlinked from the list. The callback
 * may put the node on another list or free its owner. */
typedef void (*mp_tlist_expired_cb)(mp_tlist *l, mp_tnode *n);

struct mp_tlist {
    mp_tnode *head, *tail;
    ev_tstamp timeout;         /* seconds from `since` until a node expires */
    ev_timer timer;
    struct ev_loop *loop;
    mp_tlist_expired_cb expired;
    unsigned count;
};

void mp_tlist_init(mp_tlist *l, struct ev_loop *loop, ev_tstamp timeout, mp_tlist_expired_cb cb);

/* Puts n at the tail with since = now, first removing it from any list. */
void mp_tlist_touch(mp_tlist *l, mp_tnode *n);

/* Removes n from whatever list holds it; a no-op if none. */
void mp_tlist_remove(mp_tnode *n);

/* Changes the timeout (config reload); takes effect at the next expiry check. */
void mp_tlist_set_timeout(mp_tlist *l, ev_tstamp timeout);

void mp_tlist_stop(mp_tlist *l);

#endif
