/* Unit tests for the deadline heap (src/deadlines.c): expiry in time order,
 * moving and removing deadlines anywhere in the heap, growth, on a real
 * libev loop. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "deadlines.h"
#include "server.h"

mp_server mp;   /* the core objects linked in refer to it */

typedef struct item {
    mp_deadline d;              /* first: a deadline pointer is an item pointer */
    int id;
} item;

static int order[512], fired;
static double last_at;
static int out_of_order;

static void on_expired(mp_deadline *d)
{
    item *it = (item *)(void *)d;
    if (fired < 512)
        order[fired] = it->id;
    if (d->at < last_at)
        out_of_order++;
    last_at = d->at;
    fired++;
}

static void reset(void)
{
    fired = 0;
    last_at = 0;
    out_of_order = 0;
}

static void test_order_move_remove(void)
{
    struct ev_loop *loop = ev_default_loop(0);
    reset();
    double now = ev_time();
    item it[5] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}, {.id = 4}};
    /* 3 fires first, then 1, 2; 0 moves behind 2; 4 is removed. */
    CHECK(mp_deadlines_set(&it[0].d, now + 0.02) == 0);
    CHECK(mp_deadlines_set(&it[1].d, now + 0.04) == 0);
    CHECK(mp_deadlines_set(&it[2].d, now + 0.06) == 0);
    CHECK(mp_deadlines_set(&it[3].d, now + 0.01) == 0);
    CHECK(mp_deadlines_set(&it[4].d, now + 0.03) == 0);
    CHECK(mp_deadlines_set(&it[0].d, now + 0.08) == 0);
    mp_deadlines_remove(&it[4].d);
    mp_deadlines_remove(&it[4].d);   /* twice: a no-op */
    CHECK(mp_deadlines_count() == 4);
    while (fired < 4)
        ev_run(loop, EVRUN_ONCE);
    CHECK(order[0] == 3 && order[1] == 1 && order[2] == 2 && order[3] == 0);
    CHECK(ev_time() >= now + 0.08);
    CHECK(mp_deadlines_count() == 0);
    CHECK(it[0].d.slot == 0 && it[4].d.slot == 0);
}

static void test_growth_and_middle_removal(void)
{
    struct ev_loop *loop = ev_default_loop(0);
    reset();
    enum { N = 300 };
    item *many = calloc(N, sizeof *many);
    double now = ev_time();
    for (int i = 0; i < N; i++) {
        many[i].id = i;
        CHECK(mp_deadlines_set(&many[i].d, now + 1000 + (i * 7919 % N)) == 0);
    }
    for (int i = 0; i < N; i += 3)
        mp_deadlines_remove(&many[i].d);
    int left = 0;
    for (int i = 0; i < N; i++)
        left += many[i].d.slot != 0;
    CHECK(left == N - (N + 2) / 3);
    CHECK(mp_deadlines_count() == (unsigned)left);
    /* Pull every one into the past (moving up the heap) and let them fire. */
    for (int i = 0; i < N; i++)
        if (many[i].d.slot)
            CHECK(mp_deadlines_set(&many[i].d, many[i].d.at - 2000) == 0);
    while (fired < left)
        ev_run(loop, EVRUN_ONCE);
    CHECK(out_of_order == 0);
    CHECK(mp_deadlines_count() == 0);
    free(many);
}

int main(void)
{
    mp_deadlines_init(ev_default_loop(0), on_expired);
    RUN(test_order_move_remove);
    RUN(test_growth_and_middle_removal);
    mp_deadlines_stop();
    return check_report("test_deadlines");
}
