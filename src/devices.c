/* devices.c — see devices.h. */
#include "devices.h"

#include <stdlib.h>
#include <string.h>

#define MIN_SLOTS 64
/* Linear probing stays short below 3/4 (about 2.5 probes to find an entry,
 * 8.5 to miss, at the very worst); growing by half then leaves it at 1/2. */
#define MAX_LOAD_NUM 3
#define MAX_LOAD_DEN 4

static uint32_t fnv1a(uint32_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

/* murmur3's finalizer: FNV-1a's high bits mix poorly, and a slot is picked
 * from the high bits (see home_slot). */
static uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

uint32_t mp_devices_hash(const char *user, const char *device)
{
    uint32_t h = fnv1a(2166136261u, user);
    h = (h ^ 0xffu) * 16777619u;   /* a byte no name holds: ("ab","c") != ("a","bc") */
    return mix32(fnv1a(h, device));
}

/* The low bits: independent of the high bits that pick the slot, so two
 * entries sharing a probe run rarely share a tag too. */
uint16_t mp_devices_tag(uint32_t hash)
{
    return (uint16_t)hash;
}

/* Maps the hash onto [0, cap) without a power-of-two size (multiply-shift),
 * so the table can grow by half rather than double. */
static size_t home_slot(uint32_t hash, size_t cap)
{
    return (size_t)(((uint64_t)hash * cap) >> 32);
}

static size_t next_slot(size_t i, size_t cap)
{
    return i + 1 == cap ? 0 : i + 1;
}

static uint32_t hash_of(const mp_devices *d, const mp_conn *c)
{
    mp_device_view v;
    d->view(c, &v);
    return mp_devices_hash(v.user, v.device);
}

void mp_devices_init(mp_devices *d, mp_device_view_fn view)
{
    d->slots = NULL;
    d->cap = 0;
    d->count = 0;
    d->view = view;
}

/* Puts c in the first free slot of its probe run; there is one (load < 1). */
static void place(mp_conn **slots, size_t cap, mp_conn *c, uint32_t hash)
{
    size_t i = home_slot(hash, cap);
    while (slots[i])
        i = next_slot(i, cap);
    slots[i] = c;
}

static int grow(mp_devices *d)
{
    size_t cap = d->cap ? d->cap + d->cap / 2 : MIN_SLOTS;
    if (cap > UINT32_MAX || cap > SIZE_MAX / sizeof *d->slots)
        return -1;   /* home_slot maps onto at most 2^32 slots */
    mp_conn **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < d->cap; i++)
        if (d->slots[i])
            place(slots, cap, d->slots[i], hash_of(d, d->slots[i]));
    free(d->slots);
    d->slots = slots;
    d->cap = cap;
    return 0;
}

int mp_devices_reserve(mp_devices *d)
{
    if ((d->count + 1) * MAX_LOAD_DEN <= d->cap * MAX_LOAD_NUM)
        return 0;
    return grow(d);
}

void mp_devices_add(mp_devices *d, mp_conn *c)
{
    place(d->slots, d->cap, c, hash_of(d, c));
    d->count++;
}

/* Empties slot i, then pulls back each later entry of the run that may sit
 * at the hole (its home is not after the hole), so every entry stays
 * reachable from its home without tombstones. */
static void delete_at(mp_devices *d, size_t hole)
{
    size_t j = hole;
    d->slots[hole] = NULL;
    for (;;) {
        j = next_slot(j, d->cap);
        mp_conn *c = d->slots[j];
        if (!c)
            return;
        size_t home = home_slot(hash_of(d, c), d->cap);
        size_t from_home = (j + d->cap - home) % d->cap;
        size_t from_hole = (j + d->cap - hole) % d->cap;
        if (from_home >= from_hole) {
            d->slots[hole] = c;
            d->slots[j] = NULL;
            hole = j;
        }
    }
}

int mp_devices_remove(mp_devices *d, mp_conn *c)
{
    if (!d->count)
        return 0;
    for (size_t i = home_slot(hash_of(d, c), d->cap); d->slots[i]; i = next_slot(i, d->cap)) {
        if (d->slots[i] == c) {
            delete_at(d, i);
            d->count--;
            return 1;
        }
    }
    return 0;
}

static int matches(const mp_device_view *v, uint16_t tag, const char *user, const char *device, int route_index)
{
    return v->tag == tag && v->route_index == route_index && strcmp(v->device, device) == 0 &&
           strcmp(v->user, user) == 0;
}

mp_conn *mp_devices_find(const mp_devices *d, const char *user, const char *device, int route_index)
{
    if (!d->count)
        return NULL;
    uint32_t hash = mp_devices_hash(user, device);
    uint16_t tag = mp_devices_tag(hash);
    for (size_t i = home_slot(hash, d->cap); d->slots[i]; i = next_slot(i, d->cap)) {
        mp_device_view v;
        d->view(d->slots[i], &v);
        if (matches(&v, tag, user, device, route_index))
            return d->slots[i];
    }
    return NULL;
}

void mp_devices_free(mp_devices *d)
{
    free(d->slots);
    mp_devices_init(d, d->view);
}
