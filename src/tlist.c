/* tlist.c — see tlist.h. */
#include "tlist.h"

#include <stddef.h>

static void arm(mp_tlist *l)
{
    if (!l->head) {
        ev_timer_stop(l->loop, &l->timer);
        return;
    }
    ev_tstamp at = l->head->since + l->timeout - ev_now(l->loop);
    ev_timer_stop(l->loop, &l->timer);
    ev_timer_set(&l->timer, at > 0 ? at : 0, 0.);
    ev_timer_start(l->loop, &l->timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    mp_tlist *l = w->data;
    ev_tstamp now = ev_now(loop);
    /* Expire only what was there when we started, so a callback that touches
     * a node back onto this list cannot keep us looping. */
    unsigned budget = l->count;
    while (l->head && budget-- > 0 && l->head->since + l->timeout <= now) {
        mp_tnode *n = l->head;
        mp_tlist_remove(n);
        l->expired(l, n);
    }
    arm(l);
}

void mp_tlist_init(mp_tlist *l, struct ev_loop *loop, ev_tstamp timeout, mp_tlist_expired_cb cb)
{
    l->head = l->tail = NULL;
    l->timeout = timeout;
    l->loop = loop;
    l->expired = cb;
    l->count = 0;
    ev_init(&l->timer, on_timer);
    l->timer.data = l;
}

void mp_tlist_remove(mp_tnode *n)
{
    mp_tlist *l = n->list;
    if (!l)
        return;
    if (n->prev) n->prev->next = n->next; else l->head = n->next;
    if (n->next) n->next->prev = n->prev; else l->tail = n->prev;
    n->prev = n->next = NULL;
    n->list = NULL;
    l->count--;
    /* The timer stays armed for the old head; an early wake-up finds nothing
     * expired and re-arms. Cheaper than re-arming on every removal. */
}

void mp_tlist_touch(mp_tlist *l, mp_tnode *n)
{
    mp_tlist_remove(n);
    n->since = ev_now(l->loop);
    n->list = l;
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail) l->tail->next = n; else l->head = n;
    l->tail = n;
    l->count++;
    if (!ev_is_active(&l->timer))
        arm(l);
}

void mp_tlist_set_timeout(mp_tlist *l, ev_tstamp timeout)
{
    l->timeout = timeout;
    arm(l);
}

void mp_tlist_stop(mp_tlist *l)
{
    ev_timer_stop(l->loop, &l->timer);
}
