/* frame.c — see frame.h. */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

mp_frame *mp_frame_new(size_t cap)
{
    if (cap > UINT32_MAX)
        return NULL;
    mp_frame *f = malloc(sizeof *f + cap);
    if (!f)
        return NULL;
    f->refs = 1;
    f->published = 0;
    f->deflated = NULL;
    f->off = 0;
    f->len = 0;
    f->cap = (uint32_t)cap;
    return f;
}

mp_frame *mp_frame_copy(const void *data, size_t len)
{
    mp_frame *f = mp_frame_new(len);
    if (!f)
        return NULL;
    memcpy(f->data, data, len);
    f->len = (uint32_t)len;
    return f;
}

void mp_frame_unref(mp_frame *f)
{
    if (f && --f->refs == 0) {
        mp_frame_unref(f->deflated);   /* never has one of its own: one level deep */
        free(f);
    }
}

size_t mp_frame_ws_header(uint8_t *out, int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

mp_frame *mp_frame_ws(int opcode, const void *payload, size_t len)
{
    mp_frame *f = mp_frame_new(MP_WS_HEADER_MAX + len);
    if (!f)
        return NULL;
    size_t h = mp_frame_ws_header(f->data, opcode, len);
    if (len)
        memcpy(f->data + h, payload, len);
    f->len = (uint32_t)(h + len);
    return f;
}

mp_frame *mp_frame_ws_close(uint16_t code, const char *reason)
{
    uint8_t payload[125];
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > sizeof payload - 2)
        rlen = sizeof payload - 2;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rlen)
        memcpy(payload + 2, reason, rlen);
    return mp_frame_ws(MP_WS_CLOSE, payload, rlen + 2);
}

void mp_frame_ws_seal(mp_frame *f, int opcode, size_t payload_len)
{
    uint8_t hdr[MP_WS_HEADER_MAX];
    size_t h = mp_frame_ws_header(hdr, opcode, payload_len);
    f->off = (uint32_t)(MP_WS_HEADER_MAX - h);
    memcpy(f->data + f->off, hdr, h);
    f->len = (uint32_t)(MP_WS_HEADER_MAX + payload_len);
}
