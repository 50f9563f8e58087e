/* envelope.c — see envelope.h. The prefix is printed once per message into
 * a stack buffer; the frame is allocated once with room for the WebSocket
 * header in front, so the payload is never copied again (mp_frame_ws_seal). */
#include "envelope.h"

#include <stdio.h>
#include <string.h>

#define NAME_MAX_LEN 128
#define PREFIX_MAX (NAME_MAX_LEN * 2 + 96)

int mp_envelope_safe(const char *s, size_t len)
{
    if (!s || len == 0 || len > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || c == '.' || c == ':' || c == '@';
        if (!ok)
            return 0;
    }
    return 1;
}

/* Prints everything before data; returns its length, or 0 if a name is unsafe. */
static size_t print_prefix(char out[PREFIX_MAX], const char *channel, uint64_t seq, const char *id)
{
    if (!mp_envelope_safe(channel, strlen(channel)) || !mp_envelope_safe(id, strlen(id)))
        return 0;
    int n = snprintf(out, PREFIX_MAX, "{\"type\":\"message\",\"channel\":\"%s\",\"seq\":%llu,\"id\":\"%s\",\"data\":",
                     channel, (unsigned long long)seq, id);
    return n > 0 && n < PREFIX_MAX ? (size_t)n : 0;
}

mp_frame *mp_envelope_frame(const char *channel, uint64_t seq, const char *id,
                            const char *data, size_t data_len, uint64_t published_ms)
{
    char prefix[PREFIX_MAX];
    size_t n = print_prefix(prefix, channel, seq, id);
    if (!n)
        return NULL;
    size_t payload = n + data_len + 1;
    mp_frame *f = mp_frame_new(MP_WS_HEADER_MAX + payload);
    if (!f)
        return NULL;
    uint8_t *p = f->data + MP_WS_HEADER_MAX;
    memcpy(p, prefix, n);
    memcpy(p + n, data, data_len);
    p[n + data_len] = '}';
    mp_frame_ws_seal(f, MP_WS_TEXT, payload);
    f->published = (double)published_ms / 1000.0;
    return f;
}

int mp_envelope_split(const char *payload, size_t len, const char *channel, uint64_t seq,
                      const char *id, const char **data, size_t *data_len)
{
    char prefix[PREFIX_MAX];
    size_t n = print_prefix(prefix, channel, seq, id);
    if (!n || len < n + 2 || memcmp(payload, prefix, n) != 0 || payload[len - 1] != '}')
        return -1;
    *data = payload + n;
    *data_len = len - n - 1;
    return 0;
}
