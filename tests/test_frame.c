/* Unit tests for the pure pieces of the hot path: frames, their headers,
 * sharing by reference, and the outbound queue. */
#include <string.h>

#include "check.h"
#include "frame.h"
#include "outq.h"
#include "server.h"

mp_server mp;

static void test_headers(void)
{
    uint8_t h[MP_WS_HEADER_MAX];
    CHECK(mp_frame_ws_header(h, MP_WS_TEXT, 5) == 2 && h[0] == 0x81 && h[1] == 5);
    CHECK(mp_frame_ws_header(h, MP_WS_TEXT, 125) == 2 && h[1] == 125);
    CHECK(mp_frame_ws_header(h, MP_WS_TEXT, 126) == 4 && h[1] == 126 && h[2] == 0 && h[3] == 126);
    CHECK(mp_frame_ws_header(h, MP_WS_BINARY, 65535) == 4 && h[0] == 0x82 && h[2] == 0xff && h[3] == 0xff);
    CHECK(mp_frame_ws_header(h, MP_WS_TEXT, 65536) == 10 && h[1] == 127 && h[7] == 1 && h[8] == 0 && h[9] == 0);
}

static void test_seal_writes_header_before_payload(void)
{
    for (size_t len = 0; len < 70000; len += len < 200 ? 1 : 997) {
        mp_frame *f = mp_frame_new(MP_WS_HEADER_MAX + len);
        memset(f->data + MP_WS_HEADER_MAX, 'x', len);
        mp_frame_ws_seal(f, MP_WS_TEXT, len);
        uint8_t h[MP_WS_HEADER_MAX];
        size_t hl = mp_frame_ws_header(h, MP_WS_TEXT, len);
        CHECK(mp_frame_size(f) == hl + len);
        CHECK(memcmp(mp_frame_bytes(f), h, hl) == 0);
        mp_frame_unref(f);
    }
}

static void test_close_frame(void)
{
    mp_frame *f = mp_frame_ws_close(4001, "slow consumer");
    const uint8_t *b = mp_frame_bytes(f);
    CHECK(b[0] == 0x88 && b[1] == 15 && b[2] == 0x0f && b[3] == 0xa1);
    CHECK(memcmp(b + 4, "slow consumer", 13) == 0);
    mp_frame_unref(f);
    char long_reason[300];
    memset(long_reason, 'r', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';
    f = mp_frame_ws_close(1000, long_reason);
    CHECK(mp_frame_bytes(f)[1] == 125);   /* control frames carry at most 125 bytes */
    mp_frame_unref(f);
}

static void test_shared_frame_refcount(void)
{
    mp_frame *f = mp_frame_ws(MP_WS_TEXT, "hello", 5);
    mp_outq qs[100];
    for (int i = 0; i < 100; i++) {
        mp_outq_init(&qs[i]);
        CHECK(mp_outq_push(&qs[i], f) == 0);
    }
    CHECK(f->refs == 101);
    mp_frame_unref(f);                    /* the publisher lets go */
    CHECK(f->refs == 100);
    for (int i = 0; i < 99; i++)
        mp_outq_clear(&qs[i]);
    CHECK(f->refs == 1);
    CHECK(qs[99].bytes == 7);
    mp_outq_consume(&qs[99], 7, NULL);          /* written: the last reference goes */
    CHECK(mp_outq_empty(&qs[99]));
}

static void test_outq_partial_writes_and_growth(void)
{
    mp_outq q;
    mp_outq_init(&q);
    mp_frame *frames[50];
    size_t total = 0;
    for (int i = 0; i < 50; i++) {
        char payload[64];
        int n = snprintf(payload, sizeof payload, "message %d", i);
        frames[i] = mp_frame_ws(MP_WS_TEXT, payload, (size_t)n);
        total += mp_frame_size(frames[i]);
        CHECK(mp_outq_push(&q, frames[i]) == 0);
    }
    CHECK(q.count == 50 && q.bytes == total && q.ring != q.inline_slots);
    /* Drain in odd-sized steps, checking the iovecs always describe exactly
     * the unsent bytes in order. */
    uint8_t expect[4096], got[4096];
    size_t elen = 0, glen = 0;
    for (int i = 0; i < 50; i++) {
        memcpy(expect + elen, mp_frame_bytes(frames[i]), mp_frame_size(frames[i]));
        elen += mp_frame_size(frames[i]);
    }
    while (!mp_outq_empty(&q)) {
        struct iovec iov[8];
        int n = mp_outq_iov(&q, iov, 8);
        size_t step = 7;
        size_t took = 0;
        for (int i = 0; i < n && took < step; i++) {
            size_t k = iov[i].iov_len < step - took ? iov[i].iov_len : step - took;
            memcpy(got + glen, iov[i].iov_base, k);
            glen += k;
            took += k;
        }
        mp_outq_consume(&q, took, NULL);
    }
    CHECK(glen == elen && memcmp(got, expect, elen) == 0);
    CHECK(q.ring == q.inline_slots);      /* the heap ring went back */
    for (int i = 0; i < 50; i++) {
        CHECK(frames[i]->refs == 1);
        mp_frame_unref(frames[i]);
    }
}

static void test_drop_unstarted_keeps_partial_head(void)
{
    mp_outq q;
    mp_outq_init(&q);
    mp_frame *a = mp_frame_ws(MP_WS_TEXT, "aaaa", 4), *b = mp_frame_ws(MP_WS_TEXT, "bbbb", 4);
    mp_outq_push(&q, a);
    mp_outq_push(&q, b);
    mp_outq_push(&q, b);
    mp_outq_consume(&q, 3, NULL);               /* head partly written */
    mp_outq_drop_unstarted(&q);
    CHECK(q.count == 1 && q.bytes == 3 && b->refs == 1);
    mp_outq_clear(&q);
    CHECK(a->refs == 1);
    mp_outq_push(&q, a);
    mp_outq_drop_unstarted(&q);           /* nothing started: all dropped */
    CHECK(q.count == 0 && q.bytes == 0 && a->refs == 1);
    mp_frame_unref(a);
    mp_frame_unref(b);
}

int main(void)
{
    RUN(test_headers);
    RUN(test_seal_writes_header_before_payload);
    RUN(test_close_frame);
    RUN(test_shared_frame_refcount);
    RUN(test_outq_partial_writes_and_growth);
    RUN(test_drop_unstarted_keeps_partial_head);
    return check_report("test_frame");
}
