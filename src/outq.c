/* outq.c — see outq.h. */
#include "outq.h"

#include <stdlib.h>
#include <string.h>

void mp_outq_init(mp_outq *q)
{
    memset(q, 0, sizeof *q);
    q->ring = q->inline_slots;
    q->cap = MP_OUTQ_INLINE;
}

static mp_frame *slot(const mp_outq *q, uint32_t i)
{
    return q->ring[(q->head + i) % q->cap];
}

static void release_heap_ring(mp_outq *q)
{
    if (q->ring != q->inline_slots) {
        free(q->ring);
        q->ring = q->inline_slots;
        q->cap = MP_OUTQ_INLINE;
    }
    q->head = 0;
}

void mp_outq_clear(mp_outq *q)
{
    for (uint32_t i = 0; i < q->count; i++)
        mp_frame_unref(slot(q, i));
    q->count = 0;
    q->bytes = 0;
    q->head_off = 0;
    release_heap_ring(q);
}

static int grow(mp_outq *q)
{
    uint32_t ncap = q->cap * 2;
    mp_frame **nring = malloc(sizeof *nring * ncap);
    if (!nring)
        return -1;
    for (uint32_t i = 0; i < q->count; i++)
        nring[i] = slot(q, i);
    if (q->ring != q->inline_slots)
        free(q->ring);
    q->ring = nring;
    q->cap = ncap;
    q->head = 0;
    return 0;
}

int mp_outq_push(mp_outq *q, mp_frame *f)
{
    if (q->count == q->cap && grow(q) < 0)
        return -1;
    q->ring[(q->head + q->count) % q->cap] = mp_frame_ref(f);
    q->count++;
    q->bytes += mp_frame_size(f);
    return 0;
}

int mp_outq_iov(const mp_outq *q, struct iovec *iov, int max)
{
    int n = 0;
    for (uint32_t i = 0; i < q->count && n < max; i++, n++) {
        const mp_frame *f = slot(q, i);
        size_t skip = i == 0 ? q->head_off : 0;
        iov[n].iov_base = (void *)(mp_frame_bytes(f) + skip);
        iov[n].iov_len = mp_frame_size(f) - skip;
    }
    return n;
}

void mp_outq_consume(mp_outq *q, size_t n, void (*done)(const mp_frame *f))
{
    q->bytes -= n;
    while (n > 0 && q->count > 0) {
        mp_frame *f = q->ring[q->head];
        size_t left = mp_frame_size(f) - q->head_off;
        if (n < left) {
            q->head_off += (uint32_t)n;
            return;
        }
        n -= left;
        q->head_off = 0;
        if (done)
            done(f);
        mp_frame_unref(f);
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
    if (q->count == 0)
        release_heap_ring(q);
}

uint32_t mp_outq_drop_unstarted(mp_outq *q)
{
    return mp_outq_drop_uncommitted(q, 0);
}

uint32_t mp_outq_drop_uncommitted(mp_outq *q, size_t committed)
{
    uint32_t keep = 0, messages = 0;
    for (size_t seen = 0; keep < q->count && (seen < committed || (keep == 0 && q->head_off > 0)); keep++)
        seen += mp_frame_size(slot(q, keep)) - (keep == 0 ? q->head_off : 0);
    for (uint32_t i = keep; i < q->count; i++) {
        mp_frame *f = slot(q, i);
        messages += f->published > 0;
        q->bytes -= mp_frame_size(f);
        mp_frame_unref(f);
    }
    q->count = keep;
    if (q->count == 0)
        release_heap_ring(q);
    return messages;
}
