/* envelope.h — the standard message envelope, made in one place.
 *
 * Every published message reaches clients as one WebSocket text frame whose
 * payload is
 *
 *     {"type":"message","channel":"<channel>","seq":<seq>,"id":"<id>","data":<data>}
 *
 * byte for byte the same wherever it is made: here (the memory store, the
 * hub) and in the Redis publish script (redis/publish.lua builds the same
 * bytes in Lua; tests/test_store_redis.c compares the two). Channel and id
 * come from a safe alphabet, so nothing is escaped; data is the publisher's
 * JSON text, already compact, copied as it is.
 */
#ifndef MP_ENVELOPE_H
#define MP_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* 1 if s[0..len) is 1..128 bytes of [A-Za-z0-9_.:@-]: a channel name or
 * message id that needs no escaping inside a JSON string (ids are further
 * limited to 31 bytes by the stores). */
int mp_envelope_safe(const char *s, size_t len);

/* The envelope of a message as one finished WebSocket text frame (one
 * reference, the caller's), with frame->published = published_ms / 1000
 * (ev_now's clock: wall-clock seconds). NULL if out of memory or channel or
 * id is not safe. */
mp_frame *mp_envelope_frame(const char *channel, uint64_t seq, const char *id,
                            const char *data, size_t data_len, uint64_t published_ms);

/* Checks that payload[0..len) is exactly the envelope of (channel, seq, id)
 * around some data, and points *data, *data_len at that data. Returns 0, or
 * -1 if it is not (a node running another version, a corrupt entry). */
int mp_envelope_split(const char *payload, size_t len, const char *channel, uint64_t seq,
                      const char *id, const char **data, size_t *data_len);

#endif
