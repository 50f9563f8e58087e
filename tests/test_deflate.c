/* Unit tests for deflate.c: the answer to permessage-deflate offers, the
 * compressed form of a frame (made once, cached on it, RSV1, inflates back),
 * and inflating client messages within a bound. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "deflate.h"
#include "frame.h"
#include "server.h"

mp_server mp;

static const char *answer(const char *offer)
{
    static char resp[128];
    return mp_deflate_negotiate(offer, resp, sizeof resp) ? resp : NULL;
}

#define BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

static int answers(const char *offer, const char *want)
{
    const char *got = answer(offer);
    return want ? got && strcmp(got, want) == 0 : got == NULL;
}

static void test_negotiate(void)
{
    CHECK(answers(NULL, NULL));
    CHECK(answers("", NULL));
    CHECK(answers("permessage-deflate", BASE));
    CHECK(answers("  Permessage-Deflate  ", BASE));
    CHECK(answers("permessage-deflate; client_max_window_bits", BASE));
    CHECK(answers("permessage-deflate;client_max_window_bits=8", BASE));
    CHECK(answers("permessage-deflate; client_max_window_bits=\"15\"", BASE));
    CHECK(answers("permessage-deflate; server_no_context_takeover; client_no_context_takeover", BASE));
    CHECK(answers("permessage-deflate; server_max_window_bits=15", BASE "; server_max_window_bits=15"));
    CHECK(answers("permessage-deflate;", BASE));
    /* declined offers */
    CHECK(answers("permessage-deflate; server_max_window_bits=14", NULL));
    CHECK(answers("permessage-deflate; server_max_window_bits", NULL));
    CHECK(answers("permessage-deflate; client_max_window_bits=16", NULL));
    CHECK(answers("permessage-deflate; client_max_window_bits=07", NULL));
    CHECK(answers("permessage-deflate; client_max_window_bits=", NULL));
    CHECK(answers("permessage-deflate; server_no_context_takeover=1", NULL));
    CHECK(answers("permessage-deflate; client_max_window_bits; client_max_window_bits", NULL));
    CHECK(answers("permessage-deflate; mystery", NULL));
    CHECK(answers("permessage-deflate; ;", NULL));
    CHECK(answers("x-webkit-deflate-frame", NULL));
    CHECK(answers("permessage-deflatex", NULL));
    /* the first offer we can honour wins */
    CHECK(answers("permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits", BASE));
    CHECK(answers("foo; bar=1, permessage-deflate", BASE));
    /* no room for the answer: declined rather than cut */
    char small[16];
    CHECK(mp_deflate_negotiate("permessage-deflate", small, sizeof small) == 0);
}

static mp_frame *text_frame(size_t len)
{
    char *s = malloc(len);
    for (size_t i = 0; i < len; i++)
        s[i] = "{\"id\":12,\"name\":\"item\"},"[i % 24];
    mp_frame *f = mp_frame_ws(MP_WS_TEXT, s, len);
    free(s);
    return f;
}

static void test_compress_once_and_back(void)
{
    size_t sizes[] = {1, 125, 126, 1000, 70000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        mp_frame *f = text_frame(sizes[k]);
        f->published = 42.5;
        mp_frame *z = mp_deflate_frame(f, 6);
        CHECK(z != NULL);
        CHECK(mp_deflate_frame(f, 1) == z);          /* made once, shared */
        CHECK(f->deflated == z && z->refs == 1);
        CHECK(mp_frame_bytes(z)[0] == (0x80 | 0x40 | MP_WS_TEXT));   /* FIN, RSV1, text */
        CHECK(z->published == 42.5);
        size_t zlen, plen;
        const uint8_t *zp = mp_frame_ws_payload(z, &zlen);
        const uint8_t *pp = mp_frame_ws_payload(f, &plen);
        uint8_t *out = NULL;
        size_t olen = 0;
        CHECK(mp_inflate_message(zp, zlen, plen, &out, &olen) == MP_INFLATE_OK);
        CHECK(olen == plen && out && memcmp(out, pp, plen) == 0);
        free(out);
        if (plen > 1)
            CHECK(mp_inflate_message(zp, zlen, plen - 1, &out, &olen) == MP_INFLATE_TOO_BIG);
        mp_frame_unref(f);                            /* frees z with it (ASan checks) */
    }
}

static void test_inflate_bounds(void)
{
    /* A zip bomb: 1 MB of zeros compressed to about a kilobyte. */
    size_t big = 1 << 20;
    mp_frame *f = mp_frame_new(MP_WS_HEADER_MAX + big);
    memset(f->data + MP_WS_HEADER_MAX, 0, big);
    mp_frame_ws_seal(f, MP_WS_TEXT, big);
    mp_frame *z = mp_deflate_frame(f, 9);
    size_t zlen;
    const uint8_t *zp = mp_frame_ws_payload(z, &zlen);
    CHECK(zlen < 2048);
    uint8_t *out = NULL;
    size_t olen;
    CHECK(mp_inflate_message(zp, zlen, 65536, &out, &olen) == MP_INFLATE_TOO_BIG);
    CHECK(out == NULL);
    CHECK(mp_inflate_message(zp, zlen, big, &out, &olen) == MP_INFLATE_OK && olen == big);
    free(out);
    mp_frame_unref(f);
    /* Garbage, and data after a final block, are refused. */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(mp_inflate_message(junk, sizeof junk, 100, &out, &olen) == MP_INFLATE_BAD);
    static const uint8_t final_then_more[] = {0x03, 0x00, 0x41};   /* empty final block, then a byte */
    CHECK(mp_inflate_message(final_then_more, sizeof final_then_more, 100, &out, &olen) == MP_INFLATE_BAD);
    /* Empty message: an empty stored block is what a sender leaves. */
    static const uint8_t empty[] = {0x00};
    CHECK(mp_inflate_message(empty, sizeof empty, 100, &out, &olen) == MP_INFLATE_OK && olen == 0);
    free(out);
    mp_deflate_free_all();
}

int main(void)
{
    RUN(test_negotiate);
    RUN(test_compress_once_and_back);
    RUN(test_inflate_bounds);
    return check_report("test_deflate");
}
