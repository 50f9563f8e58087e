/* deflate.h — permessage-deflate (RFC 7692) for WebSocket routes that ask
 * for it (`permessage_deflate` in the route, docs/protocol.md).
 *
 * Only the no-context-takeover form is spoken, both ways: every message is
 * compressed on its own, so the compressed frame of a message is the same
 * bytes for every recipient and is made once and shared, exactly as the
 * plain frame is (frame.h). It is cached on the plain frame (f->deflated),
 * built the first time a connection that negotiated deflate needs it, and
 * freed with it. Client messages are inflated with one process-wide
 * inflate stream reset per message (nothing per connection), into at most
 * max_message_bytes: a small message that inflates past it is refused.
 */
#ifndef MP_DEFLATE_H
#define MP_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* Default route threshold: messages whose payload is shorter go plain. */
#define MP_DEFLATE_THRESHOLD 256
#define MP_DEFLATE_LEVEL 6

/* The Sec-WebSocket-Extensions response for a client's offer (the header's
 * value, NULL if none): the first permessage-deflate offer whose parameters
 * we can honour is accepted and resp (at least 96 bytes) holds the answer;
 * returns 1. Offers we cannot honour are declined (returns 0): the
 * handshake goes on without the extension. */
int mp_deflate_negotiate(const char *offer, char *resp, size_t resplen);

/* The compressed form of the finished, unfragmented server frame f (RSV1
 * set, same opcode), made once at `level` and cached on f; the caller does
 * not own it (it lives as long as f). NULL if it cannot be made (out of
 * memory): send f itself. */
mp_frame *mp_deflate_frame(mp_frame *f, int level);

enum { MP_INFLATE_OK = 0, MP_INFLATE_TOO_BIG = -1, MP_INFLATE_BAD = -2, MP_INFLATE_NOMEM = -3 };

/* Inflates one client message (payload of a frame with RSV1) into *out
 * (malloc'd, caller frees) of at most max bytes. Returns MP_INFLATE_*. */
int mp_inflate_message(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen);

/* Counters for /metrics. */
typedef struct mp_deflate_stats {
    uint64_t frames;          /* compressed frames made */
    uint64_t bytes_in;        /* their plain payload bytes */
    uint64_t bytes_out;       /* their compressed payload bytes */
    uint64_t inflated;        /* client messages inflated */
} mp_deflate_stats;
extern mp_deflate_stats mp_deflate_stats_now;

/* Frees the streams (exit path). */
void mp_deflate_free_all(void);

#endif
