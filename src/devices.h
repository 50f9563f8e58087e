/* devices.h — the WebSocket connections of each (user, device), found in
 * O(1) expected time.
 *
 * A handshake on a route with duplicate_devices = "replace" closes the older
 * connections of the same user, device and route (4002). Walking the user's
 * personal channel made that O(devices of the user) per handshake — and a
 * reconnect storm of one account with thousands of devices (POS terminals
 * under one merchant, the bench's idle rows) O(n²).
 *
 * Owns: the slot array of an open-addressing table (linear probing,
 * backward-shift deletion, no tombstones) of borrowed mp_conn pointers,
 * keyed by a hash of (user, device). It never owns a connection: the caller
 * adds a connection once it is a WebSocket and removes it before its session
 * is freed. Every WebSocket connection is in it, whatever its route's
 * policy, so a reload that switches a route from "allow" to "replace" finds
 * the connections opened before; entries of one (user, device) on different
 * routes share a probe run, and a lookup checks route and exact strings.
 *
 * The table reads an entry's user, device, route and hash tag through the
 * view function it was given, so it knows nothing of the session layout.
 * The tag (16 bits of the hash) lives in the session: a probe compares it
 * before touching the strings. The full hash is recomputed from the strings
 * when an entry moves (deletion shift, growth).
 *
 * Memory: 8 bytes per slot. It grows by half at load 3/4, so it holds
 * between 4/3 and 2 slots per connection: 11-16 bytes each. The number of
 * entries is the number of WebSocket connections, bounded by
 * max_connections, so the table is too. It never shrinks (a server that
 * held n connections may hold them again).
 */
#ifndef MP_DEVICES_H
#define MP_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

/* What the table needs to know of an indexed connection. */
typedef struct mp_device_view {
    const char *user;
    const char *device;
    int route_index;
    uint16_t tag;             /* mp_devices_tag(mp_devices_hash(user, device)) */
} mp_device_view;

typedef void (*mp_device_view_fn)(const mp_conn *c, mp_device_view *out);

typedef struct mp_devices {
    mp_conn **slots;          /* NULL: empty slot */
    size_t cap;
    size_t count;
    mp_device_view_fn view;
} mp_devices;

/* The hash of a (user, device) pair, and the part of it a session keeps. */
uint32_t mp_devices_hash(const char *user, const char *device);
uint16_t mp_devices_tag(uint32_t hash);

/* An empty table (allocates nothing yet). */
void mp_devices_init(mp_devices *d, mp_device_view_fn view);

/* Makes room for one more entry, so the next mp_devices_add cannot fail.
 * Returns 0, or -1 out of memory (the table is unchanged). */
int mp_devices_reserve(mp_devices *d);

/* Adds c (not in the table yet) after a successful mp_devices_reserve;
 * c's view must not change while it is in the table except its route. */
void mp_devices_add(mp_devices *d, mp_conn *c);

/* Removes c; returns 1 if it was there, 0 if not. */
int mp_devices_remove(mp_devices *d, mp_conn *c);

/* One connection of (user, device) on route_index, or NULL. */
mp_conn *mp_devices_find(const mp_devices *d, const char *user, const char *device, int route_index);

/* Frees the slot array; the table is empty and usable again. */
void mp_devices_free(mp_devices *d);

#endif
