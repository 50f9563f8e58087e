/* outq.h — a connection's outbound queue of shared frames.
 *
 * A ring of frame references plus the byte offset already written of the
 * head frame. The first MP_OUTQ_INLINE slots live inside the queue itself, so
 * a connection that receives a frame now and then never allocates; a burst
 * spills into a heap ring that doubles as needed and is released when the
 * queue drains. Pushing is O(1) amortised and never copies frame bytes.
 *
 * The queue counts its unsent bytes; the byte bound is the caller's policy
 * (net.c closes a connection whose queue passes max_outbound_bytes).
 */
#ifndef MP_OUTQ_H
#define MP_OUTQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "frame.h"

#define MP_OUTQ_INLINE 4

typedef struct mp_outq {
    mp_frame **ring;          /* inline_slots or a heap array of cap slots */
    uint32_t head;
    uint32_t count;
    uint32_t cap;
    uint32_t head_off;        /* bytes of the head frame already written */
    size_t bytes;             /* unsent bytes in the queue */
    mp_frame *inline_slots[MP_OUTQ_INLINE];
} mp_outq;

void mp_outq_init(mp_outq *q);

/* Drops every reference and any heap ring. The queue is empty and usable. */
void mp_outq_clear(mp_outq *q);

/* Takes a new reference to f and appends it. Returns -1 only if growing the
 * ring failed (out of memory); the frame is then not referenced. */
int mp_outq_push(mp_outq *q, mp_frame *f);

/* Fills up to max iovecs with the unsent bytes, head first. Returns the count. */
int mp_outq_iov(const mp_outq *q, struct iovec *iov, int max);

/* Marks n bytes as written: drops the frames fully written, keeps the offset
 * into a partly written head. Releases a heap ring once the queue is empty.
 * done (may be NULL) sees each fully written frame before it is released. */
void mp_outq_consume(mp_outq *q, size_t n, void (*done)(const mp_frame *f));

/* Drops every frame not yet started, keeping a partly written head so the
 * stream stays well-formed. Used before a close frame on a slow consumer.
 * Returns how many message frames (published > 0) it dropped. */
uint32_t mp_outq_drop_unstarted(mp_outq *q);

/* The same, but also keeps every frame with a byte among the first
 * `committed` unsent bytes: a TLS record already holds them (net.c). */
uint32_t mp_outq_drop_uncommitted(mp_outq *q, size_t committed);

static inline int mp_outq_empty(const mp_outq *q) { return q->count == 0; }

#endif
