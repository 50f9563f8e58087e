/* Unit tests for the index of connections by (user, device): lookups by
 * route and exact strings, growth, and backward-shift deletion keeping every
 * other entry reachable. Entries are fake connections: the view reads the
 * identity next to the mp_conn instead of a WebSocket session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "devices.h"
#include "server.h"

mp_server mp;

typedef struct fake {
    mp_conn conn;               /* first: a conn pointer is a fake pointer */
    char user[32], device[32];
    int route;
    int indexed;
} fake;

static void fake_view(const mp_conn *c, mp_device_view *v)
{
    const fake *f = (const fake *)(const void *)c;
    v->user = f->user;
    v->device = f->device;
    v->route_index = f->route;
    v->tag = mp_devices_tag(mp_devices_hash(f->user, f->device));
}

static void set_fake(fake *f, const char *user, const char *device, int route)
{
    memset(f, 0, sizeof *f);
    snprintf(f->user, sizeof f->user, "%s", user);
    snprintf(f->device, sizeof f->device, "%s", device);
    f->route = route;
}

static int add(mp_devices *d, fake *f)
{
    if (mp_devices_reserve(d) < 0)
        return -1;
    mp_devices_add(d, &f->conn);
    f->indexed = 1;
    return 0;
}

static mp_conn *find(const mp_devices *d, const char *user, const char *device, int route)
{
    return mp_devices_find(d, user, device, route);
}

static void test_empty_table(void)
{
    mp_devices d;
    fake f;
    mp_devices_init(&d, fake_view);
    set_fake(&f, "u", "d", 0);
    CHECK(find(&d, "u", "d", 0) == NULL);
    CHECK(mp_devices_remove(&d, &f.conn) == 0);
    mp_devices_free(&d);
    CHECK(d.slots == NULL && d.count == 0);
}

static void test_finds_by_route_and_exact_strings(void)
{
    mp_devices d;
    fake a, b, c;
    mp_devices_init(&d, fake_view);
    set_fake(&a, "alice", "phone", 0);
    set_fake(&b, "alice", "phone", 1);   /* same user+device, another route */
    set_fake(&c, "alice", "phone2", 0);
    CHECK(add(&d, &a) == 0 && add(&d, &b) == 0 && add(&d, &c) == 0);
    CHECK(find(&d, "alice", "phone", 0) == &a.conn);
    CHECK(find(&d, "alice", "phone", 1) == &b.conn);
    CHECK(find(&d, "alice", "phone", 2) == NULL);
    CHECK(find(&d, "alice", "phone", -1) == NULL);   /* a route gone in a reload */
    CHECK(find(&d, "alice", "phon", 0) == NULL);
    CHECK(find(&d, "alice", "Phone", 0) == NULL);
    CHECK(find(&d, "alic", "phone", 0) == NULL);
    CHECK(find(&d, "alice", "phone2", 0) == &c.conn);
    CHECK(mp_devices_remove(&d, &b.conn) == 1);
    CHECK(mp_devices_remove(&d, &b.conn) == 0);
    CHECK(find(&d, "alice", "phone", 1) == NULL);
    CHECK(find(&d, "alice", "phone", 0) == &a.conn);
    CHECK(d.count == 2);
    mp_devices_free(&d);
}

/* The separator between user and device is part of the hash, and the
 * lookup compares both strings: ("ab","c") is not ("a","bc"). */
static void test_user_device_boundary(void)
{
    mp_devices d;
    fake a, b;
    mp_devices_init(&d, fake_view);
    set_fake(&a, "ab", "c", 0);
    set_fake(&b, "a", "bc", 0);
    CHECK(mp_devices_hash("ab", "c") != mp_devices_hash("a", "bc"));
    CHECK(add(&d, &a) == 0 && add(&d, &b) == 0);
    CHECK(find(&d, "ab", "c", 0) == &a.conn);
    CHECK(find(&d, "a", "bc", 0) == &b.conn);
    CHECK(find(&d, "abc", "", 0) == NULL);
    mp_devices_free(&d);
}

/* Several connections of one (user, device) on one route (a route that
 * allows duplicates): find returns each until all are removed. */
static void test_same_key_several_entries(void)
{
    mp_devices d;
    fake f[5];
    mp_devices_init(&d, fake_view);
    for (int i = 0; i < 5; i++) {
        set_fake(&f[i], "mul", "same", 3);
        CHECK(add(&d, &f[i]) == 0);
    }
    int found = 0;
    mp_conn *c;
    while ((c = find(&d, "mul", "same", 3)) && found < 10) {
        CHECK(mp_devices_remove(&d, c) == 1);
        found++;
    }
    CHECK(found == 5);
    CHECK(d.count == 0);
    mp_devices_free(&d);
}

/* One user with many devices: every device found, the load bounded, and
 * the slots per entry within the memory budget (16 bytes an entry). */
static void test_many_devices_of_one_user(void)
{
    enum { N = 20000 };
    mp_devices d;
    fake *f = calloc(N, sizeof *f);
    CHECK(f != NULL);
    if (!f)
        return;
    mp_devices_init(&d, fake_view);
    char dev[32];
    for (int i = 0; i < N; i++) {
        snprintf(dev, sizeof dev, "d%d", i);
        set_fake(&f[i], "bench", dev, 0);
        CHECK(add(&d, &f[i]) == 0);
        CHECK(d.count * 4 <= d.cap * 3);
    }
    CHECK(d.count == N);
    CHECK(d.cap * sizeof(mp_conn *) <= (size_t)N * 16);
    int missing = 0;
    for (int i = 0; i < N; i++) {
        snprintf(dev, sizeof dev, "d%d", i);
        missing += find(&d, "bench", dev, 0) != &f[i].conn;
    }
    CHECK(missing == 0);
    CHECK(find(&d, "bench", "d20000", 0) == NULL);
    mp_devices_free(&d);
    free(f);
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static int all_reachable(const mp_devices *d, fake *f, int n)
{
    size_t indexed = 0;
    for (int i = 0; i < n; i++) {
        mp_conn *c = find(d, f[i].user, f[i].device, f[i].route);
        if (f[i].indexed && c != &f[i].conn)
            return 0;
        if (!f[i].indexed && c != NULL)
            return 0;
        indexed += (size_t)f[i].indexed;
    }
    return indexed == d->count;
}

/* Random adds and removes near the maximum load of the smallest table, so
 * probe runs are long and wrap around the end: after every step each entry
 * is found and each removed one is not. */
static void test_random_removes_keep_runs_reachable(void)
{
    enum { N = 47 };   /* 64 slots: 48 fit below load 3/4 */
    mp_devices d;
    fake f[N];
    char dev[32];
    mp_devices_init(&d, fake_view);
    for (int i = 0; i < N; i++) {
        snprintf(dev, sizeof dev, "pos-%d", i);
        set_fake(&f[i], i % 3 ? "merchant" : "other", dev, i % 2);
    }
    int broken = 0;
    for (int step = 0; step < 20000 && !broken; step++) {
        fake *x = &f[rng() % N];
        if (x->indexed) {
            CHECK(mp_devices_remove(&d, &x->conn) == 1);
            x->indexed = 0;
        } else {
            CHECK(add(&d, x) == 0);
        }
        broken = !all_reachable(&d, f, N);
    }
    CHECK(!broken);
    CHECK(d.cap == 64);
    mp_devices_free(&d);
}

/* A reload changes a connection's route index in place: the hash does not
 * depend on it, so the entry is found under its new route. */
static void test_route_change_in_place(void)
{
    mp_devices d;
    fake a;
    mp_devices_init(&d, fake_view);
    set_fake(&a, "u", "d", 2);
    CHECK(add(&d, &a) == 0);
    a.route = 0;
    CHECK(find(&d, "u", "d", 2) == NULL);
    CHECK(find(&d, "u", "d", 0) == &a.conn);
    CHECK(mp_devices_remove(&d, &a.conn) == 1);
    mp_devices_free(&d);
}

int main(void)
{
    RUN(test_empty_table);
    RUN(test_finds_by_route_and_exact_strings);
    RUN(test_user_device_boundary);
    RUN(test_same_key_several_entries);
    RUN(test_many_devices_of_one_user);
    RUN(test_random_removes_keep_runs_reachable);
    RUN(test_route_change_in_place);
    return check_report("test_devices");
}
