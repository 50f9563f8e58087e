/* deflate.c — see deflate.h. */
#include "deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

mp_deflate_stats mp_deflate_stats_now;

/* ---- negotiation -------------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t n;
} span;

static span trim(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return (span){p, (size_t)(end - p)};
}

static int span_is(span s, const char *word)
{
    return s.n == strlen(word) && strncasecmp(s.p, word, s.n) == 0;
}

/* A window-bits value: 8..15, as a token or a quoted string (RFC 7692 7.1.2). */
static int window_bits(span v)
{
    if (v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"')
        v = (span){v.p + 1, v.n - 2};
    if (v.n < 1 || v.n > 2 || v.p[0] < '1' || v.p[0] > '9' || (v.n == 2 && (v.p[1] < '0' || v.p[1] > '9')))
        return -1;
    int n = v.n == 1 ? v.p[0] - '0' : (v.p[0] - '0') * 10 + v.p[1] - '0';
    return n >= 8 && n <= 15 ? n : -1;
}

enum { P_SNCT = 1, P_CNCT = 2, P_SMWB = 4, P_CMWB = 8 };

/* One offer's parameters (between the first ';' and the element's end).
 * Returns the P_* set, or -1 if the offer is one we must decline: an unknown
 * or repeated parameter, a bad value, or a server window under 15 bits (our
 * shared frames are made once, with the full window). */
static int offer_params(const char *p, const char *end)
{
    int seen = 0;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        span name = trim(p, eq ? eq : stop);
        span value = eq ? trim(eq + 1, stop) : (span){NULL, 0};
        int bit = span_is(name, "server_no_context_takeover") ? P_SNCT
                : span_is(name, "client_no_context_takeover") ? P_CNCT
                : span_is(name, "server_max_window_bits")     ? P_SMWB
                : span_is(name, "client_max_window_bits")     ? P_CMWB
                                                              : 0;
        if (name.n == 0 && !eq && !semi && stop == end)
            break;                              /* trailing ';' */
        if (!bit || (seen & bit))
            return -1;
        if ((bit == P_SNCT || bit == P_CNCT) && eq)
            return -1;
        if (bit == P_SMWB && window_bits(value) != 15)
            return -1;
        if (bit == P_CMWB && eq && window_bits(value) < 0)
            return -1;
        seen |= bit;
        p = semi ? semi + 1 : end;
    }
    return seen;
}

int mp_deflate_negotiate(const char *offer, char *resp, size_t resplen)
{
    if (!offer)
        return 0;
    const char *end = offer + strlen(offer);
    for (const char *p = offer; p < end;) {
        /* Extension elements are split by ','; no parameter value we accept
         * holds one (a quoted "15" does not). */
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *semi = memchr(p, ';', (size_t)(stop - p));
        span name = trim(p, semi ? semi : stop);
        if (span_is(name, "permessage-deflate")) {
            int params = semi ? offer_params(semi + 1, stop) : 0;
            if (params >= 0) {
                /* no_context_takeover both ways (a server may add them:
                 * RFC 7692 7.1.1.1 and 7.1.1.2); an offered server window of
                 * 15 is answered. client_max_window_bits is left out: we
                 * inflate with the full window, whatever the client uses. */
                int n = snprintf(resp, resplen, "permessage-deflate; server_no_context_takeover; "
                                 "client_no_context_takeover%s",
                                 params & P_SMWB ? "; server_max_window_bits=15" : "");
                return n > 0 && (size_t)n < resplen;
            }
        }
        p = comma ? comma + 1 : end;
    }
    return 0;
}

/* ---- compressing server frames ------------------------------------------ */

static z_stream def;
static int def_level;               /* 0: def not initialised */

static z_stream *deflater(int level)
{
    if (level < 1 || level > 9)
        level = MP_DEFLATE_LEVEL;
    if (def_level == level)
        return deflateReset(&def) == Z_OK ? &def : NULL;
    if (def_level)
        deflateEnd(&def);
    def_level = 0;
    memset(&def, 0, sizeof def);
    /* Raw deflate (-15): RFC 7692 frames carry no zlib header or trailer. */
    if (deflateInit2(&def, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    def_level = level;
    return &def;
}

/* The deflated payload of one message into a new frame, sealed with RSV1. */
static mp_frame *compress_frame(const mp_frame *f, int level)
{
    size_t plen;
    const uint8_t *payload = mp_frame_ws_payload(f, &plen);
    z_stream *z = deflater(level);
    if (!z)
        return NULL;
    /* deflateBound covers a finished stream; a sync flush adds an empty
     * stored block (5 bytes) at most, and some slack costs nothing. */
    size_t room = deflateBound(z, (uLong)plen) + 16;
    mp_frame *out = mp_frame_new(MP_WS_HEADER_MAX + room);
    if (!out)
        return NULL;
    z->next_in = (Bytef *)payload;
    z->avail_in = (uInt)plen;
    z->next_out = out->data + MP_WS_HEADER_MAX;
    z->avail_out = (uInt)room;
    int rc = deflate(z, Z_SYNC_FLUSH);
    size_t clen = room - z->avail_out;
    /* RFC 7692 7.2.1: a sync flush ends with 00 00 ff ff, which is dropped. */
    if (rc != Z_OK || z->avail_in != 0 || clen < 4 ||
        memcmp(out->data + MP_WS_HEADER_MAX + clen - 4, "\x00\x00\xff\xff", 4) != 0) {
        mp_frame_unref(out);
        return NULL;
    }
    clen -= 4;
    mp_frame_ws_seal(out, mp_frame_bytes(f)[0] & 0x0f, clen);
    out->data[out->off] |= 0x40;       /* RSV1: this message is compressed */
    out->published = f->published;
    mp_deflate_stats_now.frames++;
    mp_deflate_stats_now.bytes_in += plen;
    mp_deflate_stats_now.bytes_out += clen;
    return out;
}

mp_frame *mp_deflate_frame(mp_frame *f, int level)
{
    if (!f->deflated)
        f->deflated = compress_frame(f, level);
    return f->deflated;
}

/* ---- inflating client messages ------------------------------------------ */

static z_stream inf;
static int inf_ready;

/* Inflates from z into buf[*have .. cap). Returns the zlib code. */
static int inflate_some(z_stream *z, uint8_t *buf, size_t cap, size_t *have)
{
    z->next_out = buf + *have;
    z->avail_out = (uInt)(cap - *have);
    int rc = inflate(z, Z_SYNC_FLUSH);
    *have = cap - z->avail_out;
    return rc;
}

int mp_inflate_message(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (!inf_ready) {
        memset(&inf, 0, sizeof inf);
        if (inflateInit2(&inf, -15) != Z_OK)
            return MP_INFLATE_NOMEM;
        inf_ready = 1;
    } else if (inflateReset(&inf) != Z_OK) {
        return MP_INFLATE_NOMEM;
    }
    /* Room grows by doubling up to max + 1: one byte past max is how an
     * oversized message is told apart from one that is exactly max. */
    size_t cap = len * 4 + 64 < max + 1 ? len * 4 + 64 : max + 1, have = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return MP_INFLATE_NOMEM;
    int result = MP_INFLATE_OK, ended = 0;
    for (int part = 0; part < 2 && result == MP_INFLATE_OK && !ended; part++) {
        /* The message, then the 00 00 ff ff its sender dropped (7.2.2). */
        inf.next_in = (Bytef *)(part == 0 ? in : tail);
        inf.avail_in = (uInt)(part == 0 ? len : sizeof tail);
        while (result == MP_INFLATE_OK) {
            int rc = inflate_some(&inf, buf, cap, &have);
            if (have > max) {
                result = MP_INFLATE_TOO_BIG;
            } else if (rc == Z_STREAM_END) {
                ended = 1;          /* a final block: the tail is not needed */
                break;
            } else if ((rc == Z_BUF_ERROR && inf.avail_in == 0) ||
                       (rc == Z_OK && inf.avail_in == 0 && inf.avail_out > 0)) {
                break;                                  /* all input taken */
            } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
                result = MP_INFLATE_BAD;
            } else if (have == cap) {
                size_t grown = cap * 2 < max + 1 ? cap * 2 : max + 1;
                uint8_t *nb = realloc(buf, grown);
                if (!nb)
                    result = MP_INFLATE_NOMEM;
                else
                    buf = nb, cap = grown;
            }
        }
        if (inf.avail_in != 0 && result == MP_INFLATE_OK)
            result = MP_INFLATE_BAD;        /* data after a final block */
    }
    if (result != MP_INFLATE_OK) {
        free(buf);
        return result;
    }
    mp_deflate_stats_now.inflated++;
    *out = buf;
    *outlen = have;
    return MP_INFLATE_OK;
}

void mp_deflate_free_all(void)
{
    if (def_level)
        deflateEnd(&def);
    def_level = 0;
    if (inf_ready)
        inflateEnd(&inf);
    inf_ready = 0;
}
