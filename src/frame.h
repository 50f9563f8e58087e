/* frame.h — refcounted, immutable byte frames.
 *
 * A frame is the unit every outbound queue holds: a complete WebSocket frame
 * (header + payload) or a complete HTTP response. A published message is
 * encoded into one frame once; each recipient's queue takes a reference
 * (mp_frame_ref), so a fanout to N connections costs N pointer pushes and no
 * copy. The last mp_frame_unref frees it.
 *
 * Ownership: mp_frame_new* returns a frame with one reference, owned by the
 * caller. The caller hands references to queues and drops its own with
 * mp_frame_unref when done.
 */
#ifndef MP_FRAME_H
#define MP_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef struct mp_frame {
    uint32_t refs;
    uint32_t off;        /* the frame's bytes are data[off .. len) */
    uint32_t len;
    uint32_t cap;        /* bytes allocated for data */
    double published;    /* message frames: when published (wall clock s, clock.h); 0 otherwise */
    struct mp_frame *deflated;  /* its permessage-deflate form, made on first need (deflate.h); owned */
    uint8_t data[];
} mp_frame;

/* Largest WebSocket header a server frame needs: 2 + 8 (no mask). */
#define MP_WS_HEADER_MAX 10

enum { MP_WS_TEXT = 0x1, MP_WS_BINARY = 0x2, MP_WS_CLOSE = 0x8, MP_WS_PING = 0x9, MP_WS_PONG = 0xA };

/* A frame with room for cap bytes, len 0, one reference. NULL if out of memory. */
mp_frame *mp_frame_new(size_t cap);

/* A frame holding a copy of len bytes. */
mp_frame *mp_frame_copy(const void *data, size_t len);

static inline mp_frame *mp_frame_ref(mp_frame *f) { f->refs++; return f; }
void mp_frame_unref(mp_frame *f);

/* Writes an unmasked WebSocket header (FIN set) for a payload of len bytes
 * into out, which has room for MP_WS_HEADER_MAX bytes; returns its size. */
size_t mp_frame_ws_header(uint8_t *out, int opcode, uint64_t len);

/* A WebSocket frame: header + copy of payload. */
mp_frame *mp_frame_ws(int opcode, const void *payload, size_t len);

/* A close frame with a code and a short reason (truncated to 123 bytes). */
mp_frame *mp_frame_ws_close(uint16_t code, const char *reason);

static inline size_t mp_frame_size(const mp_frame *f) { return f->len - f->off; }
static inline const uint8_t *mp_frame_bytes(const mp_frame *f) { return f->data + f->off; }

/* The payload of a finished server (unmasked) WebSocket frame: past its 2,
 * 4 or 10 byte header. */
static inline const uint8_t *mp_frame_ws_payload(const mp_frame *f, size_t *len)
{
    const uint8_t *b = mp_frame_bytes(f);
    size_t h = (b[1] & 0x7f) < 126 ? 2 : (b[1] & 0x7f) == 126 ? 4 : 10;
    *len = mp_frame_size(f) - h;
    return b + h;
}

/* Turns a frame whose payload was written at data + MP_WS_HEADER_MAX into a
 * finished WebSocket frame: the header goes right before the payload (off
 * moves back to where it starts), so the payload is never copied. */
void mp_frame_ws_seal(mp_frame *f, int opcode, size_t payload_len);

#endif
